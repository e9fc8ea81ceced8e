"""SensorHub: the enforcer component that owns the eBPF sensors.

What it does
- Loads the one BPF program (sensors/program.py) in a thread at start; without bcc,
  headers or tracefs the enforcer still runs and `status` shows the sensors as not loaded
  with the reason.
- Keeps the kernel's view of the inventory in step: the watched-cgroup map (every running
  container, also those present at start) and the local-address map that attributes
  inbound connections to the receiving container.
- Drains the per-sensor ring buffers on a poll thread every `poll_interval` seconds,
  decodes records into typed events (sensors/events.py), and hands them to the event loop
  in batches; there `container_id` / `remote_container_id` are filled from the inventory
  and each event is put on `enforcer.events` (a full queue counts as lost). Exec and
  closed-file events wait for their sha256 (hashed in a thread, each file once).
- Counts, per sensor: events, losses (ring buffer full, queue full), events suppressed by
  the per-container rate caps, repeats dropped in the kernel; served by the `stats` op,
  the `stats` topic (every 2 s) and the `status` op.

Kernel hooks for profiles and enforcement (call on the event loop thread; each call is
kept in Python too and re-applied if the program is (re)loaded later):

    hub.set_policy(cgroup_id, profile_id, mode)   # mode: "learn" | "alert" | "protect"
        Watch this cgroup with this profile's allow-lists. learn: novelties are sent
        (first exec of a path, first use of a syscall, new peers, files...). alert /
        protect: an exec or a syscall is sent only when the profile's allow-list misses it
        (files, network and DNS are still sent as novelties; research events - sensitive
        files, dangerous syscalls - always). protect: an exec whose path is not allowed is
        killed in the kernel before its first instruction (ExecEvent.killed = True).
    hub.allow_exec(profile_id, paths)             # paths as executed (ExecEvent.path)
    hub.allow_syscalls(profile_id, nrs)           # syscall numbers (SyscallEvent.nr)
    hub.clear_profile(profile_id)                 # drop both allow-lists of a profile
    hub.syscall_bitmap(cgroup_id) -> set[int]     # syscalls this container has used
    hub.reset_novelty(cgroup_id)                  # forget what was already sent (relearn)
    hub.policy(cgroup_id) -> (profile_id, mode) | None

Repeats of one (container, subject) are dropped in the kernel for `dedup_ttl` seconds
and sent again after it, so a repeated anomaly is still seen at a bounded rate. The
protect-mode kill never depends on that: it is decided for every exec.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import ipaddress
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Iterable

from ..inventory.cgroups import cgroup_for_pid
from ..models import Container, SensorStats
from . import layout as L
from .decode import Decoded, Decoder
from .events import ExecEvent, FileClosedEvent, NetworkEvent, SensorEvent
from .hashing import FileHasher, HashResult
from .paths import path_hash
from .program import SensorLoadError, load_program

log = logging.getLogger(__name__)

RING_BUFFERS: dict[str, str] = {
    "process": "process_events", "network": "network_events", "dns": "dns_events",
    "file": "file_events", "syscall": "syscall_events",
}
# Per container, events per second before the kernel suppresses (and counts) the rest.
DEFAULT_RATE_CAPS: dict[int, int] = {
    L.CFG_RATE_EXEC: 1000, L.CFG_RATE_TREE: 200, L.CFG_RATE_NET: 1000, L.CFG_RATE_DNS: 500,
    L.CFG_RATE_FILE: 1000, L.CFG_RATE_SYSCALL: 500,
}
LIVE_STATES = ("running", "paused", "restarting")
BUSY_BATCH = 256  # records in one poll above which the next poll comes sooner


class SensorHub:
    # process.c keys an exec of /proc/self/exe by "/proc/self/exe:" + basename(argv[0]), so
    # profiles may allow one busybox applet without allowing them all.
    SELF_EXEC_BY_APPLET = True

    def __init__(self, inventory: Any, events: asyncio.Queue[Any], server: Any = None, *,
                 poll_interval: float = 0.02, dedup_ttl: float = 20.0,
                 rate_caps: dict[int, int] | None = None, hash_max_bytes: int = 32 << 20,
                 loader: Callable[[], Any] = load_program) -> None:
        self.inventory = inventory
        self.events = events
        self.server = server
        self.poll_interval = poll_interval
        self.dedup_ttl = dedup_ttl
        self.rate_caps = {**DEFAULT_RATE_CAPS, **(rate_caps or {})}
        self._loader = loader
        self.bpf: Any = None
        self.error = ""
        self.ready = asyncio.Event()  # set once loaded (or failed: check .loaded)
        self.hasher = FileHasher(max_bytes=hash_max_bytes)
        # Run as a container itself, the enforcer must not watch its own cgroup: its bpf()
        # calls would be "dangerous syscalls" and its reads of /proc alerts.
        own = cgroup_for_pid(os.getpid())
        self.own_cgroup_id = own.cgroup_id if own else 0
        self.decoder = Decoder(self.hasher, self._root_pid)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        # Python's copy of the kernel state, re-applied when the program loads.
        self._watched: dict[int, str] = {}  # cgroup id -> container id
        self._self_logged: set[str] = set()  # own container ids already logged
        self._root_pids: dict[int, int] = {}  # cgroup id -> container init pid (for /proc/<pid>/root)
        self._policies: dict[int, tuple[int, int]] = {}  # cgroup id -> (profile id, mode)
        self._gens: dict[int, int] = {}
        self._ips: dict[bytes, int] = {}  # 16-byte address -> cgroup id
        self._exec_allow: dict[int, set[int]] = {}  # profile id -> path hashes
        self._syscall_allow: dict[int, set[int]] = {}
        # Counters kept in user space (the kernel's are in the `counters` map).
        self._delivered = {name: 0 for name in L.SENSORS}
        self._queue_lost = {name: 0 for name in L.SENSORS}
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=16)
        self._batch: list[Decoded] = []
        self.listeners: list[Callable[[SensorEvent], None]] = []  # in-process consumers (tests, bench)

    @classmethod
    def from_enforcer(cls, enforcer: Any) -> "SensorHub":
        return cls(enforcer.inventory, enforcer.events, enforcer.server)

    # -- component life cycle -----------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.inventory.subscribe(self._on_inventory_change)
        self._tasks.append(asyncio.create_task(self._load(), name="sensors-load"))
        self._tasks.append(asyncio.create_task(self._sample_stats(), name="sensors-stats"))

    async def stop(self) -> None:
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        self.hasher.close()
        if self.bpf is not None:
            bpf, self.bpf = self.bpf, None
            await asyncio.to_thread(bpf.cleanup)

    def register_ops(self, server: Any) -> None:
        server.register("stats", self._op_stats)

    def status(self) -> dict[str, Any]:
        return {"sensors": [s.to_dict() for s in self.stats()]}

    @property
    def loaded(self) -> bool:
        return self.bpf is not None

    async def _load(self) -> None:
        try:
            bpf = await self._in_daemon_thread(self._loader)
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
        if self._stopping.is_set():
            await asyncio.to_thread(bpf.cleanup)
            return
        self.bpf = bpf
        self._apply_config()
        for c in list(self.inventory.containers.values()):
            self._sync_container(c)
        self._reapply()
        for name, rb in RING_BUFFERS.items():
            bpf[rb.encode()].open_ring_buffer(self._make_callback(name))
        self._thread = threading.Thread(target=self._poll, name="stockade-sensors", daemon=True)
        self._thread.start()
        log.info("sensors: loaded (%d containers watched, poll every %.0f ms)", len(self._watched),
                 self.poll_interval * 1000)
        self.ready.set()

    async def _in_daemon_thread(self, fn: Callable[[], Any]) -> Any:
        """Run fn in a daemon thread: a compile still running at shutdown must not hold
        the process (asyncio.to_thread's workers are joined at exit)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if done.cancelled():
                if ok and value is not None:
                    threading.Thread(target=value.cleanup, daemon=True).start()
                return
            done.set_result(value) if ok else done.set_exception(value)

        def run() -> None:
            try:
                result = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                _call_soon(loop, settle, False, e)
                return
            _call_soon(loop, settle, True, result)

        threading.Thread(target=run, name="stockade-sensors-load", daemon=True).start()
        return await done

    def _apply_config(self) -> None:
        cfg = self.bpf[b"config"]
        cfg[cfg.Key(L.CFG_TTL_NS)] = cfg.Leaf(int(self.dedup_ttl * 1e9))
        for slot, cap in self.rate_caps.items():
            cfg[cfg.Key(slot)] = cfg.Leaf(int(cap))

    # -- the poll thread ----------------------------------------------------------------
    def _make_callback(self, sensor: str) -> Callable[[Any, int, int], int]:
        decode = self.decoder.decode
        batch = self._batch

        def on_record(_ctx: Any, data: int, size: int) -> int:
            try:
                d = decode(data, size)
            except Exception:  # noqa: BLE001 - one bad record must not stop the sensors
                log.exception("sensors: cannot decode a %s record", sensor)
                return 0
            if d is not None:
                batch.append(d)
            return 0

        return on_record

    def _poll(self) -> None:
        bpf = self.bpf
        while not self._stopping.is_set():
            try:
                bpf.ring_buffer_consume()
            except Exception:  # noqa: BLE001
                log.exception("sensors: ring buffer read failed")
            busy = len(self._batch) >= BUSY_BATCH
            if self._batch:
                batch = self._batch[:]
                self._batch.clear()
                try:
                    self._loop.call_soon_threadsafe(self._deliver, batch)  # type: ignore[union-attr]
                except RuntimeError:
                    return  # the loop has closed
            # Under a burst, read again at once rather than let the rings fill up.
            self._stopping.wait(self.poll_interval / 10 if busy else self.poll_interval)

    # -- on the loop: attribution and delivery ------------------------------------------
    def _deliver(self, batch: list[Decoded]) -> None:
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
        elif ev.cgroup_id in self._watched:
            ev.container_id = self._watched[ev.cgroup_id]
        if isinstance(ev, NetworkEvent) and ev.remote_ip:
            peer = self.inventory.by_ip(ev.remote_ip)
            if peer is not None:
                ev.remote_container_id = peer.id
        try:
            self.events.put_nowait(ev)
            self._delivered[d.sensor] += 1
        except asyncio.QueueFull:
            self._queue_lost[d.sensor] += 1
        for listener in self.listeners:
            try:
                listener(ev)
            except Exception:  # noqa: BLE001
                log.exception("sensors: listener failed")
        if self.server is not None and self.server.has_subscribers("sensor"):
            data = dataclasses.asdict(ev)
            data["sensor"] = d.sensor
            data["type"] = type(ev).__name__
            self.server.publish("sensor", data)

    # -- inventory -> kernel maps -------------------------------------------------------
    def _on_inventory_change(self, change: Any) -> None:
        if change.previous is not None and change.previous.cgroup_id and \
                change.previous.cgroup_id != change.container.cgroup_id:
            self._unwatch(change.previous.cgroup_id)
        if change.previous is not None:
            self._drop_ips(change.previous)
        if change.change == "removed" or change.container.state not in LIVE_STATES:
            if change.container.cgroup_id:
                self._unwatch(change.container.cgroup_id)
            self._drop_ips(change.container)
            return
        self._sync_container(change.container)

    def _sync_container(self, c: Container) -> None:
        if not c.cgroup_id or c.state not in LIVE_STATES:
            return
        if c.cgroup_id == self.own_cgroup_id:
            if c.id not in self._self_logged:
                self._self_logged.add(c.id)
                log.info("sensors: %s is the enforcer's own container: not watched", c.name[:64].encode("unicode_escape").decode())
            return
        self._watched[c.cgroup_id] = c.id
        if c.pid:
            self._root_pids[c.cgroup_id] = c.pid
        self._write_policy(c.cgroup_id)
        for ip in c.addresses():
            key = _ip_key(ip)
            if key is not None:
                self._ips[key] = c.cgroup_id
                self._map_set("local_ips", _ip_map_key(key), c.cgroup_id)

    def _drop_ips(self, c: Container) -> None:
        for ip in c.addresses():
            key = _ip_key(ip)
            if key is not None and self._ips.get(key) == c.cgroup_id:
                del self._ips[key]
                self._map_del("local_ips", _ip_map_key(key))

    def _unwatch(self, cgroup_id: int) -> None:
        self._watched.pop(cgroup_id, None)
        self._root_pids.pop(cgroup_id, None)
        self._policies.pop(cgroup_id, None)
        self._gens[cgroup_id] = self._gens.get(cgroup_id, 0) + 1  # a reused inode starts fresh
        self._map_del("watched", cgroup_id)
        self._map_del("syscalls_seen", cgroup_id)

    def _root_pid(self, cgroup_id: int) -> int:
        """Called from the poll thread: a plain dict read."""
        return self._root_pids.get(cgroup_id, 0)

    # -- policy API (see the module docstring) ------------------------------------------
    def set_policy(self, cgroup_id: int, profile_id: int, mode: str | int) -> None:
        mode_id = L.MODES[mode] if isinstance(mode, str) else int(mode)
        if mode_id not in L.MODES.values():
            raise ValueError(f"unknown mode {mode!r}")
        old = self._policies.get(cgroup_id)
        self._policies[cgroup_id] = (int(profile_id), mode_id)
        self._watched.setdefault(cgroup_id, "")
        if old is not None and old[1] != mode_id:
            # The kernel drops repeats of what it has already seen in this generation: a
            # connection seen in alert mode must reach user space again in protect mode.
            self.reset_novelty(cgroup_id)
        else:
            self._write_policy(cgroup_id)

    def policy(self, cgroup_id: int) -> tuple[int, str] | None:
        p = self._policies.get(cgroup_id)
        if p is None:
            return (0, "learn") if cgroup_id in self._watched else None
        return p[0], next(k for k, v in L.MODES.items() if v == p[1])

    def allow_exec(self, profile_id: int, paths: Iterable[str]) -> None:
        hashes = self._exec_allow.setdefault(int(profile_id), set())
        for p in paths:
            h = path_hash(p)
            hashes.add(h)
            self._map_set("exec_allow", L.ExecAllowKey(int(profile_id), 0, h), 1)

    def allow_syscalls(self, profile_id: int, nrs: Iterable[int]) -> None:
        allowed = self._syscall_allow.setdefault(int(profile_id), set())
        allowed.update(int(n) for n in nrs if 0 <= int(n) < L.NR_SYSCALLS)
        self._map_set("syscall_allow", int(profile_id), _bits(allowed))

    def clear_profile(self, profile_id: int) -> None:
        for h in self._exec_allow.pop(int(profile_id), set()):
            self._map_del("exec_allow", L.ExecAllowKey(int(profile_id), 0, h))
        if self._syscall_allow.pop(int(profile_id), None) is not None:
            self._map_del("syscall_allow", int(profile_id))

    def syscall_bitmap(self, cgroup_id: int) -> set[int]:
        if self.bpf is None:
            return set()
        table = self.bpf[b"syscalls_seen"]
        try:
            bits = table[table.Key(cgroup_id)]
        except KeyError:
            return set()
        return {w * 64 + b for w in range(L.NR_SYSCALLS // 64) for b in range(64) if bits.w[w] >> b & 1}

    def reset_novelty(self, cgroup_id: int) -> None:
        self._gens[cgroup_id] = self._gens.get(cgroup_id, 0) + 1
        if cgroup_id in self._watched:
            self._write_policy(cgroup_id)
            self._map_set("syscalls_seen", cgroup_id, L.SyscallBits())

    def _write_policy(self, cgroup_id: int) -> None:
        profile_id, mode = self._policies.get(cgroup_id, (0, L.MODE_LEARN))
        gen = self._gens.setdefault(cgroup_id, 1)
        self._map_set("watched", cgroup_id, L.Policy(profile_id, mode, gen, 0))
        if self.bpf is not None:
            seen = self.bpf[b"syscalls_seen"]
            if seen.Key(cgroup_id) not in seen:
                seen[seen.Key(cgroup_id)] = L.SyscallBits()

    def _reapply(self) -> None:
        for cg in list(self._watched):
            self._write_policy(cg)
        for key, cg in self._ips.items():
            self._map_set("local_ips", _ip_map_key(key), cg)
        for pid, hashes in self._exec_allow.items():
            for h in hashes:
                self._map_set("exec_allow", L.ExecAllowKey(pid, 0, h), 1)
        for pid, nrs in self._syscall_allow.items():
            self._map_set("syscall_allow", pid, _bits(nrs))

    def _map_set(self, name: str, key: Any, value: Any) -> None:
        if self.bpf is None:
            return
        table = self.bpf[name.encode()]
        k = key if not isinstance(key, int) else table.Key(key)
        v = value if not isinstance(value, int) else table.Leaf(value)
        table[k] = v

    def _map_del(self, name: str, key: Any) -> None:
        if self.bpf is None:
            return
        table = self.bpf[name.encode()]
        k = key if not isinstance(key, int) else table.Key(key)
        try:
            del table[k]
        except KeyError:
            pass

    # -- stats ----------------------------------------------------------------------------
    def kernel_counters(self) -> dict[str, list[int]]:
        """Per sensor: [emitted, lost, suppressed, deduped, killed] summed over CPUs."""
        out = {name: [0] * 5 for name in L.SENSORS}
        if self.bpf is None:
            return out
        table = self.bpf[b"counters"]
        for s, name in enumerate(L.SENSORS):
            for c in range(5):
                out[name][c] = int(sum(table[table.Key(s * L.C_SLOTS + c)]))
        return out

    def stats(self) -> list[SensorStats]:
        counters = self.kernel_counters()
        rates = self._rates()
        out = []
        for name in L.SENSORS:
            emitted, lost, suppressed, deduped, _killed = counters[name]
            out.append(SensorStats(
                name=name, events=self._delivered[name], lost=lost + self._queue_lost[name],
                rate=round(rates.get(name, 0.0), 2), loaded=self.loaded, error=self.error,
                suppressed=suppressed, deduped=deduped, lost_ring=lost, lost_queue=self._queue_lost[name],
            ))
        return out

    def _rates(self) -> dict[str, float]:
        if len(self._samples) < 2:
            return {}
        (t0, a), (t1, b) = self._samples[0], self._samples[-1]
        dt = max(t1 - t0, 1e-6)
        return {k: (b[k] - a[k]) / dt for k in b}

    async def _sample_stats(self) -> None:
        tick = 0
        while True:
            self._samples.append((time.monotonic(), dict(self._delivered)))
            while len(self._samples) > 6:  # about 5 s of history
                self._samples.popleft()
            tick += 1
            if tick % 2 == 0 and self.server is not None and self.server.has_subscribers("stats"):
                self.server.publish("stats", self._stats_result())
            await asyncio.sleep(1.0)

    def _stats_result(self) -> dict[str, Any]:
        stats = self.stats()
        return {"sensors": [s.to_dict() for s in stats], "events_total": sum(s.events for s in stats),
                "lost_total": sum(s.lost for s in stats), "suppressed_total": sum(s.suppressed for s in stats),
                "queued": self.events.qsize(), "queue_max": self.events.maxsize,
                "hash_skipped": self.hasher.skipped}

    async def _op_stats(self, req: Any) -> dict[str, Any]:
        return self._stats_result()


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass  # the loop has closed: nobody is waiting any more


def _fill_hash(ev: SensorEvent, f: Future[HashResult]) -> None:
    try:
        result = f.result()
    except Exception:  # noqa: BLE001 - a cancelled hash at shutdown
        return
    if isinstance(ev, (ExecEvent, FileClosedEvent)):
        ev.sha256 = result.sha256
    if isinstance(ev, FileClosedEvent):
        ev.size = result.size


def _ip_key(ip: str) -> bytes | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version == 4:
        return b"\0" * 10 + b"\xff\xff" + addr.packed
    return addr.packed


def _ip_map_key(raw: bytes) -> L.IpKey:
    return L.IpKey((ctypes.c_uint8 * 16)(*raw))


def _bits(nrs: Iterable[int]) -> L.SyscallBits:
    bits = L.SyscallBits()
    for n in nrs:
        bits.w[n // 64] |= 1 << (n % 64)
    return bits
