"""SensorHub: the enforcer component that owns the eBPF sensors.

What it does
- Loads the one BPF program (sensors/program.py) in a thread at start; without bcc,
  headers or tracefs the enforcer still runs and `status` shows the sensors as not loaded
  with the reason.
- Keeps the kernel's view of the inventory in step through its `maps`
  (sensors/kernel_maps.py: watched cgroups, local addresses, policies and allow-lists,
  the kernel hooks for profiles and enforcement).
- Polls the ring buffers on a thread (sensors/reader.py), which hands decoded events to
  the event loop in batches; there `container_id` / `remote_container_id` are filled from
  the inventory and each event is handed to `deliver` (False: the consumer's queue is
  full, the event counts as lost), then to the optional `tap` (observers: the `sensor`
  topic, tests, benches). Exec and closed-file events wait for their sha256 (hashed in a
  thread, each file once, regular files only, capped, with a deadline, in a fair queue per
  container: sensors/hashing.py); one not hashed carries `hash_error` and `hash_reason`.
- Counts per sensor (sensors/stats.py); served by the `stats` op, the `stats` topic
  (`publish_stats`, every 2 s) and the `status` op.
- With `pins` (sensors/pins.py), the policy maps and the programs' links are pinned in
  bpffs: they stay in force after the enforcer stops or dies, and a restart adopts them
  (status: `pins`). A stop leaves them; `stockade-enforcer --uninstall` removes them.

How it is connected to the enforcer (a queue, the socket topics): sensors/wiring.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Protocol

from ..models import Container, SensorStats
from ..threads import in_daemon_thread
from . import layout as L
from .decode import Decoded, Decoder
from .events import ExecEvent, FileClosedEvent, NetworkEvent, RewriteGuardFullEvent, SensorEvent
from .hashing import FileHasher, HashResult
from .kernel_maps import KernelMaps
from .pins import PinDir
from .program import SensorLoadError, load_program, rewrite_guard_offsets
from .reader import RingReader
from .stats import SensorCounters, kernel_counters, rewrite_guard, stats_result

log = logging.getLogger(__name__)

# Per container, events per second before the kernel suppresses (and counts) the rest.
DEFAULT_RATE_CAPS: dict[int, int] = {
    L.CFG_RATE_EXEC: 1000, L.CFG_RATE_TREE: 200, L.CFG_RATE_NET: 1000, L.CFG_RATE_DNS: 500,
    L.CFG_RATE_FILE: 1000, L.CFG_RATE_SYSCALL: 500,
}

Deliver = Callable[[SensorEvent], bool]
Tap = Callable[[SensorEvent, str], None]
PublishStats = Callable[[Callable[[], dict[str, Any]]], None]


class Inventory(Protocol):
    """What the hub needs of the inventory: its containers, their changes, lookups."""

    @property
    def containers(self) -> dict[str, Container]: ...

    def subscribe(self, listener: Callable[[Any], Any]) -> None: ...

    def by_cgroup(self, cgroup_id: int) -> Container | None: ...

    def by_ip(self, ip: str) -> Container | None: ...


class SensorHub:
    def __init__(self, inventory: Inventory, deliver: Deliver, *, tap: Tap | None = None,
                 publish_stats: PublishStats | None = None,
                 queue_depth: Callable[[], tuple[int, int]] | None = None,
                 poll_interval: float = 0.02, dedup_ttl: float = 20.0,
                 rate_caps: dict[int, int] | None = None, hash_max_bytes: int = 32 << 20,
                 hash_deadline: float = 5.0, hash_rate_bytes: int = 64 << 20,
                 pins: PinDir | None = None, loader: Callable[[], Any] | None = None) -> None:
        self.inventory = inventory
        self.deliver = deliver
        self.tap = tap
        self.publish_stats = publish_stats
        self.queue_depth = queue_depth
        self.poll_interval = poll_interval
        self.dedup_ttl = dedup_ttl
        self.rate_caps = {**DEFAULT_RATE_CAPS, **(rate_caps or {})}
        self.pins_off = "" if pins is not None else "not configured (bpf_pin_dir = off)"
        if pins is not None and (why := pins.usable()):
            log.warning("sensors: not pinning (%s): kill-on-exec will end with this process", why)
            pins, self.pins_off = None, why
        self.pins = pins
        self._loader = loader if loader is not None else (lambda: load_program(pins))
        self.bpf: Any = None
        self.error = ""
        self.ready = asyncio.Event()  # set once loaded (or failed: check .loaded)
        self.hasher = FileHasher(max_bytes=hash_max_bytes, deadline=hash_deadline,
                                 rate_bytes=hash_rate_bytes)
        self.maps = KernelMaps()
        self.counters = SensorCounters()
        self.reader = RingReader(Decoder(self.hasher, self.maps.root_pid), self._deliver,
                                 poll_interval=poll_interval)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._tasks: list[asyncio.Task[Any]] = []

    # -- component life cycle -----------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.inventory.subscribe(self.maps.on_inventory_change)
        self._tasks.append(asyncio.create_task(self._load(), name="sensors-load"))
        self._tasks.append(asyncio.create_task(self._sample_stats(), name="sensors-stats"))

    async def stop(self) -> None:
        self._stopping = True
        self.reader.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        await asyncio.to_thread(self.reader.join, 5)
        self.hasher.close()
        if self.bpf is not None:
            bpf, self.bpf = self.bpf, None
            self.maps.detach()
            await asyncio.to_thread(bpf.cleanup)

    def status(self) -> dict[str, Any]:
        kernel = self.kernel_counters()
        return {"sensors": [s.to_dict() for s in self.stats(kernel)], "hasher": self.hash_stats(),
                "pins": self.pins_status(),
                "rewrite_guard": self.rewrite_guard(kernel)}

    def pins_status(self) -> dict[str, Any]:
        """What is pinned in bpffs and since when; what this process adopted at its start."""
        if self.pins is None:
            return {"enabled": False, "reason": self.pins_off}
        now = self.pins.describe()
        adopted = self.pins.adopted
        return {"enabled": True, **now, "generation": self.pins.generation,
                "adopted": {"maps": adopted.get("maps", []), "maps_since": adopted.get("maps_since", 0.0),
                            "links": adopted.get("links", [])}}

    def hash_stats(self) -> dict[str, Any]:
        """The hasher's counts, its queue depth per container (by name) and the worst one."""
        stats = self.hasher.stats()
        depths: dict[str, int] = {}
        for cg, n in stats.pop("depths").items():  # type: ignore[union-attr]
            c = self.inventory.by_cgroup(cg)
            depths[c.name if c is not None else (self.maps.container_id(cg) or f"cgroup {cg}")] = n
        worst = max(depths.items(), key=lambda kv: kv[1], default=("", 0))
        return {**stats, "queued_by_container": depths, "worst_queue": {"container": worst[0], "queued": worst[1]}}

    @property
    def loaded(self) -> bool:
        return self.bpf is not None

    async def _load(self) -> None:
        try:
            # A daemon thread: a compile still running at shutdown must not hold the process;
            # a load that finishes after nobody waits is cleaned up.
            bpf = await in_daemon_thread(self._loader, name="stockade-sensors-load",
                                         on_abandoned=lambda loaded: loaded.cleanup())
        except SensorLoadError as e:
            self.error = str(e)
            log.error("sensors: %s", e)
            self.ready.set()
            return
        except Exception as e:  # noqa: BLE001 - anything else: report, keep the enforcer up
            self.error = f"cannot load the BPF sensors: {type(e).__name__}: {e}".splitlines()[0]
            log.exception("sensors: load failed")
            self.ready.set()
            return
        if self._stopping:
            await asyncio.to_thread(bpf.cleanup)
            return
        self.bpf = bpf
        self._apply_config()
        self.maps.attach(bpf, self.inventory.containers.values())
        if self.pins is not None:
            await self._retire_older_generations()
        self.reader.start(bpf, asyncio.get_running_loop())
        log.info("sensors: loaded (%d containers watched, poll every %.0f ms)", self.maps.watched_count,
                 self.poll_interval * 1000)
        if self.pins is not None:
            adopted = self.pins.adopted
            if adopted.get("maps") and self.pins.maps_dir == adopted.get("maps_dir"):
                self._tasks.append(asyncio.create_task(self._prune_adopted(), name="sensors-prune"))
            log.info("sensors: pinned in %s as generation %s (adopted %d maps, %d older generations)",
                     self.pins.root, self.pins.generation, len(adopted.get("maps", [])),
                     len(adopted.get("links", [])))
        self.ready.set()

    async def _retire_older_generations(self) -> None:
        """This generation is attached and its maps written: unpin the older ones. With new
        maps (another layout) the policy is complete only once the inventory has synced and
        the profiles are applied to it; until then the old generation keeps protect."""
        assert self.pins is not None
        synced = getattr(self.inventory, "synced", None)
        if self.pins.maps_dir != self.pins.adopted.get("maps_dir") and self.pins.adopted.get("links") \
                and synced is not None:
            await synced.wait()
            await asyncio.sleep(1.0)  # the profile book applies policies on the same sync
        retired = self.pins.retire_others()
        if retired:
            log.info("sensors: retired the pinned generation(s) %s", ", ".join(retired))

    async def _prune_adopted(self) -> None:
        """Adopted maps may name containers that went away while no enforcer ran."""
        synced = getattr(self.inventory, "synced", None)
        if synced is None:
            return
        await synced.wait()
        dropped = self.maps.prune_stale()
        if dropped:
            log.info("sensors: dropped %d stale entries from the adopted maps", dropped)

    def _apply_config(self) -> None:
        cfg = self.bpf[b"config"]
        cfg[cfg.Key(L.CFG_TTL_NS)] = cfg.Leaf(int(self.dedup_ttl * 1e9))
        for slot, cap in self.rate_caps.items():
            cfg[cfg.Key(slot)] = cfg.Leaf(int(cap))

    # -- on the loop: attribution and delivery ------------------------------------------
    def _deliver(self, batch: Iterable[Decoded]) -> None:
        for d in batch:
            if d.pending is not None and not d.pending.done():
                d.pending.add_done_callback(lambda f, d=d: _call_soon(self._loop, self._deliver_hashed, d, f))
                continue
            if d.pending is not None:
                _fill_hash(d.event, d.pending)
            self._emit(d)

    def _deliver_hashed(self, d: Decoded, f: Future[HashResult]) -> None:
        _fill_hash(d.event, f)
        self._emit(d)

    def _emit(self, d: Decoded) -> None:
        ev = d.event
        c = self.inventory.by_cgroup(ev.cgroup_id)
        if c is not None:
            ev.container_id = c.id
        else:
            known = self.maps.container_id(ev.cgroup_id)
            if known is not None:
                ev.container_id = known
        if isinstance(ev, NetworkEvent) and ev.remote_ip:
            peer = self.inventory.by_ip(ev.remote_ip)
            if peer is not None:
                ev.remote_container_id = peer.id
        self.counters.count(d.sensor, self.deliver(ev))
        if self.tap is not None:
            try:
                self.tap(ev, d.sensor)
            except Exception:  # noqa: BLE001
                log.exception("sensors: tap failed")

    # -- stats ----------------------------------------------------------------------------
    def kernel_counters(self) -> dict[str, list[int]]:
        """Per sensor: [emitted, lost, suppressed, deduped, killed] summed over CPUs."""
        return kernel_counters(self.bpf)

    def stats(self, kernel: dict[str, list[int]] | None = None) -> list[SensorStats]:
        """`kernel`: counters already read for the same reply (one read of the map per reply)."""
        kernel = kernel if kernel is not None else self.kernel_counters()
        return self.counters.stats(kernel, loaded=self.loaded, error=self.error)

    def stats_result(self) -> dict[str, Any]:
        queued, queue_max = self.queue_depth() if self.queue_depth is not None else (0, 0)
        hasher = self.hash_stats()
        kernel = self.kernel_counters()
        return {**stats_result(self.stats(kernel), queued=queued, queue_max=queue_max,
                               hash_skipped=int(hasher["skipped_total"])), "hasher": hasher,
                "rewrite_guard": self.rewrite_guard(kernel)}

    def rewrite_guard(self, kernel: dict[str, list[int]]) -> dict[str, Any]:
        marks = self.maps.rewrite_marks
        return {**rewrite_guard(self.bpf, kernel, rewrite_guard_offsets()[1], tracked=marks.tracked(),
                                failing_closed=marks.failing_closed()),
                "identities": self.maps.exec_identities.pinned_total}

    def _say_rewrite_full(self) -> None:
        """A container whose mark could not be stored fails closed: said once, as an event."""
        for cg in self.maps.rewrite_marks.newly_full():
            self.deliver(RewriteGuardFullEvent(time=time.time(), cgroup_id=cg,
                                               container_id=self.maps.container_id(cg) or ""))

    async def _sample_stats(self) -> None:
        tick = 0
        while True:
            self.counters.sample()
            self._say_rewrite_full()
            tick += 1
            if tick % 2 == 0 and self.publish_stats is not None:
                self.publish_stats(self.stats_result)
            await asyncio.sleep(1.0)


def _call_soon(loop: asyncio.AbstractEventLoop | None, fn: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)  # type: ignore[union-attr]
    except RuntimeError:
        pass  # the loop has closed: nobody is waiting any more


def _fill_hash(ev: SensorEvent, f: Future[HashResult]) -> None:
    try:
        result = f.result()
    except Exception:  # noqa: BLE001 - a cancelled hash at shutdown
        return
    if isinstance(ev, (ExecEvent, FileClosedEvent)):
        ev.sha256 = result.sha256
        ev.hash_error, ev.hash_reason = result.error, result.reason
    if isinstance(ev, ExecEvent):
        ev.multicall = result.multicall
    if isinstance(ev, FileClosedEvent):
        ev.size = result.size
