"""RingReader: the sensors' poll thread.

Drains the per-sensor ring buffers every `poll_interval` seconds, decodes records into
typed events (sensors/decode.py, sensors/events.py) and hands them to the event loop in
batches (`on_batch(list[Decoded])`, called on the loop). Under a burst (`BUSY_BATCH`
records in one poll) it reads again sooner rather than let the rings fill up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable

from .decode import Decoded, Decoder

log = logging.getLogger(__name__)

RING_BUFFERS: dict[str, str] = {
    "process": "process_events", "network": "network_events", "dns": "dns_events",
    "file": "file_events", "syscall": "syscall_events",
}
BUSY_BATCH = 256  # records in one poll above which the next poll comes sooner


class RingReader:
    def __init__(self, decoder: Decoder, on_batch: Callable[[list[Decoded]], None], *,
                 poll_interval: float = 0.02) -> None:
        self.decoder = decoder
        self.on_batch = on_batch
        self.poll_interval = poll_interval
        self._batch: list[Decoded] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, bpf: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Open every ring buffer of the loaded program and start polling them."""
        for name, rb in RING_BUFFERS.items():
            bpf[rb.encode()].open_ring_buffer(self._make_callback(name))
        self._thread = threading.Thread(target=self._poll, args=(bpf, loop), name="stockade-sensors",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the poll thread to end (join() waits for it)."""
        self._stopping.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

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

    def _poll(self, bpf: Any, loop: asyncio.AbstractEventLoop) -> None:
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
                    loop.call_soon_threadsafe(self.on_batch, batch)
                except RuntimeError:
                    return  # the loop has closed
            # Under a burst, read again at once rather than let the rings fill up.
            self._stopping.wait(self.poll_interval / 10 if busy else self.poll_interval)
