"""The detector on events whose file could not be hashed (issue 13): an empty sha256 is
never the learned binary, a skipped or stalled hash is said, and what is ordinary (a
device, a big data file) is not alerted. Through a real enforcer (support/rig.py)."""

from __future__ import annotations

import asyncio

import pytest

from support.rig import FakeEnforcement, Rig
from enforcer.sensors.events import ExecEvent, FileClosedEvent

SHA = "b" * 64


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path / "rig", learn_seconds=3600.0)
    r.enforcement = FakeEnforcement("killed")
    await r.start()
    c = r.container("lone", "lone", "lone", ip="10.6.0.2", lone=True)
    await r.feed(ExecEvent(container_id=c.id, path="/bin/tool", sha256=SHA, binary="/bin/tool"))
    yield r, c
    await r.stop()


async def test_a_learned_path_that_cannot_be_hashed_is_not_the_learned_binary(rig):
    r, c = rig
    p = r.profiles.for_container(c.id).profile
    r.profiles.activate(p)
    await r.feed(ExecEvent(container_id=c.id, path="/bin/tool", sha256="", pid=5,
                           hash_error="over 32 MiB (41943040 bytes)", hash_reason="too_large"))
    (a,) = await r.call("alerts")
    assert (a["kind"], a["severity"], a["rule"], a["subject"]) == ("process", "critical", "profile", "/bin/tool")
    assert a["summary"] == "binary could not be verified at learned path /bin/tool: over 32 MiB (41943040 bytes)"
    assert a["detail"]["learned_sha256"] == SHA and a["detail"]["hash_reason"] == "too_large"
    assert "/bin/tool" in p.suspect_paths  # held back from the kernel's allow-list


async def test_in_protect_mode_an_unverified_binary_is_stopped_like_a_changed_one(rig):
    r, c = rig
    r.profiles.activate(r.profiles.for_container(c.id).profile)
    await r.call("mode", target="lone", mode="protect")
    await r.feed(ExecEvent(container_id=c.id, path="/bin/tool", sha256="", pid=5,
                           hash_error="read stalled after 5 s", hash_reason="stalled"))
    await asyncio.sleep(0.05)
    (a,) = await r.call("alerts")
    assert a["action"] == "killed" and "read stalled after 5 s" in a["summary"]
    assert [name for name, _, _ in r.enforcement.calls] == ["lone"]


async def test_an_unknown_binary_without_hash_says_why(rig):
    r, c = rig
    r.profiles.activate(r.profiles.for_container(c.id).profile)
    await r.feed(ExecEvent(container_id=c.id, path="/tmp/x", sha256="",
                           hash_error="hash queue of this container full (64 waiting)", hash_reason="queue_full"))
    (a,) = await r.call("alerts")
    assert a["summary"] == "unexpected process /tmp/x (binary not hashed: hash queue of this container full (64 waiting))"


async def test_while_learning_an_unhashed_binary_is_learned_unpinned_and_said(rig):
    r, c = rig
    await r.feed(ExecEvent(container_id=c.id, path="/bin/big", sha256="", hash_error="over 32 MiB (1 bytes)",
                           hash_reason="too_large"))
    (a,) = await r.call("alerts")
    assert (a["kind"], a["severity"], a["rule"]) == ("process", "medium", "research:unhashed")
    assert a["summary"] == "binary not hashed: over 32 MiB (1 bytes): /bin/big"
    assert r.profiles.for_container(c.id).profile.processes["/bin/big"] == {""}


async def test_written_files_not_hashed_alert_only_when_someone_works_the_hasher(rig):
    r, c = rig
    r.profiles.activate(r.profiles.for_container(c.id).profile)
    await r.feed(
        FileClosedEvent(container_id=c.id, path="/dev/zero", hash_error="not a regular file (character device)",
                        hash_reason="not_regular"),
        FileClosedEvent(container_id=c.id, path="/data/big.db", hash_error="over 32 MiB", hash_reason="too_large"),
        FileClosedEvent(container_id=c.id, path="/tmp/f1", hash_error="read stalled after 5 s", hash_reason="stalled"),
        FileClosedEvent(container_id=c.id, path="/tmp/f2", hash_error="hash queue of this container full (64 waiting)",
                        hash_reason="queue_full"),
    )
    got = sorted((a["kind"], a["severity"], a["rule"], a["subject"]) for a in await r.call("alerts"))
    assert got == [("file", "medium", "research:unhashed", "unhashed queue_full"),
                   ("file", "medium", "research:unhashed", "unhashed stalled")]
    # A learned binary rewritten past the cap is held back for its next exec.
    await r.feed(FileClosedEvent(container_id=c.id, path="/bin/tool", hash_error="over 32 MiB", hash_reason="too_large"))
    assert "/bin/tool" in r.profiles.for_container(c.id).profile.suspect_paths
