"""Alert outputs end to end (docs/outputs.md): incidents raised by the real detector and alert
book (the in-process rig: real daemon, real SQLite, real unix socket) reach a real HTTP receiver
and a real rsyslogd on 127.0.0.1 exactly as encoded; a receiver that is down for a while, across
an enforcer restart, loses nothing; a full outbox drops the oldest and says so; a slow receiver
does not slow detection or the socket. The last test drives a real `stockade-enforcer
--no-sensors` process through the CLI (it creates its nftables table: hence the marker)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from support.harness import REPO, EnforcerProcess
from support.receivers import HttpReceiver, Rsyslog
from support.rig import Rig

from enforcer.outputs import formats
from enforcer.outputs import manager as outputs_manager
from enforcer.protocol import ProtocolError
from enforcer.sensors.events import ExecEvent, FileEvent, NetworkEvent

pytestmark = [pytest.mark.nftables]

SHA = "c" * 64
SYSLOG = re.compile(r"<(\d+)>1 (\S+) (\S+) stockade (\d+) alert (\[stockade@32473 [^\]]*\]) (\{.*\})")


@pytest.fixture
async def rig(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs_manager, "BACKOFF_START", 0.1)
    monkeypatch.setattr(outputs_manager, "BACKOFF_MAX", 0.4)
    r = Rig(tmp_path / "rig", learn_seconds=0.0)
    r.compose("blog", {"web": {"expose": [{"port": 80}]}, "db": {}})
    await r.start()
    r.web = r.container("blog_web_1", "blog", "web", ip="10.7.0.2")
    r.db = r.container("blog_db_1", "blog", "db", ip="10.7.0.3")
    for c in (r.web, r.db):
        r.profiles.activate(r.profiles.for_container(c.id).profile)
    yield r
    await r.stop()


@pytest.fixture
def http():
    h = HttpReceiver().up()
    yield h
    h.down()


@pytest.fixture
def rsyslog(tmp_path):
    s = Rsyslog(tmp_path / "rsyslog").start()
    yield s
    s.stop()


async def wait_until(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def scenario(r):
    """Distinct incidents of several kinds and severities, and repeats that grow a count."""
    events = [ExecEvent(container_id=r.web.id, path=f"/bin/tool{i}", sha256=SHA, pid=100 + i, argv=[f"tool{i}", "-x"])
              for i in range(5)]
    events += [ExecEvent(container_id=r.web.id, path="/bin/tool0", sha256=SHA, pid=200 + i) for i in range(3)]
    events += [FileEvent(container_id=r.db.id, op="write", path="/etc/shadow", sensitive=True, pid=300),
               NetworkEvent(container_id=r.web.id, direction="out", local_ip="10.7.0.2", local_port=40000,
                            remote_ip="10.7.0.3", remote_port=5432, remote_container_id=r.db.id, pid=301)]
    return events


async def published(r, seconds=0.7):
    """The `alert` events the rig's client received (after the alert book's update interval)."""
    await asyncio.sleep(seconds)
    out = []
    while (ev := r.client.next_event_nowait()) is not None:
        if ev.get("event") == "alert":
            out.append(ev["data"])
    return out


async def test_every_alert_reaches_http_and_rsyslog_exactly_as_encoded(rig, http, rsyslog, tmp_path):
    outs = {
        "hook-json": (http.url + "/json", "json", "low", {"Authorization": "Bearer t0k3n", "X-Team": "sec"}),
        "hook-falco": (http.url + "/falco", "falco", "low", {}),
        "hook-ocsf-crit": (http.url + "/ocsf", "ocsf", "critical", {}),
        "syslog-udp": (f"syslog://127.0.0.1:{rsyslog.udp}", "json", "low", {}),
        "syslog-tcp": (f"syslog+tcp://127.0.0.1:{rsyslog.tcp}", "falco", "low", {}),
        "file": (f"file://{tmp_path}/out/alerts.jsonl", "ocsf", "low", {}),
    }
    for name, (url, fmt, sev, headers) in outs.items():
        added = await rig.call("outputs.add", name=name, url=url, format=fmt, min_severity=sev, headers=headers)
        assert added["name"] == name and added["pending"] == 0
    await rig.client.subscribe(["alert"])
    await rig.feed(*scenario(rig))
    alerts = await published(rig)
    assert {a["severity"] for a in alerts} >= {"critical", "high"} and any(a["count"] > 1 for a in alerts)
    crit = [a for a in alerts if a["severity"] == "critical"]
    assert 0 < len(crit) < len(alerts)
    n_http = 2 * len(alerts) + len(crit)
    await wait_until(lambda: len(http.bodies) >= n_http, what="http deliveries")
    await wait_until(lambda: len(rsyslog.lines()) >= 2 * len(alerts), what="rsyslog lines")
    await asyncio.sleep(0.3)  # nothing more arrives
    assert len(http.bodies) == n_http
    # The receiver sees, per output and in order, exactly the encodings of what was published.
    json_bodies = [b for b, h in zip(http.json(), http.headers) if h.get("authorization") == "Bearer t0k3n"]
    assert json_bodies == alerts
    assert all(h["content-type"] == "application/json" and h["x-team"] == "sec"
               for h in http.headers if "authorization" in h)
    falco = [b for b in http.json() if "output_fields" in b]
    assert falco == [formats.encode_falco(a) for a in alerts]
    ocsf = [b for b in http.json() if b.get("class_uid") == 2004]
    assert ocsf == [formats.encode_ocsf(a) for a in crit]
    # rsyslog: one RFC 5424 message per publication on each transport, the payload as MSG.
    udp, tcp = [], []
    for line in rsyslog.lines():
        m = SYSLOG.fullmatch(line)
        assert m, line
        payload = json.loads(m.group(6))
        (tcp if "output_fields" in payload else udp).append((int(m.group(1)), m.group(3), payload))
    assert [p for _, _, p in udp] == alerts
    assert [p for _, _, p in tcp] == [formats.encode_falco(a) for a in alerts]
    assert [pri for pri, _, _ in udp] == [16 * 8 + {"critical": 2, "high": 3, "medium": 4, "low": 5}[a["severity"]]
                                          for a in alerts]
    assert {host for _, host, _ in udp + tcp} == {"test-host"}
    # The file: JSON lines, OCSF.
    await wait_until(lambda: (tmp_path / "out/alerts.jsonl").exists()
                     and len((tmp_path / "out/alerts.jsonl").read_text().splitlines()) == len(alerts), what="file")
    lines = [json.loads(x) for x in (tmp_path / "out/alerts.jsonl").read_text().splitlines()]
    assert lines == [formats.encode_ocsf(a) for a in alerts]
    listed = {o["name"]: o for o in await rig.call("outputs")}
    assert listed["hook-json"]["delivered"] == len(alerts) and listed["hook-ocsf-crit"]["delivered"] == len(crit)
    assert all(o["pending"] == 0 and o["failures"] == 0 for o in listed.values())
    assert listed["hook-json"]["headers"] == ["Authorization", "X-Team"]  # names only: values may be secrets
    status = await rig.call("status")
    assert status["outputs"]["configured"] == 6 and status["outputs"]["dropped"] == 0


async def test_a_receiver_down_across_a_crash_loses_nothing(rig, http):
    await rig.call("outputs.add", name="hook", url=http.url, format="json")
    http.status = 503  # first it refuses what it gets
    await rig.client.subscribe(["alert"])
    await rig.feed(*[ExecEvent(container_id=rig.web.id, path=f"/bin/a{i}", sha256=SHA) for i in range(15)])
    await wait_until(lambda: "HTTP 503" in rig.e.outputs.outputs["hook"].last_error, what="a 503")
    http.down()  # then it is gone
    await rig.feed(*[ExecEvent(container_id=rig.web.id, path=f"/bin/a{i}", sha256=SHA) for i in range(15, 19)])
    first = await published(rig)
    await wait_until(lambda: "Connection refused" in rig.e.outputs.outputs["hook"].last_error, what="refused")
    (o,) = await rig.call("outputs")
    assert o["pending"] == len(first) and o["delivered"] == 0 and o["failures"] >= 2
    assert (await rig.call("status"))["outputs"]["failing"] == ["hook"]
    # The enforcer dies (kill -9: only what the write-behind loop committed survives) while the
    # receiver is still down: the outbox is in SQLite.
    await rig.crash()
    await rig.start()
    await rig.client.subscribe(["alert"])
    await rig.feed(*[ExecEvent(container_id=rig.web.id, path=f"/bin/b{i}", sha256=SHA) for i in range(10)])
    # (b0..b9 are a second container's worth of new incidents only after the burst window;
    # here they fold as the alert book decides: what counts is what was published.)
    second = await published(rig)
    assert (await rig.call("outputs"))[0]["pending"] == len(first) + len(second)
    http.status = 200
    http.up()
    expected = first + second
    await wait_until(lambda: len(http.bodies) >= len(expected), timeout=20, what="the backlog")
    await asyncio.sleep(0.5)
    got = http.json()
    keys = [(b["id"], b["count"]) for b in got]
    # Nothing lost, in order; duplicates only as at-least-once allows (none on a clean path).
    assert sorted(set(keys)) == sorted({(a["id"], a["count"]) for a in expected})
    assert got == expected
    (o,) = await rig.call("outputs")
    assert o["pending"] == 0 and o["failures"] == 0 and o["delivered"] == len(expected)


async def test_a_full_outbox_drops_the_oldest_and_counts_them(rig, http, monkeypatch):
    monkeypatch.setattr(outputs_manager, "MAX_OUTBOX", 10)
    await rig.call("outputs.add", name="hook", url=http.url, format="json")
    http.down()
    await rig.client.subscribe(["alert"])
    await rig.feed(*[ExecEvent(container_id=rig.web.id, path=f"/bin/c{i}", sha256=SHA) for i in range(18)])
    alerts = await published(rig)
    assert len(alerts) == 18  # under the alert book's burst threshold: one publication each
    status = await rig.call("status")
    assert status["outputs"]["dropped"] == 8 and status["outputs"]["pending"] == 10
    http.up()
    await wait_until(lambda: len(http.bodies) >= 10, what="the newest ten")
    await asyncio.sleep(0.5)
    assert http.json() == alerts[-10:]
    (o,) = await rig.call("outputs")
    assert o["dropped"] == 8 and o["delivered"] == 10


async def test_a_slow_receiver_slows_neither_detection_nor_the_socket(rig, http):
    http.delay = 3.0
    await rig.call("outputs.add", name="slow", url=http.url, format="falco")
    t0 = time.monotonic()
    await rig.feed(*[ExecEvent(container_id=rig.web.id, path=f"/bin/d{i}", sha256=SHA) for i in range(200)])
    fed = time.monotonic() - t0
    t1 = time.monotonic()
    await rig.call("ping")
    pinged = time.monotonic() - t1
    assert fed < 2.0 and pinged < 0.5, (fed, pinged)
    assert rig.alerts.raised == 200
    assert (await rig.call("outputs"))[0]["pending"] > 0  # the receiver is still busy with the first


async def test_a_receiver_that_trickles_its_answer_fails_that_send_at_its_deadline(rig, http):
    """A receiver that answers one byte a second (a real HTTP server on 127.0.0.1, a thread
    per connection) would hold the output's thread for good on per-operation timeouts alone:
    the attempt fails at the output's deadline, is counted and said in one line, and once the
    receiver answers again the incident is delivered, and the next one too. Another output
    never waited for it."""
    healthy = HttpReceiver().up()
    try:
        http.trickle = 1.0
        added = await rig.call("outputs.add", name="slowpoke", url=http.url, format="json", deadline=2)
        assert added["deadline"] == 2.0
        await rig.call("outputs.add", name="other", url=healthy.url, format="json")
        await rig.client.subscribe(["alert"])
        await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/e0", sha256=SHA))
        first = await published(rig)
        assert first
        out = rig.e.outputs.outputs["slowpoke"]
        await wait_until(lambda: out.last_error, timeout=60, what="the send to fail")
        assert out.last_error == "no complete answer within the 2 s deadline (a receiver that answers too slowly)"
        assert http.trickled and not http.bodies  # it took the POST, and never answered in time
        listed = {o["name"]: o for o in await rig.call("outputs")}
        assert listed["slowpoke"]["failures"] >= 1 and listed["slowpoke"]["error"] == out.last_error
        assert listed["slowpoke"]["pending"] == len(first) and listed["slowpoke"]["delivered"] == 0
        assert (await rig.call("status"))["outputs"]["failing"] == ["slowpoke"]
        await wait_until(lambda: len(healthy.bodies) >= len(first), what="the other output's delivery")
        assert healthy.json() == first
        with pytest.raises(ProtocolError) as e:  # `outputs test` fails the same way, in one line
            await rig.call("outputs.test", name="slowpoke")
        assert e.value.code == "failed" and "within the 2 s deadline" in str(e.value) and "\n" not in str(e.value)
        # The receiver answers at once again: the incident is delivered, and the next one.
        http.trickle = 0.0
        await rig.feed(ExecEvent(container_id=rig.web.id, path="/bin/e1", sha256=SHA))
        second = await published(rig)
        assert second
        await wait_until(lambda: len(http.bodies) >= len(first + second), timeout=60, what="delivery after the stall")
        await asyncio.sleep(0.3)
        assert http.json() == first + second
        listed = {o["name"]: o for o in await rig.call("outputs")}
        assert listed["slowpoke"]["failures"] == 0 and listed["slowpoke"]["pending"] == 0
        assert listed["slowpoke"]["delivered"] == len(first + second)
        assert (await rig.call("status"))["outputs"]["failing"] == []
    finally:
        healthy.down()


async def test_test_sends_one_test_alert_and_bad_input_is_one_line(rig, http):
    await rig.call("outputs.add", name="hook", url=http.url, format="ocsf")
    result = await rig.call("outputs.test", name="hook")
    assert result["delivered"] is True
    (body,) = http.json()
    assert body["class_uid"] == 2004 and body["finding_info"]["title"] == "stockade test alert for output hook"
    http.down()
    with pytest.raises(ProtocolError) as e:
        await rig.call("outputs.test", name="hook")
    assert e.value.code == "failed" and "Connection refused" in str(e.value)
    for args, message in [
        ({"name": "x", "url": "gopher://127.0.0.1/", "format": "json"}, "unknown scheme"),
        ({"name": "x", "url": http.url, "format": "xml"}, "format must be one of json, falco, ocsf"),
        ({"name": "x", "url": http.url, "format": "json", "min_severity": "loud"}, "min_severity must be one of"),
        ({"name": "x y", "url": http.url, "format": "json"}, "name must be"),
        ({"name": "x", "url": http.url, "format": "json", "headers": {"A B": "c"}}, "bad header"),
        ({"name": "hook", "url": http.url, "format": "json"}, "exists"),
    ]:
        with pytest.raises(ProtocolError) as e:
            await rig.call("outputs.add", **args)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(ProtocolError) as e:
        await rig.call("outputs.remove", name="nope")
    assert e.value.code == "not_found"
    assert (await rig.call("outputs.remove", name="hook")) == {"removed": "hook"}
    assert await rig.call("outputs") == []
    audit = await rig.call("audit")
    assert {"outputs.add", "outputs.test", "outputs.remove"} <= {a["action"] for a in audit}
    # Header values are secrets (tokens): the audit log, which viewers read, keeps the names only.
    await rig.call("outputs.add", name="auth", url=http.url, format="json", headers={"Authorization": "Bearer s3cr3t"})
    (entry,) = [a for a in await rig.call("audit") if a["action"] == "outputs.add" and a["target"] == "auth"]
    assert entry["args"]["headers"] == {"Authorization": "<redacted>"}
    assert "s3cr3t" not in json.dumps(await rig.call("audit")) and "s3cr3t" not in json.dumps(await rig.call("outputs"))


def test_the_cli_against_a_real_enforcer(make_enforcer, http, tmp_path):
    e = make_enforcer("--no-sensors")
    out = e.cli("outputs", "add", "hook", http.url, "--format", "falco", "--min-severity", "high",
                "--header", "Authorization: Bearer abc").stdout
    assert "added output hook (falco, high and above)" in out
    assert "test alert delivered" in e.cli("outputs", "test", "hook").stdout
    (body,) = http.json()
    assert body["source"] == "stockade" and body["priority"] == "Notice"
    assert http.headers[0]["authorization"] == "Bearer abc"
    (o,) = e.cli_json("outputs", "list")
    assert o["name"] == "hook" and o["min_severity"] == "high" and o["headers"] == ["Authorization"]
    assert o["deadline"] == 20.0
    e.cli("outputs", "add", "hook7", http.url, "--format", "json", "--deadline", "7")
    assert {x["name"]: x["deadline"] for x in e.cli_json("outputs", "list")} == {"hook": 20.0, "hook7": 7.0}
    e.cli("outputs", "remove", "hook7")
    assert "hook" in e.cli("outputs").stdout
    assert e.cli_json("status")["outputs"]["configured"] == 1
    assert "outputs     1, 0 delivered, 0 pending, 0 dropped (outbox was full)" in e.cli("status").stdout
    for argv, message in [
        (("outputs", "add", "x", "ftp://127.0.0.1/", "--format", "json"), "unknown scheme"),
        (("outputs", "add", "x", http.url, "--format", "json", "--header", "nocolon"), "--header wants NAME:VALUE"),
        (("outputs", "remove", "nope"), "no output named 'nope'"),
        (("outputs", "add", "x", http.url, "--format", "json", "--deadline", "0"), "deadline must be a number"),
        (("outputs", "add", "x", "file:///tmp/x.jsonl", "--format", "json", "--deadline", "5"), "http(s) outputs only"),
    ]:
        p = e.cli(*argv, check=False)
        assert p.returncode == 1 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = e.cli("outputs", "add", "x", http.url, "--format", "xml", check=False)
    assert p.returncode == 2 and "invalid choice" in p.stderr
    e.restart()
    (o,) = e.cli_json("outputs", "list")
    assert o["name"] == "hook"
    assert e.cli_json("outputs", "remove", "hook") == {"removed": "hook"}


def test_a_viewer_lists_outputs_but_may_not_add_test_or_remove_them(http):
    """A real viewer (a user in the socket's group only): `outputs` reads; the three ops that
    change or send are refused in one line and audited as refusals."""
    tag = uuid.uuid4().hex[:6]
    viewer_group, admin_group, user = f"stov{tag}", f"stoa{tag}", f"stou{tag}"
    workdir = Path(tempfile.mkdtemp(prefix="stockade-outputs-roles-"))
    os.chmod(workdir, 0o755)  # the test user must reach the socket
    try:
        for g in (viewer_group, admin_group):
            subprocess.run(["groupadd", g], check=True)
        subprocess.run(["useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-G", viewer_group,
                        user], check=True)
        pw = pwd.getpwnam(user)
        e = EnforcerProcess(workdir / "e", "--no-sensors", "--socket-group", viewer_group, "--admin-group",
                            admin_group, "--viewer-group", viewer_group)
        os.chmod(workdir / "e", 0o755)
        with e.session():
            e.cli("outputs", "add", "hook", http.url, "--format", "json")

            def as_viewer(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
                                       sys.executable, "-m", "console.cli", "--socket", e.socket, *args],
                                      capture_output=True, text=True, timeout=60, cwd=str(REPO), check=False,
                                      env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"})

            listed = as_viewer("outputs", "list", "--json")
            assert listed.returncode == 0 and json.loads(listed.stdout)[0]["name"] == "hook", listed.stderr
            for op, argv in (("outputs.add", ("outputs", "add", "x", http.url, "--format", "json")),
                             ("outputs.test", ("outputs", "test", "hook")), ("outputs.remove", ("outputs", "remove", "hook"))):
                p = as_viewer(*argv)
                err = p.stderr.strip()
                assert p.returncode == 1 and "\n" not in err and f"{op} changes state" in err, err
            assert http.bodies == []  # the refused test sent nothing
            assert [o["name"] for o in e.call("outputs")] == ["hook"]
            refused = {a["action"] for a in e.call("audit") if a["uid"] == pw.pw_uid and a["result"].startswith("refused")}
            assert refused == {"outputs.add", "outputs.test", "outputs.remove"}
    finally:
        subprocess.run(["userdel", user], check=False, capture_output=True)
        for g in (viewer_group, admin_group):
            subprocess.run(["groupdel", g], check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
