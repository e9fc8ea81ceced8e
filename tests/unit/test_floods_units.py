"""Burst folding on synthetic events through the real alert book and detector (Docker and
the kernel faked at their boundary, tests/support/rig.py): many distinct subjects fold
into one burst incident, repeats of an early subject still fold into their own, and in
protect mode every subject folded into a burst is still answered."""

from __future__ import annotations

import pytest

from support.rig import FakeEnforcement, Rig
from enforcer.detect.alerts import BURST_NEW, BURST_SUBJECT
from enforcer.sensors.events import ExecEvent

SHA = "b" * 64


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path / "rig", learn_seconds=3600.0)
    r.enforcement = FakeEnforcement("killed")
    await r.start()
    yield r
    await r.stop()


async def _active(rig, name):
    c = rig.container(name, name, name, ip="10.9.0.2", lone=True)
    await rig.feed(ExecEvent(container_id=c.id, path="/bin/app", sha256=SHA))
    rig.profiles.activate(rig.profiles.for_container(c.id).profile)
    return c


async def test_many_distinct_programs_fold_into_one_burst_incident(rig):
    c = await _active(rig, "floody")
    await rig.feed(*[ExecEvent(container_id=c.id, path=f"/tmp/x{i}", sha256=SHA, pid=100 + i) for i in range(500)])
    await rig.feed(ExecEvent(container_id=c.id, path="/tmp/x0", sha256=SHA))  # an early subject again
    incidents = [a for a in await rig.call("alerts", limit=10_000) if a["kind"] == "process"]
    assert len(incidents) == BURST_NEW + 1
    [burst] = [a for a in incidents if a["subject"] == BURST_SUBJECT]
    assert burst["count"] == 500 - BURST_NEW and burst["rule"] == "burst" and burst["severity"] == "high"
    assert burst["detail"]["latest"] == "unexpected process /tmp/x499"
    assert burst["detail"]["sample"][-1] == "/tmp/x499" and len(burst["detail"]["sample"]) == 20
    [first] = [a for a in incidents if a["subject"] == "/tmp/x0"]
    assert first["count"] == 2
    folding = (await rig.call("status"))["alert_folding"]
    assert folding["raised"] == 501 and folding["incidents_opened"] == BURST_NEW + 1
    assert folding["burst_folded"] == 500 - BURST_NEW


async def test_protect_answers_every_subject_folded_into_a_burst(rig):
    c = await _active(rig, "protected")
    await rig.call("mode", target=c.name, mode="protect")
    await rig.feed(*[ExecEvent(container_id=c.id, path=f"/tmp/y{i}", sha256=SHA, pid=200 + i) for i in range(60)])
    await rig.settle()
    pids = sorted(ev.pid for _, ev, _ in rig.enforcement.calls)
    assert pids == list(range(200, 260))
    [burst] = [a for a in await rig.call("alerts") if a["subject"] == BURST_SUBJECT]
    assert burst["count"] == 60 - BURST_NEW and burst["action"] == "killed"
