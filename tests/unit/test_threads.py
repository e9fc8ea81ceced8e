"""enforcer.threads.in_daemon_thread: a stuck call never holds the loop, and a result that
arrives after nobody waits is handed to its cleanup (a loaded BPF object must not leak)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from enforcer.threads import in_daemon_thread


async def test_returns_the_result_and_raises_the_exception() -> None:
    assert await in_daemon_thread(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        await in_daemon_thread(lambda: 1 / 0)


async def test_a_result_that_arrives_after_cancel_goes_to_on_abandoned() -> None:
    release, cleaned = threading.Event(), threading.Event()
    seen: list[object] = []
    resource = object()

    def slow() -> object:
        release.wait(5)
        return resource

    def cleanup(value: object) -> None:
        seen.append(value)
        cleaned.set()

    task = asyncio.ensure_future(in_daemon_thread(slow, on_abandoned=cleanup))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert await asyncio.to_thread(cleaned.wait, 5)
    assert seen == [resource]


async def test_a_result_that_is_awaited_is_not_cleaned_up() -> None:
    cleaned: list[object] = []
    assert await in_daemon_thread(lambda: "loaded", on_abandoned=cleaned.append) == "loaded"
    await asyncio.sleep(0.05)
    assert cleaned == []
