"""The sensors' counters: what `stats`, the `stats` topic and `status` report.

Counts, per sensor: events, losses (ring buffer full, queue full), events suppressed by
the per-container rate caps, repeats dropped in the kernel. The kernel's counts are in
the program's `counters` map (per CPU, summed here); deliveries and queue losses are
counted in user space by the hub, and sampled once a second for the rates.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ..models import SensorStats
from . import layout as L

KERNEL_COUNTERS = 8  # per sensor: emitted, lost, suppressed, deduped, killed, marked, mark lost, rewritten
RATE_WINDOW = 6  # samples (one a second) the rates are computed over: about 5 s


def kernel_counters(bpf: Any) -> dict[str, list[int]]:
    """Per sensor: the KERNEL_COUNTERS slots summed over CPUs (0 unloaded)."""
    out = {name: [0] * KERNEL_COUNTERS for name in L.SENSORS}
    if bpf is None:
        return out
    table = bpf[b"counters"]
    for s, name in enumerate(L.SENSORS):
        for c in range(KERNEL_COUNTERS):
            out[name][c] = int(sum(table[table.Key(s * L.C_SLOTS + c)]))
    return out


class SensorCounters:
    """User-space counts per sensor and their recent rates."""

    def __init__(self) -> None:
        self.delivered = {name: 0 for name in L.SENSORS}
        self.queue_lost = {name: 0 for name in L.SENSORS}
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=16)

    def count(self, sensor: str, delivered: bool) -> None:
        if delivered:
            self.delivered[sensor] += 1
        else:
            self.queue_lost[sensor] += 1

    def sample(self) -> None:
        self._samples.append((time.monotonic(), dict(self.delivered)))
        while len(self._samples) > RATE_WINDOW:
            self._samples.popleft()

    def rates(self) -> dict[str, float]:
        if len(self._samples) < 2:
            return {}
        (t0, a), (t1, b) = self._samples[0], self._samples[-1]
        dt = max(t1 - t0, 1e-6)
        return {k: (b[k] - a[k]) / dt for k in b}

    def stats(self, kernel: dict[str, list[int]], *, loaded: bool, error: str) -> list[SensorStats]:
        rates = self.rates()
        out = []
        for name in L.SENSORS:
            emitted, lost, suppressed, deduped = kernel[name][:4]
            out.append(SensorStats(
                name=name, events=self.delivered[name], lost=lost + self.queue_lost[name],
                rate=round(rates.get(name, 0.0), 2), loaded=loaded, error=error,
                suppressed=suppressed, deduped=deduped, lost_ring=lost, lost_queue=self.queue_lost[name],
            ))
        return out


def stats_result(stats: list[SensorStats], *, queued: int, queue_max: int, hash_skipped: int) -> dict[str, Any]:
    """The `stats` op's answer and the `stats` topic's data."""
    return {"sensors": [s.to_dict() for s in stats], "events_total": sum(s.events for s in stats),
            "lost_total": sum(s.lost for s in stats), "suppressed_total": sum(s.suppressed for s in stats),
            "queued": queued, "queue_max": queue_max, "hash_skipped": hash_skipped}



def rewrite_guard(bpf: Any, kernel: dict[str, list[int]], off_reason: str, *, tracked: int,
                  failing_closed: int) -> dict[str, Any]:
    """The rewrite guard (bpf/common.h): files marked written, marks that could not be
    stored, containers failing closed because of it, execs of allowed paths it held."""
    on = has_table(bpf, "written_inodes")
    return {"on": on, "off_reason": "" if on else (off_reason or "sensors not loaded"),
            "marked": kernel["file"][L.C_MARKED], "marks_lost": kernel["file"][L.C_MARK_LOST],
            "held_execs": kernel["process"][L.C_REWRITTEN], "tracked": tracked if on else 0,
            "failing_closed": failing_closed if on else 0}


def has_table(bpf: Any, name: str) -> bool:
    """Whether the loaded program has map `name` (bcc opens its maps lazily: asking is the
    only way to know; a program built without the rewrite guard has none of its maps)."""
    if bpf is None:
        return False
    try:
        bpf[name.encode()]
    except KeyError:
        return False
    return True
