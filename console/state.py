"""What the console knows about the enforcer: plain data, no Textual, no socket.

The session fills it from list ops and events; views read it when they repaint. Each
change marks a domain dirty ("containers", "alerts", ...) so that a burst of events costs
one repaint per view, not one per event. Alerts are held newest-first by id with a cap,
so an hour of a steady stream cannot grow the console without bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

MAX_INCIDENTS = 10_000  # incidents kept in memory (~4 KB each); the oldest go first; the enforcer keeps all
MAX_AUDIT = 2_000
MAX_FEED_HITS = 1_000

DOMAINS = ("hello", "status", "apps", "containers", "alerts", "feeds", "audit", "connection")


@dataclass(slots=True)
class Connection:
    """Where the link to the enforcer stands, for the header."""

    state: str = "connecting"  # connecting | connected | down
    message: str = ""
    attempts: int = 0
    generation: int = 0  # how many times a connection was made (1 = first)
    since: float = field(default_factory=time.time)
    # When the link was lost (or first failed), kept through the reconnect attempts; None while up.
    lost_since: float | None = None
    retry_delay: float = 0.0  # seconds until the next attempt, as the session chose them


@dataclass
class ConsoleState:
    hello: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    incidents: dict[int, dict[str, Any]] = field(default_factory=dict)
    feeds: list[dict[str, Any]] = field(default_factory=list)
    feed_hits: list[dict[str, Any]] = field(default_factory=list)
    audit: dict[int, dict[str, Any]] = field(default_factory=dict)
    connection: Connection = field(default_factory=Connection)
    # Per-op load errors (e.g. "unavailable: docker down").
    errors: dict[str, str] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    # Incident ids changed since the alerts view last repainted (it upserts only those).
    changed_incidents: set[int] = field(default_factory=set)
    incidents_reloaded: bool = False
    events_seen: int = 0
    overflows: int = 0
    clock: Any = time.time  # the app's clock (fixed in snapshot tests)

    # A single-host console's state answers the fleet's questions too (console/fleet.py):
    # one host, index None, whose row keys are the enforcer's own ids.
    multi = False

    def per_host(self) -> list[tuple[None, "ConsoleState"]]:
        return [(None, self)]

    def host_state(self, index: int | None) -> "ConsoleState":
        return self

    def label(self, index: int | None) -> str:
        return ""

    def count(self, what: str) -> int:
        return len(getattr(self, what))

    # -- whole lists (after connect, reconnect or an overflow) ------------------------------
    def set_hello(self, hello: dict[str, Any]) -> None:
        self.hello = dict(hello)
        self.dirty.add("hello")

    def set_status(self, status: dict[str, Any]) -> None:
        self.status = dict(status)
        self.dirty.add("status")

    def set_containers(self, rows: list[dict[str, Any]]) -> None:
        now = self.clock()
        self.containers = {c["id"]: c for c in rows if isinstance(c, dict) and c.get("id")}
        for c in self.containers.values():
            c["_received"] = now
        self.dirty.add("containers")
        self.dirty.add("apps")

    def set_apps(self, rows: list[dict[str, Any]]) -> None:
        self.apps = {a["name"]: a for a in rows if isinstance(a, dict) and "name" in a}
        self.dirty.add("apps")

    def set_incidents(self, rows: list[dict[str, Any]]) -> None:
        self.incidents = {}
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get("id"), int):
                self.incidents[row["id"]] = row
        self._trim_incidents()
        self.incidents_reloaded = True
        self.changed_incidents.clear()
        self.dirty.update(("alerts", "apps", "containers"))

    def set_feeds(self, feeds: list[dict[str, Any]]) -> None:
        self.feeds = [f for f in feeds if isinstance(f, dict)]
        self.dirty.add("feeds")

    def set_feed_hits(self, hits: list[dict[str, Any]]) -> None:
        self.feed_hits = [h for h in hits if isinstance(h, dict)][:MAX_FEED_HITS]
        self.dirty.add("feeds")

    def set_audit(self, rows: list[dict[str, Any]]) -> None:
        self.audit = {e["id"]: e for e in rows if isinstance(e, dict) and isinstance(e.get("id"), int)}
        self._trim_audit()
        self.dirty.add("audit")

    # -- events -------------------------------------------------------------------------
    def apply_event(self, event: dict[str, Any]) -> None:
        """Fold one subscription event in. Unknown topics are ignored (the protocol is additive)."""
        self.events_seen += 1
        topic = event.get("event")
        data = event.get("data")
        if topic == "alert" and isinstance(data, dict) and isinstance(data.get("id"), int):
            if data["id"] not in self.incidents:
                self._count_new_incident(data)
            self.incidents[data["id"]] = data
            self.changed_incidents.add(data["id"])
            if len(self.incidents) > MAX_INCIDENTS + 500:  # trim in steps, not per event
                self._trim_incidents()
            self.dirty.update(("alerts", "apps", "containers"))
        elif topic == "inventory" and isinstance(data, dict) and isinstance(data.get("container"), dict):
            c = data["container"]
            if not c.get("id"):
                return
            if data.get("change") == "removed":
                self.containers.pop(c["id"], None)
            else:
                c["_received"] = self.clock()
                self.containers[c["id"]] = c
            self.dirty.update(("containers", "apps"))
        elif topic == "feed" and isinstance(data, dict):
            if isinstance(data.get("hit"), dict):
                self.feed_hits.insert(0, data["hit"])
                del self.feed_hits[MAX_FEED_HITS:]
            elif data.get("name"):
                self.feeds = [f for f in self.feeds if f.get("name") != data["name"]] + [data]
                self.feeds.sort(key=lambda f: str(f.get("name")))
            self.dirty.add("feeds")
        elif topic == "audit" and isinstance(data, dict) and isinstance(data.get("id"), int):
            self.audit[data["id"]] = data
            self._trim_audit()
            self.dirty.add("audit")
        elif topic == "stats" and isinstance(data, dict):
            self.status = {**self.status, "sensors": data.get("sensors", self.status.get("sensors", []))}
            self.dirty.add("status")
        elif topic == "overflow":
            self.overflows += 1

    def _count_new_incident(self, incident: dict[str, Any]) -> None:
        """The enforcer's per-container and per-app counts came with the last snapshot: a new
        incident adds one to each, so the columns stay live between snapshots."""
        c = self.containers.get(str(incident.get("container_id") or ""))
        if c is not None and isinstance(c.get("alerts"), int) and not isinstance(c.get("alerts"), bool):
            c["alerts"] += 1
        app = self.apps.get(str(incident.get("app") or ""))
        if app is not None and isinstance(app.get("alerts"), int) and not isinstance(app.get("alerts"), bool):
            app["alerts"] += 1

    def take_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def set_connection(self, state: str, message: str = "") -> None:
        conn = self.connection
        if state == "connected" and conn.state != "connected":
            conn.generation += 1
            conn.attempts = 0
        if state != conn.state:
            conn.since = time.time()
        if state == "connected":
            conn.lost_since = None
        elif state == "down" and conn.lost_since is None:
            conn.lost_since = time.time()
        if state == "down":
            conn.attempts += 1
        conn.state = state
        conn.message = message
        self.dirty.add("connection")

    # -- derived ------------------------------------------------------------------------
    def alert_counts(self) -> dict[str, int]:
        """By severity: the enforcer's totals when status has them, else what is loaded here."""
        counts = self.status.get("alerts")
        if isinstance(counts, dict) and counts:
            return {k: int(v) for k, v in counts.items() if isinstance(v, (int, float))}
        out: dict[str, int] = {}
        for incident in self.incidents.values():
            sev = str(incident.get("severity", ""))
            out[sev] = out.get(sev, 0) + 1
        return out

    def incidents_by_container(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for incident in self.incidents.values():
            cid = str(incident.get("container_id") or "")
            out[cid] = out.get(cid, 0) + 1
        return out

    def container_alerts(self, c: dict[str, Any], loaded: dict[str, int]) -> int:
        """A container's incident count: the enforcer's own (`alerts` field) when it gives one."""
        value = c.get("alerts")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return loaded.get(c.get("id", ""), 0)

    @property
    def read_only_role(self) -> bool:
        return bool(self.hello) and self.hello.get("role") != "admin"

    def _trim_incidents(self) -> None:
        if len(self.incidents) > MAX_INCIDENTS:
            for old in sorted(self.incidents)[: len(self.incidents) - MAX_INCIDENTS]:
                del self.incidents[old]
                self.changed_incidents.add(old)  # the view removes it too

    def _trim_audit(self) -> None:
        if len(self.audit) > MAX_AUDIT:
            for old in sorted(self.audit)[: len(self.audit) - MAX_AUDIT]:
                del self.audit[old]
