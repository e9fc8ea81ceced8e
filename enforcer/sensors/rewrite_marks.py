"""Keeping the rewrite guard's marks true (bpf/common.h `written_inodes`).

A mark is (device, inode) -> when a watched container opened that file for writing. A
container's root is an overlay mount with an anonymous device number, and the kernel
hands a freed number to the next mount: a new container can get the device of a dead
one, whose marks would then hold the new container's untouched image binaries (a kill in
protect mode for nothing). So when a container is first watched, the marks on its root's
device older than its first process are dropped (no write of its own can be older), and
when the last container on a root device goes, that device's marks go with it. Marks on
other devices (volumes, bind mounts) stay: those files outlive containers.

The kernel never drops a mark; only this module does, and only ones that cannot belong to
a live container. Sweeps run in a daemon thread: a full map is 524,288 entries.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Iterable

log = logging.getLogger(__name__)

CLOCK_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def kernel_dev(st_dev: int) -> int:
    """The kernel's dev_t (super_block.s_dev, MKDEV: major << 20 | minor) of a stat st_dev."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def process_start_monotonic_ns(pid: int) -> int | None:
    """When process `pid` started, on CLOCK_MONOTONIC (bpf_ktime_get_ns), rounded down by
    one clock tick so that it is never later than the truth; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    start_boot = int(fields[19]) * CLOCK_TICK_NS  # field 22 of the whole line: starttime, in ticks since boot
    offset = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()  # time spent suspended
    return max(0, start_boot - offset - CLOCK_TICK_NS)


def root_dev(pid: int) -> int | None:
    try:
        return kernel_dev(os.stat(f"/proc/{pid}/root/").st_dev)
    except OSError:
        return None


def stale(items: Iterable[tuple[int, int, int]], dev: int, before_ns: int) -> list[tuple[int, int]]:
    """Of (dev, ino, marked_at) marks, the (dev, ino) of those on `dev` older than before_ns."""
    return [(d, ino) for d, ino, at in items if d == dev and at < before_ns]


class RewriteMarks:
    """Which root device each watched container has, and the sweeps that follow."""

    def __init__(self) -> None:
        self.bpf: Any = None
        self._roots: dict[int, int] = {}  # cgroup id -> its root's kernel dev
        self._lock = threading.Lock()  # one sweep at a time
        self.dropped = 0  # marks dropped by sweeps (status)
        self._tracked: tuple[float, int] = (0.0, 0)  # (when counted, marks held)
        self.full_seen: set[int] = set()  # cgroups already said to fail closed

    def watched(self, cgroup_id: int, pid: int) -> None:
        if self.bpf is None or not pid or cgroup_id in self._roots:
            return
        dev, started = root_dev(pid), process_start_monotonic_ns(pid)
        if dev is None or started is None:
            return
        self._roots[cgroup_id] = dev
        self._sweep_later(dev, started)

    def unwatched(self, cgroup_id: int) -> None:
        dev = self._roots.pop(cgroup_id, None)
        if self.bpf is None:
            return
        for name in (b"rewrite_full", b"marks_per_cgroup"):  # a cgroup id is not reused while it lives
            try:
                del self.bpf[name][self.bpf[name].Key(cgroup_id)]
            except Exception:  # noqa: BLE001 - gone already (KeyError), or the table with the program
                pass
        if dev is not None and dev not in self._roots.values():
            self._sweep_later(dev, time.monotonic_ns())

    def tracked(self, max_age: float = 10.0) -> int:
        """Marks held now, counted at most every `max_age` seconds (a full map is 262,144)."""
        if self.bpf is None:
            return 0
        at, n = self._tracked
        if time.monotonic() - at > max_age:
            try:
                n = len(_snapshot(self.bpf[b"written_inodes"]))
            except Exception:  # noqa: BLE001 - the program was unloaded under us
                n = 0
            self._tracked = (time.monotonic(), n)
        return n

    def newly_full(self) -> list[int]:
        """Cgroups that went to rewrite_full since the last call (each said once)."""
        if self.bpf is None:
            return []
        try:
            now = {int(k.value) for k in self.bpf[b"rewrite_full"].keys()}
        except Exception:  # noqa: BLE001
            return []
        new = sorted(now - self.full_seen)
        self.full_seen = now
        return new

    def failing_closed(self) -> int:
        return len(self.full_seen)

    def _sweep_later(self, dev: int, before_ns: int) -> None:
        threading.Thread(target=self._sweep, args=(self.bpf, dev, before_ns), daemon=True,
                         name="stockade-mark-sweep").start()

    def _sweep(self, bpf: Any, dev: int, before_ns: int) -> None:
        with self._lock:
            try:
                table = bpf[b"written_inodes"]
                victims = stale(_snapshot(table), dev, before_ns)
                for d, ino in victims:
                    try:
                        del table[table.Key(ino, d, 0)]
                    except KeyError:
                        pass
                self.dropped += len(victims)
                self._tracked = (0.0, 0)
                if victims:
                    log.info("sensors: dropped %d rewrite marks of a former root on device %d:%d", len(victims),
                             dev >> 20, dev & 0xFFFFF)
            except Exception as e:  # noqa: BLE001 - the program was unloaded under us
                log.warning("sensors: sweeping rewrite marks failed: %s", e)


def _snapshot(table: Any) -> list[tuple[int, int, int]]:
    """Every mark as (dev, ino, marked_at), read in batches where the kernel can."""
    try:
        return [(k.dev, k.ino, v.value) for k, v in table.items_lookup_batch()]
    except Exception:  # noqa: BLE001 - no batch ops (old kernel): one key at a time
        return [(k.dev, k.ino, v.value) for k, v in table.items()]
