"""The outputs part: every incident the alert book publishes, sent to the pipelines people
already run (HTTP, JSON-lines files, syslog), at least once (docs/outputs.md).

The root hands every `alert` publication to `offer()`. For each output whose minimum
severity it meets, `offer` queues one outbox row through the store's write-behind queue and
wakes that output's worker: it never waits, never does I/O, so detection and the socket
never wait for an endpoint. Each output has its own worker task: it reads its rows in id
order, encodes them, sends them, and deletes them once the receiver took them. A failure is
retried with exponential back-off (capped at BACKOFF_MAX); the rows stay in SQLite, so a
receiver down for an hour, or an enforcer restarted meanwhile, loses nothing.

The outbox is bounded per output (MAX_OUTBOX rows): beyond it the oldest rows are dropped
and counted (`dropped`, in `stockade outputs list` and `stockade status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from ..models import SEVERITIES
from ..store.outputs import OutputConfig, OutputsRepo
from ..threads import in_daemon_thread
from . import targets

log = logging.getLogger(__name__)

MAX_OUTBOX = 100_000  # rows per output
BATCH = 200  # rows read and sent per round
BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
GATHER = 0.25  # seconds a woken worker waits before it reads: rows arrive in batches, and
# the store's write-behind loop (every 0.2 s) has committed them by then

_RANK = {s: i for i, s in enumerate(SEVERITIES)}


class Output:
    """One output: its settings, its target and its delivery state."""

    def __init__(self, config: OutputConfig, target: targets.Target) -> None:
        self.config = config
        self.target = target
        self.backlog = 0  # rows in the outbox (committed or queued)
        self.last_id = 0  # largest outbox id delivered (or dropped) by this process
        self.delivered = config.delivered
        self.dropped = config.dropped
        self.failures = 0  # consecutive failed attempts
        self.last_error = ""
        self.last_delivery = 0.0
        self.retry_at = 0.0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"name": c.name, "url": c.url, "format": c.format, "min_severity": c.min_severity,
                "headers": sorted(c.headers), "created": c.created, "pending": self.backlog,
                "delivered": self.delivered, "dropped": self.dropped, "failures": self.failures,
                "error": self.last_error, "last_delivery": self.last_delivery or None,
                "retry_in": max(0.0, round(self.retry_at - time.time(), 1)) if self.failures else 0.0,
                "deadline": self.target.deadline if self.target.scheme == "http" else None}


class OutputManager:
    def __init__(self, repo: OutputsRepo, flush: Callable[[], Any], clock: Callable[[], float] = time.time) -> None:
        """`flush()`: commit the store's write-behind queue (a worker calls it before it reads
        rows it was woken for)."""
        self.repo = repo
        self.flush = flush
        self.clock = clock
        self.outputs: dict[str, Output] = {}
        self.offered = 0
        self._running = False

    # -- component ------------------------------------------------------------------------
    async def start(self) -> None:
        backlog = await self.repo.backlog()
        for config in await self.repo.all():
            try:
                target = targets.parse(config.url, config.headers, config.deadline)
            except ValueError as e:
                log.error("output %s: %s; not sending", config.name, e)
                continue
            out = Output(config, target)
            out.backlog = backlog.get(config.name, (0, 0))[0]
            self.outputs[config.name] = out
        self._running = True
        for out in self.outputs.values():
            self._start_worker(out)

    async def stop(self) -> None:
        self._running = False
        for out in list(self.outputs.values()):
            await self._stop_worker(out)

    def status(self) -> dict[str, Any]:
        outs = self.outputs.values()
        return {"outputs": {"configured": len(self.outputs), "pending": sum(o.backlog for o in outs),
                            "delivered": sum(o.delivered for o in outs), "dropped": sum(o.dropped for o in outs),
                            "failing": sorted(o.config.name for o in outs if o.failures)}}

    # -- the alert path -------------------------------------------------------------------
    def offer(self, topic: str, data: dict[str, Any]) -> None:
        """A publication of the root; `alert` ones are queued for every output that wants them."""
        if topic != "alert" or not self.outputs:
            return
        rank = _RANK.get(data.get("severity", ""), 0)
        text: str | None = None
        now = self.clock()
        for out in self.outputs.values():
            if rank < _RANK.get(out.config.min_severity, 0):
                continue
            if text is None:
                text = json.dumps(data, separators=(",", ":"))
            self.offered += 1
            if out.backlog >= MAX_OUTBOX:
                excess = out.backlog - MAX_OUTBOX + 1
                self.repo.drop_oldest(out.config.name, excess, out.last_id)
                out.backlog -= excess
                out.dropped += excess
                if out.dropped == excess or out.dropped % 10_000 < excess:
                    log.warning("output %s: outbox full (%d); dropped the oldest (%d so far)", out.config.name,
                                MAX_OUTBOX, out.dropped)
            self.repo.queue(out.config.name, now, text)
            out.backlog += 1
            out.wake.set()

    # -- managing -------------------------------------------------------------------------
    async def add(self, config: OutputConfig) -> Output:
        target = targets.parse(config.url, config.headers, config.deadline)
        await self.repo.add(config)
        out = Output(config, target)
        self.outputs[config.name] = out
        if self._running:
            self._start_worker(out)
        return out

    async def remove(self, name: str) -> None:
        out = self.outputs.pop(name)
        await self._stop_worker(out)
        await self.repo.remove(name)

    async def test(self, name: str, alert: dict[str, Any]) -> dict[str, Any]:
        """Send one test incident now, outside the outbox; the result says how it went."""
        out = self.outputs[name]
        target = targets.parse(out.config.url, out.config.headers, out.config.deadline)  # its own connection
        started = time.monotonic()
        try:
            await _send(target, [target.prepare(out.config.format, alert)])
            return {"name": name, "delivered": True, "error": "", "seconds": round(time.monotonic() - started, 3)}
        except targets.DeliveryError as e:
            return {"name": name, "delivered": False, "error": str(e), "seconds": round(time.monotonic() - started, 3)}
        finally:
            await in_daemon_thread(target.close, name="stockade-output-close")

    # -- delivery -------------------------------------------------------------------------
    def _start_worker(self, out: Output) -> None:
        out.task = asyncio.create_task(self._worker(out), name=f"output-{out.config.name}")
        if out.backlog:
            out.wake.set()

    async def _stop_worker(self, out: Output) -> None:
        if out.task is not None:
            out.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await out.task
            out.task = None
        await in_daemon_thread(out.target.close, name="stockade-output-close")

    async def _worker(self, out: Output) -> None:
        name = out.config.name
        backoff = BACKOFF_START
        while True:
            await out.wake.wait()
            await asyncio.sleep(GATHER)
            out.wake.clear()
            await self.flush()  # what it was woken for is committed, not only queued (usually a no-op by now)
            while True:
                rows = await self.repo.pending(name, out.last_id, BATCH)
                if not rows:
                    break
                try:
                    # Encoding on the loop, one incident at a time (detection runs in between);
                    # the blocking I/O in a thread.
                    bodies = []
                    for _, _, text in rows:
                        bodies.append(out.target.prepare(out.config.format, text))
                        await asyncio.sleep(0)
                    await _send(out.target, bodies)
                    sent = len(rows)
                    error = ""
                except targets.DeliveryError as e:
                    sent = getattr(out.target, "sent", 0)
                    error = str(e)
                except Exception as e:
                    log.exception("output %s: sending failed", name)
                    sent, error = getattr(out.target, "sent", 0), f"{type(e).__name__}: {e}"
                if sent:
                    ids = [i for i, _, _ in rows[:sent]]
                    self.repo.delivered(name, ids)
                    out.last_id = ids[-1]
                    out.backlog = max(0, out.backlog - sent)
                    out.delivered += sent
                    out.last_delivery = self.clock()
                if not error:
                    if out.failures:
                        log.warning("output %s: delivering again after %d failed attempts", name, out.failures)
                    out.failures, out.last_error, backoff = 0, "", BACKOFF_START
                    continue
                out.failures += 1
                out.last_error = error
                if out.failures == 1:
                    log.warning("output %s: %s; retrying with back-off (the outbox keeps the alerts)", name, error)
                out.retry_at = time.time() + backoff
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)


async def _send(target: targets.Target, bodies: list[bytes]) -> None:
    """Blocking calls in a thread of their own, for every scheme (HTTP too: see Target.send):
    a receiver that answers slowly holds that thread, never the executor hashing and Docker
    calls share, and a stopped worker abandons it."""
    await in_daemon_thread(target.send, bodies, name="stockade-output-send")
