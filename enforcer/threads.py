"""Blocking calls that may never return (NSS lookups, files named by container labels).

`asyncio.to_thread` would run them on the default executor: a call stuck there keeps a
worker that hashing and Docker calls need, and the interpreter waits for it at exit.
`in_daemon_thread` gives each call a daemon thread of its own; callers bound how many
they start and how long they wait.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")


async def in_daemon_thread(fn: Callable[..., T], *args: Any, name: str = "stockade-blocking",
                           on_abandoned: Callable[[T], Any] | None = None) -> T:
    """fn(*args) in a daemon thread; cancelling the await abandons the thread, never the loop.

    `on_abandoned(result)` runs (in a daemon thread of its own) when the call succeeds after
    nobody waits any more, for results that hold resources (a loaded BPF object)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            if ok and value is not None and on_abandoned is not None:
                threading.Thread(target=on_abandoned, args=(value,), name=f"{name}-cleanup", daemon=True).start()
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        try:
            ok, value = True, fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            ok, value = False, e
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:
            pass  # the loop closed while the call was stuck

    threading.Thread(target=run, name=name, daemon=True).start()
    return await fut
