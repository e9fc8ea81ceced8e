"""The composition root: the one place that builds the enforcer's parts and wires them.

Data flows one way: Docker + kernel events -> inventory / sensors -> profiles and
detection -> alerts -> store and socket -> console. Each part gets, through its
constructor, the ports it needs (enforcer/ports.py) and nothing else; none holds this
daemon. The root also registers every socket op (enforcer/ops/), computes the views
clients see (views.py) when a part says a container changed, starts the parts in order
and stops them in reverse.

    sensors (eBPF) --events queue--> detector --AlertSink--> alerts --publish--> server
                                       |  ^ ProfileLookup        ^ FeedMatcher
                                       |  profiles --KernelHooks--> sensors' maps
                                       +--ProtectResponse--> responder (nftables, freezer, kill)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import __version__
from .audit import Audit
from .config import Settings
from .detect import AlertBook, Detector
from .enforce.responder import Responder
from .enforce.forensics import Forensics, audit_of, incidents_of, profile_of
from .inventory import DockerSource, Inventory, InventoryChange
from .models import Container
from .ops import alerts as alert_ops
from .ops import enforce as enforce_ops
from .ops import feeds as feed_ops
from .ops import inventory as inventory_ops
from .ops import outputs as output_ops
from .ops import profiles as profile_ops
from .ops import sensors as sensor_ops
from .ops import status as status_ops
from .outputs import OutputManager
from .ports import FeedMatcher, ProtectResponse, StatusSource
from .profiles import ProfileBook
from .profiles.book import SensorHealth
from .profiles.kernel import KernelHooks, NullKernelHooks, hooks_for_maps
from .profiles.sockets import live_uses
from .sdnotify import notify
from .server import Server
from .store import Store
from .views import Views

if TYPE_CHECKING:  # imported where built: bcc and httpx load only when these parts run
    from .feeds import FeedManager
    from .sensors.hub import SensorHub

log = logging.getLogger(__name__)

EVENT_QUEUE = 100_000  # sensor events waiting for the detector; a full queue counts as lost


@dataclass
class Seams:
    """Parts a test puts in place of the real ones (None: build the real part)."""

    feeds: FeedMatcher | None = None  # instead of the FeedManager (no feed ops then)
    responder: ProtectResponse | None = None  # instead of the real responder (no enforcement ops)
    kernel_hooks: KernelHooks | None = None  # instead of the sensors' maps
    enforcement: bool = True  # False: no real responder (then `responder` or nothing answers)


class Daemon:
    def __init__(self, settings: Settings, seams: Seams | None = None) -> None:
        seams = seams or Seams()
        self.settings = settings
        self.started = time.time()
        self.store = Store(settings.db)
        self.docker = DockerSource(settings.docker_url)
        self.inventory = Inventory(self.docker)
        self.audit = Audit(self.store.audit, self._publish)
        self.server = Server(settings.socket, socket_group=settings.socket_group, admin_group=settings.admin_group,
                             viewer_group=settings.viewer_group, auditor=self.audit.record_request)
        # The one queue of typed sensor events, consumed by the detector. Bounded: when it
        # is full the producer counts the event as lost.
        self.events: asyncio.Queue[Any] = asyncio.Queue(maxsize=EVENT_QUEUE)

        self.sensors: SensorHub | None = None
        hooks = seams.kernel_hooks
        if settings.sensors:
            from .sensors.hub import SensorHub  # bcc is imported only when sensors run
            from .sensors.pins import PinDir
            from .sensors.wiring import queue_deliver, queue_depth, sensor_topic_tap, stats_topic

            self.sensors = SensorHub(
                self.inventory, queue_deliver(self.events), queue_depth=queue_depth(self.events),
                tap=sensor_topic_tap(self.server.publish, self.server.has_subscribers),
                publish_stats=stats_topic(self.server.publish, self.server.has_subscribers),
                hash_max_bytes=int(settings.hash_max_mib * (1 << 20)), hash_deadline=settings.hash_deadline,
                hash_rate_bytes=int(settings.hash_rate_mib * (1 << 20)),
                pins=PinDir(settings.pin_root()) if settings.pin_root() else None)
            hooks = hooks or hooks_for_maps(self.sensors.maps)
        self.feed_manager: FeedManager | None = None
        feeds: FeedMatcher | None = seams.feeds
        if feeds is None:
            from .feeds import FeedManager  # httpx: only where feeds are synced

            self.feed_manager = FeedManager(settings, self.store.feeds, self._publish, self.docker)
            feeds = self.feed_manager
        self.alerts = AlertBook(self.store.alerts, self._publish, settings.host)
        # Alert outputs (docs/outputs.md): fed every `alert` publication by _publish.
        self.outputs = OutputManager(self.store.outputs, self.store.db.flush)
        self.profiles = ProfileBook(settings, self.store.profiles, self.store.inventory, self.inventory,
                                    self._publish, self.container_changed, hooks or NullKernelHooks(),
                                    sensors=self._sensor_health(), started=self.started,
                                    sockets=self._live_sockets if settings.sensors else None)
        self.responder: Responder | None = None
        self.forensics: Forensics | None = None
        responder = seams.responder
        if responder is None and seams.enforcement:
            self.responder = Responder(settings.nft_table, self.inventory, self.store.enforcement, self.profiles,
                                       self.audit, self.container_changed, threats=self.feed_manager,
                                       policies=self.profiles, alerts=self.alerts)
            self.forensics = Forensics(
                self.docker, settings.forensics_dir,
                incidents=functools.partial(incidents_of, self.alerts.query),
                audit_entries=functools.partial(audit_of, self.store.audit.recent),
                profile_view=functools.partial(profile_of, self.profiles))
            responder = self.responder
        self.inode_watch: Any = None
        if settings.sensors:
            from .sensors.inode_watch import InodeWatch
            from .sensors.wiring import queue_deliver

            self.inode_watch = InodeWatch(self.inventory, queue_deliver(self.events),
                                          protected=functools.partial(_protected, self.profiles))
        self.detector = Detector(self.events, self.inventory, self.profiles, self.alerts, feeds, responder)
        self.views = Views(self.profiles, self.alerts, self.responder, settings.default_mode)

        # Started in this order, stopped in reverse.
        self.parts: list[Any] = [p for p in (self.sensors, self.inode_watch, self.feed_manager, self.profiles,
                                             self.alerts, self.outputs, self.detector, self.responder)
                                 if p is not None]
        self._register_ops()

    def _live_sockets(self, c: Container) -> list[tuple[str, tuple[str, ...]]]:
        return live_uses(c, self.inventory.by_ip)

    def _sensor_health(self) -> SensorHealth | None:
        hub = self.sensors
        if hub is None:
            return None

        def not_loaded() -> str:
            if hub.loaded:
                return ""
            return (hub.error or "not loaded") if hub.ready.is_set() else "loading"

        return SensorHealth(events_lost=lambda: sum(s.lost for s in hub.stats()), not_loaded=not_loaded)

    def _register_ops(self) -> None:
        s = self.server
        inventory_ops.register(s, self.inventory, self.views, self.store.inventory)
        status_ops.register(s, host=self.settings.host, started=self.started, docker=self.docker,
                            inventory=self.inventory, store=self.store, sources=self._status_sources)
        alert_ops.register(s, self.alerts)
        output_ops.register(s, self.outputs, self.settings.host)
        profile_ops.register(s, self.profiles, self.inventory, self.views.container, self.alerts)
        enforce_ops.register_exports(s, self.profiles, self.inventory, self.docker, self.settings.seccomp_dir)
        if self.responder is not None and self.forensics is not None:
            enforce_ops.register(s, self.responder, self.forensics, self.inventory)
        if self.feed_manager is not None:
            feed_ops.register(s, self.feed_manager)
        if self.sensors is not None:
            sensor_ops.register(s, self.sensors)

    def _status_sources(self) -> list[StatusSource]:
        return [p for p in (self.sensors, self.inode_watch, self.feed_manager, self.alerts, self.outputs,
                            self.detector, self.responder) if p is not None]

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        self.inventory.subscribe(self._on_inventory_change)
        await self.server.start()
        for part in self.parts:
            await part.start()
        await self.inventory.start()
        if not await self.docker.ping():
            log.warning("docker: engine at %s does not answer (%s); waiting for it",
                        self.settings.docker_url, self.docker.last_error or "no answer")
        log.info("enforcer %s listening on %s, database %s", __version__, self.settings.socket, self.settings.db)

    async def stop(self) -> None:
        await self.inventory.stop()
        for part in reversed(self.parts):
            try:
                await asyncio.wait_for(part.stop(), 10)
            except Exception:  # noqa: BLE001 - stop the rest regardless
                log.exception("stopping %s failed", type(part).__name__)
        await self.server.stop()
        await self.store.close()

    async def run(self, stop: asyncio.Event) -> None:
        ready: asyncio.Task[None] | None = None
        try:
            await self.start()
            ready = asyncio.create_task(self._tell_ready(), name="sd-notify-ready")
            await stop.wait()
            log.info("enforcer stopping")
        finally:
            if ready is not None:
                ready.cancel()
            # Also after a failed start: an open database thread would keep the process alive.
            await self.stop()

    async def _tell_ready(self) -> None:
        """READY for systemd once the sensors are loaded or have failed (enforcer/sdnotify.py)."""
        if self.sensors is not None:
            await self.sensors.ready.wait()
            state = "sensors loaded" if self.sensors.loaded else f"sensors NOT loaded: {self.sensors.error}"
        else:
            state = "sensors off"
        notify(f"READY=1\nSTATUS={state}"[:512])

    # -- what clients are told --------------------------------------------------------------
    def _publish(self, topic: str, data: dict[str, Any]) -> None:
        self.server.publish(topic, data)
        self.outputs.offer(topic, data)  # alerts into the outbox of every output

    def container_changed(self, c: Container) -> None:
        self.server.publish("inventory", {"change": "updated", "container": self.views.container(c)})

    def _on_inventory_change(self, change: InventoryChange) -> None:
        self.store.inventory.save_container(change.container, removed=change.change == "removed")
        self.server.publish("inventory", {"change": change.change, "container": self.views.container(change.container)})


def _protected(profiles: ProfileBook, container_id: str) -> bool:
    """Opens of its sensitive files are refused: protect mode on an active profile (the
    same condition under which the detector hands alerts to the responder)."""
    att = profiles.for_container(container_id)
    return att is not None and att.mode == "protect" and att.profile.state == "active"
