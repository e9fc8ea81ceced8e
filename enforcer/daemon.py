"""The enforcer: one asyncio process per host that wires the layers together.

Data flows one way: Docker + kernel events -> inventory / sensors -> profiles and
detection -> alerts -> store and socket -> console. This module only builds the parts,
starts them in order, serves the inventory ops and stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from . import __version__
from .config import Settings
from .inventory import DockerSource, Inventory, InventoryChange
from .models import Container
from .server import OpError, Request, Server
from .server.peers import Peer
from .store import Store

log = logging.getLogger(__name__)


class Enforcer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = time.time()
        self.store = Store(settings.db)
        self.docker = DockerSource(settings.docker_url)
        self.inventory = Inventory(self.docker)
        self.server = Server(
            settings.socket,
            socket_group=settings.socket_group,
            admin_group=settings.admin_group,
            viewer_group=settings.viewer_group,
            auditor=self._audit,
        )
        # The one queue of typed sensor events (enforcer.sensors.events), consumed by the
        # detector. Bounded: when it is full the producer counts the event as lost.
        self.events: asyncio.Queue[Any] = asyncio.Queue(maxsize=100_000)
        # Components that add ops and state; each has start(), stop() and register_ops().
        self.components: list[Any] = []
        # The layers by name, so that one can call another through a small interface
        # (None until built; build_components sets them):
        self.sensors: Any = None  # sensors.hub.SensorHub: eBPF, watch maps, kernel allow-lists
        self.profiles: Any = None  # profiles: learned/seeded profiles, modes
        self.alerts: Any = None  # detect: AlertBook.raise_alert(...) -> Alert (folding, store, publish)
        self.detector: Any = None  # detect: consumes self.events
        self.feeds: Any = None  # feeds: match_ip / match_domain / match_hash -> FeedHit | None
        self.enforcement: Any = None  # enforce: kill, block, freeze, respond(...) in protect mode
        self.server.register("apps", self._op_apps)
        self.server.register("containers", self._op_containers)
        self.server.register("container", self._op_container)
        self.server.register("status", self._op_status)
        self.server.register("audit", self._op_audit)

    def add_component(self, component: Any) -> None:
        self.components.append(component)
        component.register_ops(self.server)

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        self.inventory.subscribe(self._on_inventory_change)
        await self.server.start()
        for component in self.components:
            await component.start()
        await self.inventory.start()
        if not await self.docker.ping():
            log.warning("docker: engine at %s does not answer (%s); waiting for it",
                        self.settings.docker_url, self.docker.last_error or "no answer")
        log.info("enforcer %s listening on %s, database %s", __version__, self.settings.socket, self.settings.db)

    async def stop(self) -> None:
        await self.inventory.stop()
        for component in reversed(self.components):
            try:
                await asyncio.wait_for(component.stop(), 10)
            except Exception:  # noqa: BLE001 - stop the rest regardless
                log.exception("stopping %s failed", type(component).__name__)
        await self.server.stop()
        await self.store.close()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.start()
            await stop.wait()
            log.info("enforcer stopping")
        finally:
            # Also after a failed start: an open database thread would keep the process alive.
            await self.stop()

    # -- inventory ----------------------------------------------------------------------
    def _on_inventory_change(self, change: InventoryChange) -> None:
        self.store.inventory.save_container(change.container, removed=change.change == "removed")
        self.server.publish("inventory", {"change": change.change, "container": self.describe(change.container)})

    def describe(self, c: Container) -> dict[str, Any]:
        """A container as clients see it: inventory data plus what components add (mode, profile)."""
        data = c.to_dict()
        for component in self.components:
            decorate = getattr(component, "describe_container", None)
            if decorate:
                data.update(decorate(c))
        return data

    def container_or_error(self, ref: Any) -> Container:
        if not isinstance(ref, str) or not ref:
            raise OpError("name a container (name, id or id prefix)", "bad_request")
        c = self.inventory.resolve(ref)
        if c is None:
            raise OpError(f"no container {ref[:128]!r} on this host", "not_found")
        return c

    # -- ops ----------------------------------------------------------------------------
    async def _op_apps(self, req: Request) -> list[dict[str, Any]]:
        settings = await self.store.inventory.app_settings()
        out = []
        for app in self.inventory.apps().values():
            data = app.to_dict()
            data["mode"] = settings.get(app.name, {}).get("mode", self.settings.default_mode)
            for component in self.components:
                decorate = getattr(component, "describe_app", None)
                if decorate:
                    data.update(decorate(app))
            out.append(data)
        return out

    async def _op_containers(self, req: Request) -> list[dict[str, Any]]:
        app = req.args.get("app")
        rows = []
        for c in sorted(self.inventory.containers.values(), key=lambda c: (c.app, c.service, c.name)):
            if app and c.app != app:
                continue
            c.pids = self.inventory.live_pids(c)
            rows.append(self.describe(c))
        return rows

    async def _op_container(self, req: Request) -> dict[str, Any]:
        c = self.container_or_error(req.args.get("target"))
        c.pids = self.inventory.live_pids(c)
        return self.describe(c)

    async def _op_status(self, req: Request) -> dict[str, Any]:
        now = time.time()
        status: dict[str, Any] = {
            "host": self.settings.host,
            "version": __version__,
            "started": self.started,
            "uptime": now - self.started,
            "docker": {"connected": self.docker.connected, "error": "" if self.docker.connected else self.docker.last_error},
            "containers": len(self.inventory.containers),
            "containers_watched": sum(1 for c in self.inventory.containers.values() if c.cgroup_id),
            "store": {"pending_writes": self.store.db.pending, "error": self.store.db.last_error,
                      "writing": not self.store.db.failing_since, "failing_since": self.store.db.failing_since,
                      "dropped_writes": self.store.db.dropped, "committed_writes": self.store.db.writes_committed},
            "socket": {"subscribers": self.server.subscriber_count, "events_dropped": self.server.events_dropped,
                       "requests": self.server.requests_served},
            "sensors": [],
        }
        for component in self.components:
            contribute = getattr(component, "status", None)
            if contribute:
                status.update(contribute())
        return status

    async def _op_audit(self, req: Request) -> list[dict[str, Any]]:
        limit = _int_arg(req.args, "limit", 500, 1, 10_000)
        since = _int_arg(req.args, "since", 0, 0, 2**62)
        return [e.to_dict() for e in await self.store.audit.recent(limit=limit, since_id=since)]

    async def _audit(self, peer: Peer, op: str, target: str, args: dict[str, Any], result: str) -> None:
        entry = await self.store.audit.record(peer.uid, peer.user, op, target, args, result)
        self.server.publish("audit", entry.to_dict())


def _int_arg(args: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise OpError(f"{name} must be a whole number from {lo} to {hi}", "bad_request")
    return value
