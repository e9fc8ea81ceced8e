"""Incidents: folding, persistence across restarts, the alerts/alert ops, the `alert` topic
and the CLI (`stockade alerts`, `profile`, `mode`, `relearn`) against a real socket."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys

import pytest

from support.rig import Rig
from enforcer.detect.alerts import FOLD_WINDOW
from enforcer.protocol import ProtocolError
from enforcer.sensors.events import ExecEvent, FileEvent, NetworkEvent
from support.harness import REPO

SHA = "c" * 64


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path / "rig", learn_seconds=0.0)
    r.compose("blog", {"web": {"expose": [{"port": 80}]}, "db": {}})
    await r.start()
    r.web = r.container("blog_web_1", "blog", "web", ip="10.7.0.2")
    r.db = r.container("blog_db_1", "blog", "db", ip="10.7.0.3")
    for c in (r.web, r.db):
        r.profiles.activate(r.profiles.for_container(c.id).profile)
    yield r
    await r.stop()


async def test_repeats_fold_into_one_incident_with_count_and_times(rig):
    await rig.client.subscribe(["alert"])
    t0 = 1_800_000_000.0
    for i in range(50):
        await rig.feed(ExecEvent(time=t0 + i, container_id=rig.web.id, path="/bin/nc", sha256=SHA, pid=100 + i))
    (a,) = await rig.call("alerts")
    assert a["count"] == 50 and a["first_seen"].startswith("2027-01-15T08:00:00") and a["last_seen"].startswith("2027-01-15T08:00:49")
    assert a["detail"]["pid"] == 100  # the first occurrence's detail
    # The topic: the new incident at once, the growing count coalesced (not one event per repeat).
    await asyncio.sleep(0.7)
    events = []
    while (ev := rig.client.next_event_nowait()) is not None:
        events.append(ev)
    counts = [e["data"]["count"] for e in events if e["event"] == "alert"]
    assert counts[0] == 1 and counts[-1] == 50 and len(counts) < 10
    # Other subjects or containers are other incidents; after the fold window a new one opens.
    await rig.feed(ExecEvent(time=t0 + 60, container_id=rig.db.id, path="/bin/nc", sha256=SHA),
                   ExecEvent(time=t0 + 60, container_id=rig.web.id, path="/bin/ls", sha256=SHA),
                   ExecEvent(time=t0 + 49 + FOLD_WINDOW + 1, container_id=rig.web.id, path="/bin/nc", sha256=SHA))
    alerts = await rig.call("alerts")
    assert [(x["container"], x["subject"], x["count"]) for x in alerts] == [
        ("blog_web_1", "/bin/nc", 1), ("blog_web_1", "/bin/ls", 1), ("blog_db_1", "/bin/nc", 1), ("blog_web_1", "/bin/nc", 50)]


async def test_incidents_survive_a_crash_and_keep_folding_after_it(rig):
    await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/nc", sha256=SHA),
                   ExecEvent(container_id=rig.web.id, path="/bin/nc", sha256=SHA),
                   FileEvent(container_id=rig.db.id, op="create", path="/etc/evil"))
    before = await rig.call("alerts")
    await rig.crash()
    await rig.start()
    after = await rig.call("alerts")
    assert [(a["id"], a["kind"], a["count"], a["summary"]) for a in after] == \
        [(a["id"], a["kind"], a["count"], a["summary"]) for a in before]
    await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/nc", sha256=SHA),
                   ExecEvent(container_id=rig.web.id, path="/bin/ls", sha256=SHA))
    alerts = {a["subject"]: a for a in await rig.call("alerts")}
    assert alerts["/bin/nc"]["count"] == 3 and alerts["/bin/nc"]["id"] == before[-1]["id"]
    assert alerts["/bin/ls"]["id"] > max(a["id"] for a in before)  # ids go on (past the reserved block)
    status = await rig.call("status")
    assert status["alerts"] == {"low": 0, "medium": 0, "high": 3, "critical": 0}
    containers = {c["name"]: c for c in await rig.call("containers")}
    assert containers["blog_web_1"]["alerts"] == 2 and containers["blog_db_1"]["alerts"] == 1
    apps = {a["name"]: a for a in await rig.call("apps")}
    assert apps["blog"]["alerts"] == 3


async def test_an_incident_id_lost_in_a_crash_is_never_handed_out_again(rig):
    await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/nc", sha256=SHA))
    await asyncio.sleep(0.6)  # committed
    await rig.stop_writes()  # the crash comes before the next write-behind batch...
    await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/ls", sha256=SHA))
    seen = {a["subject"]: a["id"] for a in await rig.call("alerts")}  # ...and after a console saw this
    await rig.crash()
    await rig.start()
    assert [a["subject"] for a in await rig.call("alerts")] == ["/bin/nc"]
    await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/cat", sha256=SHA))
    new = {a["subject"]: a["id"] for a in await rig.call("alerts")}
    assert new["/bin/cat"] > seen["/bin/ls"], (seen, new)
    # A clean restart hands the unused reserved ids back: no gap.
    await rig.restart()
    await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/id", sha256=SHA))
    assert {a["subject"]: a["id"] for a in await rig.call("alerts")}["/bin/id"] == new["/bin/cat"] + 1


async def test_alerts_op_filters_and_alert_op(rig):
    await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/nc", sha256=SHA),  # process high
                   FileEvent(container_id=rig.db.id, op="create", path="/srv/x"),  # file medium
                   NetworkEvent(container_id=rig.db.id, direction="listen", local_port=9999))  # network high
    await asyncio.sleep(0.4)  # some are stored, some only in memory: the answer is the same
    await rig.feed(FileEvent(container_id=rig.web.id, op="read", path="/etc/shadow"))  # file high
    ids = [a["id"] for a in await rig.call("alerts")]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4
    assert [a["kind"] for a in await rig.call("alerts", kind="file")] == ["file", "file"]
    assert {a["severity"] for a in await rig.call("alerts", severity="high")} == {"high"}
    assert len(await rig.call("alerts", severity="medium")) == 4
    assert {a["container"] for a in await rig.call("alerts", container="blog_db_1")} == {"blog_db_1"}
    assert {a["container"] for a in await rig.call("alerts", container=rig.web.id[:12])} == {"blog_web_1"}
    assert await rig.call("alerts", app="other") == []
    assert [a["id"] for a in await rig.call("alerts", since=ids[2])] == ids[:2]
    assert len(await rig.call("alerts", limit=1)) == 1
    one = await rig.call("alert", alert_id=ids[-1])
    assert one["subject"] == "/bin/nc"
    for bad in ({"kind": "nope"}, {"severity": "urgent"}, {"limit": 0}, {"since": "x"}):
        with pytest.raises(ProtocolError) as err:
            await rig.call("alerts", **bad)
        assert err.value.code == "bad_request"
    with pytest.raises(ProtocolError) as err:
        await rig.call("alert", alert_id=99999)
    assert err.value.code == "not_found"


async def test_raise_alert_and_set_action_for_other_layers(rig):
    book = rig.alerts
    a = book.raise_alert(rig.web, "network", "high", "blocked by hand", {"peer": "10.0.0.1"}, "block 10.0.0.1",
                         "enforce:block", action="blocked")
    assert a.action == "blocked" and a.id >= 1
    b = book.raise_alert(rig.web, "process", "medium", "x", {}, "/bin/x", "profile")
    assert book.set_action(b.id, "frozen").action == "frozen"
    with pytest.raises(ValueError):
        book.raise_alert(rig.web, "nonsense", "high", "x", {}, "s", "r")
    await asyncio.sleep(0.8)
    row = sqlite3.connect(rig.settings_args["db"]).execute("SELECT action FROM alerts WHERE id = ?", (b.id,)).fetchone()
    assert row[0] == "frozen"


async def _cli(rig, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console.cli", "--socket", rig.settings_args["socket"], *args,
        cwd=str(REPO), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_alerts_profile_mode_relearn(rig):
    await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/nc\x1b[31m", sha256=SHA))
    code, out, _ = await _cli(rig, "alerts", "--json")
    assert code == 0
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 1 and lines[0]["kind"] == "process"  # one JSON object per line
    code, out, _ = await _cli(rig, "alerts")
    assert code == 0 and "unexpected process /bin/nc\\x1b[31m" in out and "\x1b" not in out
    code, out, _ = await _cli(rig, "profile", "blog_web_1")
    assert code == 0 and "listener (1)" in out and "tcp/80" in out
    code, out, _ = await _cli(rig, "profile", "blog_web_1", "--json")
    assert json.loads(out)["profile"]["state"] == "active"
    code, out, _ = await _cli(rig, "mode", "blog", "protect", "--json")
    assert json.loads(out) == {"target": "blog", "scope": "app", "mode": "protect"}
    code, out, _ = await _cli(rig, "mode", "blog_db_1", "learn", "--container")
    assert code == 0 and out.strip() == "container blog_db_1: mode learn"
    code, out, _ = await _cli(rig, "relearn", "blog", "--json")
    assert sorted(json.loads(out)["profiles"]) == sorted({rig.profiles.for_container(c.id).profile.id
                                                          for c in (rig.web, rig.db)})
    code, out, err = await _cli(rig, "profile", "nosuch")
    assert code != 0 and out == "" and err.count("\n") == 1 and "no container" in err


async def test_cli_follow_prints_listed_then_new_incidents(rig):
    await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/first", sha256=SHA))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console.cli", "--socket", rig.settings_args["socket"], "alerts", "--follow", "--json",
        "--kind", "process", cwd=str(REPO), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert first["subject"] == "/bin/first"
        await rig.feed(FileEvent(container_id=rig.web.id, op="create", path="/srv/not-shown"),
                       ExecEvent(container_id=rig.web.id, path="/bin/second", sha256=SHA))
        second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert second["subject"] == "/bin/second"
    finally:
        proc.kill()
        await proc.wait()
