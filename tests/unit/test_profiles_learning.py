"""The end of learning and its honesty: a profile leaves learning once its minimum time has
passed and it has been stable; what it may have missed is recorded as gaps."""

from __future__ import annotations

import asyncio
import time

from enforcer.sensors.events import ExecEvent
from support.rig import Rig

SHA = "a" * 64


async def _wait_state(rig: Rig, c, state: str, timeout: float = 10.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if rig.profiles.for_container(c.id).profile.state == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"profile not {state} after {timeout} s")


async def test_learning_waits_until_the_profile_is_stable(tmp_path):
    rig = Rig(tmp_path / "rig", learn_seconds=0.5, learn_stable_seconds=1.0)
    await rig.start()
    try:
        c = rig.container("busy", "busy", "busy", ip="10.9.0.2", lone=True)
        deadline = time.monotonic() + 1.5
        i = 0
        while time.monotonic() < deadline:  # a new program every 0.3 s: never stable for 1 s
            i += 1
            await rig.feed(ExecEvent(container_id=c.id, path=f"/bin/step{i}", sha256=SHA))
            await asyncio.sleep(0.3)
        p = rig.profiles.for_container(c.id).profile
        assert p.state == "learning"  # the minimum (0.5 s) is long past
        view = await rig.call("container", target=c.name)
        assert view["learning_reason"].startswith("not stable yet") and view["stable_for"] < 1.0
        await _wait_state(rig, c, "active")
        assert p.activated - p.last_change >= 1.0  # it went active only after the quiet window
        assert p.complete and p.gaps == []
    finally:
        await rig.stop()


async def test_a_profile_that_never_settles_ends_with_a_gap(tmp_path):
    rig = Rig(tmp_path / "rig", learn_seconds=0.3, learn_stable_seconds=1.0)
    await rig.start()
    try:
        c = rig.container("churn", "churn", "churn", ip="10.9.0.3", lone=True)
        p = rig.profiles.for_container(c.id).profile
        i = 0
        start = time.monotonic()
        while p.state == "learning" and time.monotonic() - start < 10:
            i += 1
            await rig.feed(ExecEvent(container_id=c.id, path=f"/bin/churn{i}", sha256=SHA))
            await asyncio.sleep(0.2)
        assert p.state == "active" and not p.complete
        assert any(g.startswith("still changing when learning had to end") for g in p.gaps)
        profile = (await rig.call("profile", target=c.name))["profile"]
        assert profile["complete"] is False and profile["gaps"] == p.gaps
    finally:
        await rig.stop()


async def test_a_restart_while_learning_and_a_container_older_than_the_enforcer_are_gaps(tmp_path):
    rig = Rig(tmp_path / "rig", learn_seconds=3600.0)
    await rig.start()
    try:
        old = rig.container("old", "old", "old", ip="10.9.0.4", lone=True)
        old.started_at = time.time() - 3600  # running long before this enforcer
        fresh = rig.container("fresh", "fresh", "fresh", ip="10.9.0.5", lone=True)
        fresh.started_at = time.time() + 1
        await rig.restart()  # both re-attach to a new enforcer; both profiles were learning
        old_p = rig.profiles.for_container(old.id).profile
        fresh_p = rig.profiles.for_container(fresh.id).profile
        assert any("restart" in g for g in old_p.gaps) and any("restart" in g for g in fresh_p.gaps)
        assert any("started before the enforcer" in g for g in old_p.gaps)
        assert not any("started before the enforcer" in g for g in fresh_p.gaps)
        view = await rig.call("container", target="old")
        assert view["profile_complete"] is False and view["profile_gaps"] == old_p.gaps
        # Stored: another restart still knows.
        assert await rig.e.store.db.flush()
        await rig.restart()
        assert set(old_p.gaps) <= set(rig.profiles.for_container(old.id).profile.gaps)
    finally:
        await rig.stop()
