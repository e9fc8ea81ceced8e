"""Waiting on the real Textual console under its pilot: poll a condition between pauses, so
the app keeps running while the test waits, and fail with what was awaited."""

from __future__ import annotations

import time
from typing import Any, Callable


async def until(pilot: Any, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """predicate()'s first truthy value, polled every 0.1 s of the app's time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
