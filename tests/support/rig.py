"""A real enforcer in-process for profile and detection unit tests, with two boundaries faked:

- Docker: the inventory is fed containers the way the engine would report them (no engine
  is contacted: the Docker URL points at a socket that does not exist);
- the kernel: RecordingKernelHooks keep what would have gone into the BPF maps, and events
  are put on the daemon's event queue as the sensors' hub would.

Everything else is real: the daemon (its composition root, with seams for the fakes), its SQLite store, its unix socket, the profile book,
the alert book and the detector (tests/unit/test_profiles_*.py, tests/unit/test_detect_*.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from pathlib import Path
from typing import Any

from console.client import EnforcerClient
from enforcer.config import Settings
from enforcer.daemon import Daemon, Seams
from enforcer.detect import AlertBook
from enforcer.feeds.models import FeedHit
from enforcer.inventory import InventoryChange
from enforcer.models import ComposeTopology, Container, NetworkAttachment, PortBinding, ServiceDecl
from enforcer.profiles import ProfileBook, RecordingKernelHooks

_cgroups = itertools.count(5000)


class FakeFeeds:
    """match_* against fixed values; record_hit keeps what the detector reported."""

    def __init__(self) -> None:
        self.ips: dict[str, str] = {}
        self.domains: dict[str, str] = {}
        self.hashes: dict[str, str] = {}
        self.hits: list[tuple[FeedHit, str, str, int | None]] = []

    def _hit(self, table: dict[str, str], value: str, kind: str) -> FeedHit | None:
        feed = table.get(value)
        return FeedHit(feed=feed, indicator=value, type=kind, matched=value) if feed else None

    def match_ip(self, ip: str) -> FeedHit | None:
        return self._hit(self.ips, ip, "ip")

    def match_domain(self, name: str) -> FeedHit | None:
        return self._hit(self.domains, name, "domain")

    def match_hash(self, hexdigest: str) -> FeedHit | None:
        return self._hit(self.hashes, hexdigest, "sha256")

    def record_hit(self, hit: FeedHit, container_name: str, container_id: str, alert_id: int | None) -> None:
        self.hits.append((hit, container_name, container_id, alert_id))


class FakeEnforcement:
    """respond() answers a fixed action and remembers what it was asked."""

    def __init__(self, action: str | None = "blocked") -> None:
        self.action = action
        self.calls: list[tuple[str, Any, int]] = []

    async def respond(self, container: Container, event: Any, alert: Any) -> str | None:
        self.calls.append((container.name, event, alert.id))
        return self.action


class Rig:
    def __init__(self, workdir: Path, **settings: Any) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.settings_args = {
            "socket": str(workdir / "enforcer.sock"), "db": str(workdir / "stockade.db"),
            "sensors": False, "docker_url": f"unix://{workdir}/no-docker.sock", "learn_seconds": 3600.0,
            "host": "test-host", **settings,
        }
        self.hooks = RecordingKernelHooks()
        self.feeds = FakeFeeds()
        self.enforcement: FakeEnforcement | None = None
        self.enforcer: Daemon | None = None
        self.client: EnforcerClient | None = None
        self.containers: list[Container] = []
        self.topologies: dict[str, ComposeTopology] = {}
        self.image_configs: dict[str, dict[str, Any]] = {}

    @property
    def e(self) -> Daemon:
        assert self.enforcer is not None
        return self.enforcer

    @property
    def profiles(self) -> ProfileBook:
        return self.e.profiles

    @property
    def alerts(self) -> AlertBook:
        return self.e.alerts

    async def start(self) -> "Rig":
        settings = Settings(**self.settings_args)
        e = Daemon(settings, Seams(feeds=self.feeds, responder=self.enforcement, kernel_hooks=self.hooks,
                                   enforcement=False))
        self.enforcer = e
        # What Docker would have told the inventory before (and across) a restart.
        e.inventory.topologies.update(self.topologies)
        e.inventory._image_configs.update(self.image_configs)
        await e.start()
        for c in self.containers:
            self._inject(c, "added")
        self.client = EnforcerClient(settings.socket)
        await self.client.connect()
        return self

    async def stop(self) -> None:
        if self.client:
            await self.client.close()
            self.client = None
        if self.enforcer:
            await self.enforcer.stop()
            self.enforcer = None

    async def crash(self) -> None:
        """Stop without the clean-shutdown flush: what kill -9 leaves behind is the database
        as last committed by the write-behind loop."""
        e = self.e
        await asyncio.sleep(1.0)  # count updates: 0.25 s, then the write-behind interval of 0.2 s
        await self.stop_writes()
        e.store.db._queue.clear()  # whatever was not committed by now is lost
        e.store.db.enqueue = lambda *args, **kwargs: None  # nor does a dead process write at its stop
        await self.stop()

    async def stop_writes(self) -> None:
        """From now on nothing is committed, as if the process had died (a batch already
        handed to SQLite may still commit, as it may on a real kill -9)."""
        db = self.e.store.db
        if db._flusher is not None and not db._flusher.done():
            db._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await db._flusher
        db._flusher = None  # and the stop has no final flush to wait for

    async def restart(self) -> "Rig":
        await self.stop()
        return await self.start()

    # -- the fake Docker side -----------------------------------------------------------
    def compose(self, app: str, services: dict[str, dict[str, Any]], networks: list[str] | None = None) -> None:
        topo = ComposeTopology(project=app, files=[f"/srv/{app}/docker-compose.yml"], networks=networks or [])
        for name, decl in services.items():
            topo.services[name] = ServiceDecl.from_dict({"name": name, **decl})
        self.topologies[app] = topo
        if self.enforcer:
            self.e.inventory.topologies[app] = topo

    def image(self, image_id: str, config: dict[str, Any]) -> None:
        self.image_configs[image_id] = config
        if self.enforcer:
            self.e.inventory._image_configs[image_id] = config

    def container(self, name: str, app: str, service: str, image_id: str = "sha256:img1", ip: str = "",
                  ports: list[tuple[int, int | None]] | None = None, lone: bool = False) -> Container:
        labels = {} if lone else {"com.docker.compose.project": app, "com.docker.compose.service": service}
        c = Container(
            id=(name.encode().hex() + "0" * 64)[:64], name=name, app=app, service=service, image=f"local/{service}",
            image_id=image_id, image_digest=image_id, state="running", pid=os.getpid(), cgroup_id=next(_cgroups),
            networks=[NetworkAttachment(network=f"{app}_default", ip=ip)] if ip else [],
            ports=[PortBinding(port=p, host_port=h) for p, h in (ports or [])], labels=labels,
        )
        self.containers.append(c)
        if self.enforcer:
            self._inject(c, "added")
        return c

    def remove(self, c: Container) -> None:
        self.containers.remove(c)
        inv = self.e.inventory
        inv.containers.pop(c.id, None)
        inv._unindex(c)
        inv._notify(InventoryChange("removed", c))

    def _inject(self, c: Container, change: str) -> None:
        inv = self.e.inventory
        inv.containers[c.id] = c
        inv._index(c)
        inv._notify(InventoryChange(change, c))

    # -- events and ops -----------------------------------------------------------------
    async def feed(self, *events: Any) -> None:
        """Queue events as the hub would, and wait until the detector has decided them all."""
        for ev in events:
            self.e.events.put_nowait(ev)
        await self.settle()

    async def settle(self) -> None:
        for _ in range(1000):
            await asyncio.sleep(0)
            if self.e.events.empty():
                break
        await asyncio.sleep(0.01)

    async def call(self, op: str, **args: Any) -> Any:
        assert self.client is not None
        return await self.client.call(op, **args)

    async def alerts_of(self, container: Container, **filters: Any) -> list[dict[str, Any]]:
        return await self.call("alerts", container=container.name, **filters)
