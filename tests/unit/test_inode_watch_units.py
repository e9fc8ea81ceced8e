"""The inode watch's pieces without a kernel: fanotify records parsed, the targets listed
per container, and the detector's verdicts on what the watch and the link probes send
(through a real enforcer rig: store, profiles, alert book, socket)."""

from __future__ import annotations

import struct

import pytest

from enforcer.sensors import fanotify as fan
from enforcer.sensors.events import FileEvent, InodeEvent
from enforcer.sensors.inode_watch import InodeWatch, targets
from support.rig import Rig


def test_records_are_parsed_and_an_unknown_version_stops_the_parse():
    one = struct.pack("IBBHQii", 24, 3, 0, 24, fan.FAN_OPEN_PERM, 7, 1234)
    overflow = struct.pack("IBBHQii", 24, 3, 0, 24, fan.FAN_Q_OVERFLOW, fan.FAN_NOFD, 0)
    bad = struct.pack("IBBHQii", 24, 9, 0, 24, fan.FAN_OPEN, 8, 1)
    recs = fan.parse(one + overflow + bad)
    assert [(r.mask, r.fd, r.pid) for r in recs] == [(fan.FAN_OPEN_PERM, 7, 1234), (fan.FAN_Q_OVERFLOW, -1, 0)]


def test_targets_cover_the_sensitive_list_host_keys_and_home_secrets():
    listing = {"/etc/ssh": ["ssh_host_rsa_key", "ssh_config"], "/home": ["alice"]}
    got = {(t.path, t.kind) for t in targets(lambda d: listing.get(d, []))}
    assert ("/etc/shadow", "file") in got and ("/root/.ssh", "dir") in got
    assert ("/etc/passwd", "write") in got  # writes only: everyone reads it
    assert ("/etc/ssh/ssh_host_rsa_key", "file") in got and ("/etc/ssh/ssh_config", "file") not in got
    assert ("/home/alice/.ssh", "dir") in got


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path / "rig", learn_seconds=3600.0)
    await r.start()
    c = r.container("victim", "victim", "victim", ip="10.5.0.9", lone=True)
    r.profiles.activate(r.profiles.for_container(c.id).profile)
    yield r, c
    await r.stop()


def _file_alerts(alerts):
    return {a["subject"]: a for a in alerts if a["kind"] == "file"}


async def test_inode_events_are_sensitive_file_alerts_with_the_kernel_facts(rig):
    r, c = rig
    await r.feed(InodeEvent(container_id=c.id, op="read", path="/etc/shadow", sensitive=True, dev=130, ino=99,
                            opened_as="/tmp/h", denied=True),
                 InodeEvent(container_id=c.id, op="replace", path="/etc/passwd", sensitive=True))
    got = _file_alerts(await r.call("alerts"))
    read = got["read /etc/shadow"]
    assert read["severity"] == "high" and read["action"] == "denied"
    assert read["detail"]["opened_as"] == "/tmp/h" and read["detail"]["ino"] == 99
    assert got["write /etc/passwd"]["severity"] == "critical"


async def test_lost_events_are_a_critical_alert(rig):
    r, c = rig
    await r.feed(InodeEvent(container_id=c.id, op="lost", lost=3, sensitive=True))
    [alert] = [a for a in await r.call("alerts") if a["subject"] == "inode watch lost events"]
    assert alert["severity"] == "critical" and "lost 3 events" in alert["summary"]


async def test_links_and_renames_onto_sensitive_files_are_sensitive_writes(rig):
    r, c = rig
    await r.feed(FileEvent(container_id=c.id, op="symlink", path="/etc/shadow", new_path="/tmp/x"),
                 FileEvent(container_id=c.id, op="link", path="/etc/passwd", new_path="/tmp/p"),
                 FileEvent(container_id=c.id, op="rename", path="/tmp/pw", new_path="/etc/group"))
    got = _file_alerts(await r.call("alerts"))
    for subject in ("write /etc/shadow", "write /etc/passwd", "write /etc/group"):
        assert got[subject]["severity"] == "critical", subject
    # The link's own name is an ordinary write; its source was reached, not written.
    assert "write /tmp/x" not in got or got["write /tmp/x"]["severity"] != "critical"


class _NoInventory:
    containers: dict = {}

    def subscribe(self, listener):
        pass

    def by_cgroup(self, cgroup_id):
        return None


def test_an_overflow_and_a_full_hand_off_are_told_to_every_watched_container_as_lost():
    got: list[InodeEvent] = []
    w = InodeWatch(_NoInventory(), lambda ev: got.append(ev) or True, protected=lambda cid: False, max_pending=0)
    w._by_container = {"c1": set(), "c2": set()}
    w._handle(fan.Record(fan.FAN_Q_OVERFLOW, fan.FAN_NOFD, 0))  # the kernel's queue overflowed
    w._post(InodeEvent(container_id="c1", op="read", path="/etc/shadow", ino=1, pid=5))  # no room to hand off
    assert (w.overflows, w.lost) == (1, 1)
    w._report_lost()
    assert sorted((e.container_id, e.op, e.lost) for e in got) == [("c1", "lost", 2), ("c2", "lost", 2)]
    got.clear()
    w._report_lost()  # told once, not again until more is lost
    assert got == []


def test_a_new_inode_or_a_new_link_under_a_sensitive_name_is_told():
    w = InodeWatch(_NoInventory(), lambda ev: True, protected=lambda cid: False)
    posted: list[InodeEvent] = []  # what the refresh hands on
    w._post = posted.append  # type: ignore[method-assign]
    w._check_identity("c1", "/etc/shadow", (130, 10), 1)  # first sight: nothing to say
    w._check_identity("c1", "/etc/shadow", (130, 10), 1)
    assert posted == []
    w._check_identity("c1", "/etc/shadow", (130, 10), 2)  # ln /etc/shadow /tmp/h, by any path
    w._check_identity("c1", "/etc/shadow", (130, 11), 1)  # mv x onto it, by any path
    assert [(e.op, e.path, e.ino) for e in posted] == [("link", "/etc/shadow", 10), ("replace", "/etc/shadow", 11)]


def test_a_file_in_a_watched_directory_opened_by_a_gone_process_is_charged_by_its_filesystem():
    from enforcer.sensors.inode_watch import Mark

    w = InodeWatch(_NoInventory(), lambda ev: True, protected=lambda cid: False)
    w._dirs = {"other": {"/root/.ssh": Mark("/root/.ssh", "dir", False, {"other"})},
               "mine": {"/root/.ssh": Mark("/root/.ssh", "dir", False, {"mine"})}}
    w._dev_owner = {130: "mine", 131: "other"}
    gone = 2**22 + 12345  # no such pid
    assert w._attribute(gone, None, "/root/.ssh/id_rsa", 130) == ("mine", "/root/.ssh/id_rsa")
    assert w._attribute(gone, None, "/root/.ssh/id_rsa", 999) == (None, "/root/.ssh/id_rsa")  # ambiguous
