"""ATT&CK technique ids and the protect dry run (`would`) on alerts."""

from __future__ import annotations

import asyncio

import pytest

from enforcer.detect.attack import techniques
from enforcer.protocol import ProtocolError
from enforcer.sensors.events import DnsEvent, ExecEvent, FileEvent, NetworkEvent, SyscallEvent
from support.rig import FakeEnforcement, Rig


@pytest.mark.parametrize("kind, rule, subject, detail, expected", [
    ("process", "profile", "/usr/bin/wget", {"path": "/usr/bin/wget", "argv": ["wget", "http://x"]}, ["T1105"]),
    ("process", "profile", "/bin/nc", {"path": "/bin/nc", "argv": ["nc", "-z", "db", "1-1024"]}, ["T1046"]),
    ("process", "profile", "/proc/self/exe:nc", {"path": "/proc/self/exe", "applet": "/proc/self/exe:nc",
                                                 "argv": ["nc"]}, ["T1046"]),
    ("process", "profile", "/usr/bin/python3.11", {"path": "/usr/bin/python3.11", "argv": ["python3.11"]}, ["T1059"]),
    ("process", "profile", "/tmp/kit", {"path": "/tmp/kit", "argv": ["./kit"]}, ["T1204.002"]),
    ("process", "profile", "/bin/app", {"path": "/bin/app", "learned_sha256": "a" * 64}, ["T1036"]),
    ("network", "profile", "listen tcp/4444", {"direction": "listen"}, ["T1571"]),
    ("network", "profile", "out tcp blog/db 3306", {"direction": "out", "peer_container": "blog_db_1"}, ["T1210"]),
    ("network", "profile", "out tcp 203.0.113.7 443", {"direction": "out", "peer_container": ""}, ["T1071"]),
    ("file", "research:sensitive-file", "read /etc/shadow", {"path": "/etc/shadow"}, ["T1003.008"]),
    ("file", "research:sensitive-file", "write /etc/passwd", {"path": "/etc/passwd"}, ["T1098"]),
    ("file", "research:sensitive-file", "read /root/.ssh/id_rsa", {"path": "/root/.ssh/id_rsa"}, ["T1552.004"]),
    ("file", "research:sensitive-file", "write /root/.ssh/authorized_keys",
     {"path": "/root/.ssh/authorized_keys"}, ["T1098.004"]),
    ("syscall", "research:dangerous-syscall", "unshare", {"name": "unshare"}, ["T1611"]),
    ("syscall", "research:dangerous-syscall", "ptrace", {"name": "ptrace"}, ["T1055.008"]),
    ("syscall", "research:dangerous-syscall", "init_module", {"name": "init_module"}, ["T1547.006"]),
    ("syscall", "profile", "getrandom", {"name": "getrandom"}, ["T1106"]),
    ("threat", "feed:x", "x:1.2.3.4", {"what": "peer address"}, ["T1071"]),
    ("threat", "feed:x", "x:evil.example", {"what": "DNS name"}, ["T1071.004"]),
    ("threat", "feed:x", "x:abc", {"what": "program"}, ["T1105"]),
])
def test_techniques(kind, rule, subject, detail, expected):
    assert techniques(kind, rule, subject, detail) == expected


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path / "rig", learn_seconds=3600.0)
    r.feeds.hashes["e" * 64] = "kit"
    r.enforcement = FakeEnforcement("killed")
    await r.start()
    yield r
    await r.stop()


async def _active(rig, name, mode):
    c = rig.container(name, name, name, ip="10.9.0.2", lone=True)
    await rig.feed(ExecEvent(container_id=c.id, path="/bin/app", sha256="a" * 64))
    rig.profiles.activate(rig.profiles.for_container(c.id).profile)
    await rig.call("mode", target=name, mode=mode)
    return c


async def test_alert_mode_says_what_protect_would_have_done(rig):
    c = await _active(rig, "weak", "alert")
    await rig.feed(ExecEvent(container_id=c.id, path="/usr/bin/wget", sha256="b" * 64, argv=["wget", "x"]),
                   NetworkEvent(container_id=c.id, direction="out", proto="tcp", remote_ip="203.0.113.9",
                                remote_port=443),
                   FileEvent(container_id=c.id, op="open", path="/etc/shadow", sensitive=True),
                   SyscallEvent(container_id=c.id, nr=272, name="unshare", dangerous=True, ret=-1),
                   DnsEvent(container_id=c.id, name="evil.example"))
    by_kind = {a["kind"]: a for a in await rig.alerts_of(c)}
    assert by_kind["process"]["would"] == "killed" and by_kind["process"]["tags"] == ["T1105"]
    assert by_kind["network"]["would"] == "blocked" and by_kind["network"]["tags"] == ["T1071"]
    assert by_kind["file"]["would"] is None and by_kind["file"]["tags"] == ["T1003.008"]
    assert by_kind["syscall"]["would"] is None and by_kind["syscall"]["tags"] == ["T1611"]
    assert rig.enforcement.calls == []  # alert mode: nothing was stopped


async def test_protect_mode_alerts_say_what_was_done_not_would(rig):
    c = await _active(rig, "guarded", "protect")
    await rig.feed(ExecEvent(container_id=c.id, path="/usr/bin/nc", sha256="c" * 64, argv=["nc"], pid=77))
    (a,) = [a for a in await rig.alerts_of(c) if a["kind"] == "process"]
    assert a["would"] is None and a["tags"] == ["T1046"]


async def test_would_and_tags_survive_a_restart(rig):
    c = await _active(rig, "weak", "alert")
    await rig.feed(ExecEvent(container_id=c.id, path="/tmp/kit", sha256="e" * 64, argv=["./kit"]))
    before = {a["id"]: (a["would"], a["tags"]) for a in await rig.alerts_of(c)}
    assert await rig.e.store.db.flush()
    await rig.restart()
    after = {a["id"]: (a["would"], a["tags"]) for a in await rig.alerts_of(c)}
    assert after == before and ("killed", ["T1105"]) in after.values()  # the kit's hash is on a feed


# -- accepting an incident into the profile, and the preview of protect ----------------------
async def test_allow_adds_the_subject_resolves_the_incident_and_stops_it_recurring(rig):
    c = await _active(rig, "weak", "alert")
    wget = ExecEvent(container_id=c.id, path="/usr/bin/wget", sha256="b" * 64, argv=["wget", "x"])
    call = NetworkEvent(container_id=c.id, direction="out", proto="tcp", remote_ip="203.0.113.9", remote_port=443)
    await rig.feed(wget, call)
    by_kind = {a["kind"]: a for a in await rig.alerts_of(c)}
    out = await rig.call("allow", alert_id=by_kind["process"]["id"])
    assert out["allowed"] == "run /usr/bin/wget with sha256 " + "b" * 16 and out["new"] is True
    out = await rig.call("allow", alert_id=by_kind["network"]["id"])
    assert out["allowed"] == "connect to 203.0.113.9 on tcp/443"
    again = await rig.call("alert", alert_id=by_kind["process"]["id"])
    assert again["resolved"].startswith("allowed by ")
    count = {a["id"]: a["count"] for a in await rig.alerts_of(c)}
    await rig.feed(wget, call)  # the same again: now normal, no new alert and no count
    assert {a["id"]: a["count"] for a in await rig.alerts_of(c)} == count
    profile = (await rig.call("profile", target=c.name))["profile"]
    allowed = [e for kind in profile["entries"].values() for e in kind if e["source"] == "allowed"]
    assert {e["data"]["alert_id"] for e in allowed} == {by_kind["process"]["id"], by_kind["network"]["id"]}
    audit = [e for e in await rig.call("audit") if e["action"] == "allow"]
    assert len(audit) == 2 and all(e["result"] == "ok" for e in audit)
    # The kernel's exec allow-list has the program now (pushed with the profile).
    p = rig.profiles.for_container(c.id).profile
    for _ in range(50):
        if "/usr/bin/wget" in rig.hooks.exec_allow.get(p.id, set()):
            break
        await asyncio.sleep(0.02)
    assert "/usr/bin/wget" in rig.hooks.exec_allow[p.id]
    # Allowed entries survive a relearn (a person chose them).
    await rig.call("relearn", target=c.name)
    assert any(e.source == "allowed" for e in p.entries["process"].values())
    # And can be withdrawn: the entry goes, the incident is open again, wget alerts again.
    rig.profiles.activate(p)
    out = await rig.call("disallow", alert_id=by_kind["process"]["id"])
    assert out["withdrawn"].startswith("run /usr/bin/wget")
    assert "/usr/bin/wget" not in p.processes
    assert (await rig.call("alert", alert_id=by_kind["process"]["id"]))["resolved"] == ""
    await rig.feed(wget)
    assert any(a["subject"] == "/usr/bin/wget" and a["count"] > 1 or a["id"] != by_kind["process"]["id"]
               and a["subject"] == "/usr/bin/wget" for a in await rig.alerts_of(c))


async def test_allow_refuses_what_a_profile_cannot_hold(rig):
    c = await _active(rig, "weak", "alert")
    await rig.feed(FileEvent(container_id=c.id, op="open", path="/etc/shadow", sensitive=True))
    (a,) = await rig.alerts_of(c)
    with pytest.raises(ProtocolError) as e:
        await rig.call("allow", alert_id=a["id"])
    assert e.value.code == "conflict" and "fires in every mode" in str(e.value)
    with pytest.raises(ProtocolError) as e:
        await rig.call("allow", alert_id=999999)
    assert e.value.code == "not_found"


async def test_preview_lists_what_protect_would_stop_and_changes_nothing(rig):
    c = await _active(rig, "weak", "alert")
    await rig.feed(ExecEvent(container_id=c.id, path="/bin/nc", sha256="c" * 64, argv=["nc"]),
                   FileEvent(container_id=c.id, op="create", path="/srv/drop/x.sh"))
    out = await rig.call("mode", target="weak", mode="protect", preview=True)
    assert out["preview"] is True and [(a["subject"], a["would"]) for a in out["would_stop"]] == [("/bin/nc", "killed")]
    assert rig.profiles.for_container(c.id).mode == "alert"  # nothing changed
    with pytest.raises(ProtocolError):
        await rig.call("mode", target="weak", mode="alert", preview=True)


# -- lineage: the story an alert belongs to ----------------------------------------------------
async def test_alerts_carry_the_root_of_their_process_lineage(rig):
    from enforcer.sensors.events import ForkEvent

    c = await _active(rig, "weak", "alert")
    init = c.pid  # the entrypoint: its own exec ran before the container was watched
    # The entrypoint forks a shell that runs wget (an injected command).
    await rig.feed(ForkEvent(container_id=c.id, pid=init, child_pid=9001),
                   ExecEvent(container_id=c.id, pid=9001, ppid=init, path="/bin/sh", sha256="a" * 64, argv=["sh"]),
                   ForkEvent(container_id=c.id, pid=9001, child_pid=9002),
                   ExecEvent(container_id=c.id, pid=9002, ppid=9001, path="/usr/bin/wget", sha256="b" * 64,
                             argv=["wget"]))
    # A `docker exec`: its parent (runc) is outside the container, so it roots a story of its own.
    await rig.feed(ExecEvent(container_id=c.id, pid=9100, ppid=77, path="/bin/nc", sha256="c" * 64, argv=["nc"]))
    by_subject = {a["subject"]: a for a in await rig.alerts_of(c)}
    assert by_subject["/usr/bin/wget"]["lineage"]["pid"] == init
    assert by_subject["/usr/bin/wget"]["lineage"]["path"] == "(entrypoint)"
    assert by_subject["/bin/nc"]["lineage"]["pid"] == 9100 and by_subject["/bin/nc"]["lineage"]["path"] == "/bin/nc"


async def test_an_inode_watch_alert_before_its_exec_gets_the_lineage_when_the_exec_arrives(rig):
    """The inode watch (fanotify, its own thread) can hand over `cat /etc/shadow` before the
    process sensor's exec of cat: the alert is raised with no lineage, and filled in when
    the exec (or the fork) makes the process known; stored too. A pid of another container
    fills nothing."""
    from enforcer.sensors.events import ForkEvent, InodeEvent

    c = await _active(rig, "weak", "alert")
    other = await _active(rig, "other", "alert")
    # docker exec: a shell whose parent (runc) is outside the container.
    await rig.feed(ExecEvent(container_id=c.id, pid=9300, ppid=77, path="/bin/sh", sha256="a" * 64, argv=["sh"]))
    await rig.feed(InodeEvent(container_id=c.id, op="read", path="/etc/shadow", sensitive=True, pid=9301),
                   InodeEvent(container_id=other.id, op="read", path="/etc/shadow", sensitive=True, pid=9302))
    [early] = [a for a in await rig.alerts_of(c) if a["subject"] == "read /etc/shadow"]
    assert early["lineage"] is None  # cat is not known yet
    # The same pid in another container says nothing about this one.
    await rig.feed(ExecEvent(container_id=other.id, pid=9301, ppid=1, path="/bin/cat", sha256="a" * 64, argv=["cat"]))
    assert [a["lineage"] for a in await rig.alerts_of(c) if a["subject"] == "read /etc/shadow"] == [None]
    await rig.feed(ForkEvent(container_id=c.id, pid=9300, child_pid=9301),
                   ExecEvent(container_id=c.id, pid=9301, ppid=9300, path="/bin/cat", sha256="a" * 64, argv=["cat"]))
    await asyncio.sleep(0.4)  # the write-behind of a changed incident
    [late] = [a for a in await rig.alerts_of(c) if a["subject"] == "read /etc/shadow"]
    assert late["lineage"]["pid"] == 9300 and late["lineage"]["path"] == "/bin/sh"
    assert rig.e.detector.lineage_late >= 1
    # Stored: after a restart the incident still carries it.
    await rig.restart()
    [stored] = [a for a in await rig.alerts_of(c) if a["subject"] == "read /etc/shadow"]
    assert stored["lineage"]["pid"] == 9300


# -- an incident per story: one program run's new syscalls are one finding ---------------------
async def test_new_syscalls_of_one_program_run_fold_into_one_incident_that_lists_them(rig):
    c = await _active(rig, "weak", "alert")
    names = [("getrandom", 318), ("mremap", 25), ("madvise", 28), ("flock", 73), ("linkat", 265)]
    await rig.feed(*[SyscallEvent(container_id=c.id, pid=4242, comm="ln", nr=nr, name=n) for n, nr in names])
    await rig.feed(SyscallEvent(container_id=c.id, pid=4343, comm="cat", nr=318, name="getrandom"))
    runs = [a for a in await rig.alerts_of(c) if a["kind"] == "syscall"]
    assert len(runs) == 2, runs  # one per program run, not one per syscall name
    ln = next(a for a in runs if a["detail"]["pid"] == 4242)
    assert [s["name"] for s in ln["detail"]["syscalls"]] == [n for n, _ in names]
    assert ln["summary"].endswith("getrandom, mremap, madvise, flock, linkat") and ln["count"] == 5
    # Allowing the incident allows every syscall it lists.
    out = await rig.call("allow", alert_id=ln["id"])
    assert out["allowed"] == "use the syscalls getrandom, mremap, madvise, flock, linkat"
    p = rig.profiles.for_container(c.id).profile
    assert {318, 25, 28, 73, 265} <= p.syscalls
