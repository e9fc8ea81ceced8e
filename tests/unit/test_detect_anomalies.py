"""The detector on synthetic sensor events through a real enforcer (real store, socket,
profiles, alert book; Docker, kernel and feeds faked at their boundary): every kind of
anomaly on the right container, research rules while learning, no alert for what was
learned, changed binaries, protect-mode responses."""

from __future__ import annotations

import asyncio

import pytest

from support.rig import FakeEnforcement, Rig
from enforcer.sensors.events import (DnsEvent, ExecEvent, FileClosedEvent, FileEvent, NetworkEvent,
                                     SyscallEvent)

SHA_BUSYBOX = "b" * 64
SHA_EVIL = "e" * 64


def steady(client, web, db):
    """What the app does in a loop: the client fetches from web, web reads from db."""
    return [
        ExecEvent(container_id=client.id, path="/bin/wget", sha256=SHA_BUSYBOX, binary="/bin/busybox"),
        ExecEvent(container_id=client.id, path="/bin/sleep", sha256=SHA_BUSYBOX, binary="/bin/busybox"),
        NetworkEvent(container_id=client.id, direction="out", proto="udp", remote_ip="127.0.0.11", remote_port=53),
        NetworkEvent(container_id=client.id, direction="out", proto="tcp", local_ip="10.5.0.3", local_port=40001,
                     remote_ip="10.5.0.2", remote_port=8080),
        NetworkEvent(container_id=web.id, direction="in", proto="tcp", local_ip="10.5.0.2", local_port=8080,
                     remote_ip="10.5.0.3", remote_port=40001),
        NetworkEvent(container_id=web.id, direction="out", proto="tcp", remote_ip="10.5.0.4", remote_port=5432),
        NetworkEvent(container_id=db.id, direction="in", proto="tcp", local_ip="10.5.0.4", local_port=5432,
                     remote_ip="10.5.0.2", remote_port=50000),
        FileEvent(container_id=client.id, op="create", path="/tmp/page.html"),
        FileEvent(container_id=web.id, op="write", path="/var/log/httpd/access.log"),
        FileEvent(container_id=web.id, op="write", path="/dev/null"),
        FileEvent(container_id=db.id, op="write", path="/var/lib/db/base/1/2"),
        SyscallEvent(container_id=client.id, nr=0, name="read", first=True),
        SyscallEvent(container_id=client.id, nr=41, name="socket", first=True),
        SyscallEvent(container_id=web.id, nr=43, name="accept", first=True),
    ]


@pytest.fixture
async def app(tmp_path):
    rig = Rig(tmp_path / "rig", learn_seconds=3600.0)
    rig.compose("shop", {
        "web": {"expose": [{"port": 8080}], "depends_on": ["db"]},
        "db": {"expose": [{"port": 5432}]},
        "client": {"links": ["web"]},
    })
    rig.enforcement = FakeEnforcement("blocked")
    await rig.start()
    web = rig.container("shop_web_1", "shop", "web", ip="10.5.0.2")
    client = rig.container("shop_client_1", "shop", "client", ip="10.5.0.3")
    db = rig.container("shop_db_1", "shop", "db", ip="10.5.0.4")
    outsider = rig.container("intruder", "intruder", "intruder", ip="10.5.0.9", lone=True)
    await rig.feed(*steady(client, web, db))
    for c in (web, client, db):
        rig.profiles.activate(rig.profiles.for_container(c.id).profile)
    yield rig, web, client, db, outsider
    await rig.stop()


async def _new_alerts(rig, since):
    return [a for a in await rig.call("alerts", since=since)]


async def test_learned_steady_workload_raises_nothing_afterwards(app):
    rig, web, client, db, _ = app
    for _ in range(3):
        await rig.feed(*steady(client, web, db))
    assert await rig.call("alerts") == []
    counts = rig.e.detector.counts
    assert sum(counts.values()) == 4 * len(steady(client, web, db))


@pytest.mark.parametrize("case", ["exec", "inbound", "listener", "etc_write", "shadow_read", "unshare", "outbound"])
async def test_each_anomaly_is_one_alert_of_its_kind_on_the_right_container(app, case):
    rig, web, client, db, outsider = app
    events, who, kind, severity, subject = {
        "exec": ([ExecEvent(container_id=client.id, path="/bin/nc", sha256=SHA_BUSYBOX, pid=77, ppid=70,
                            argv=["nc", "-l", "-p", "4444"])],
                 client, "process", "high", "/bin/nc"),
        "inbound": ([NetworkEvent(container_id=web.id, direction="in", proto="tcp", local_ip="10.5.0.2",
                                  local_port=8080, remote_ip="10.5.0.9", remote_port=33333,
                                  remote_container_id=outsider.id)],
                    web, "network", "medium", "in tcp intruder/intruder 8080"),
        "listener": ([NetworkEvent(container_id=client.id, direction="listen", proto="tcp", local_port=4444)],
                     client, "network", "high", "listen tcp/4444"),
        "etc_write": ([FileEvent(container_id=client.id, op="create", path="/etc/cron.d/evil")],
                      client, "file", "high", "write /etc/cron.d/evil"),
        "shadow_read": ([FileEvent(container_id=web.id, op="read", path="/etc/shadow", sensitive=True)],
                        web, "file", "high", "read /etc/shadow"),
        "unshare": ([SyscallEvent(container_id=db.id, nr=272, name="unshare", ret=-1, dangerous=True)],
                    db, "syscall", "high", "unshare"),
        "outbound": ([NetworkEvent(container_id=db.id, direction="out", proto="tcp", remote_ip="10.5.0.3",
                                   remote_port=8080)],
                     db, "network", "medium", "out tcp shop/client 8080"),
    }[case]
    await rig.feed(*events)
    alerts = await rig.call("alerts")
    assert [(a["container"], a["kind"], a["severity"], a["subject"]) for a in alerts] == \
        [(who.name, kind, severity, subject)]
    a = alerts[0]
    assert a["container_id"] == who.id and a["app"] == "shop" and a["host"] == "test-host"
    assert a["count"] == 1 and a["action"] == "alerted" and a["first_seen"] == a["last_seen"]


async def test_alert_fields_follow_the_contract(app):
    rig, web, client, db, _ = app
    await rig.feed(ExecEvent(container_id=client.id, path="/usr/bin/wget2", sha256=SHA_EVIL, pid=4411, ppid=4402,
                             argv=["wget2", "http://x"]))
    (a,) = await rig.call("alerts")
    assert set(a) == {"id", "time", "host", "app", "service", "container", "container_id", "image", "kind",
                      "severity", "summary", "detail", "action", "count", "first_seen", "last_seen", "subject", "rule",
                      "would", "tags", "resolved", "lineage"}
    assert a["summary"] == "unexpected process /usr/bin/wget2"
    assert a["would"] == "killed" and a["tags"] == ["T1105"]  # alert mode: protect would have killed it
    assert a["detail"]["pid"] == 4411 and a["detail"]["ppid"] == 4402 and a["detail"]["argv"] == ["wget2", "http://x"]
    assert a["detail"]["sha256"] == SHA_EVIL and a["rule"] == "profile"
    assert a["time"].endswith("Z") and a["image"] == "local/client"


async def test_outbound_to_an_address_outside_the_host_is_high(app):
    rig, web, client, db, _ = app
    await rig.feed(NetworkEvent(container_id=web.id, direction="out", proto="tcp", remote_ip="203.0.113.7",
                                remote_port=443))
    (a,) = await rig.call("alerts")
    assert (a["kind"], a["severity"], a["detail"]["peer"]) == ("network", "high", "203.0.113.7")


async def test_write_outside_learned_prefixes_but_not_inside_or_noise(app):
    rig, web, client, db, _ = app
    await rig.feed(FileEvent(container_id=db.id, op="write", path="/var/lib/db/base/9/99"),  # learned prefix
                   FileEvent(container_id=db.id, op="write", path="/proc/1234/fd/1"),  # noise
                   FileEvent(container_id=db.id, op="create", path="/srv/drop/x.sh"))
    (a,) = await rig.call("alerts")
    assert (a["kind"], a["severity"], a["detail"]["prefix"]) == ("file", "medium", "/srv/drop/")


async def test_research_rules_fire_while_learning_and_nothing_else_does(tmp_path):
    rig = Rig(tmp_path / "rig", learn_seconds=3600.0)
    await rig.start()
    try:
        c = rig.container("lone", "lone", "lone", ip="10.6.0.2", lone=True)
        rig.feeds.ips["198.51.100.66"] = "botnet"
        await rig.feed(
            ExecEvent(container_id=c.id, path="/bin/anything", sha256=SHA_BUSYBOX),
            FileEvent(container_id=c.id, op="read", path="/root/.ssh/id_rsa", sensitive=True),
            FileEvent(container_id=c.id, op="write", path="/etc/shadow"),
            SyscallEvent(container_id=c.id, nr=101, name="ptrace", ret=0, dangerous=True),
            SyscallEvent(container_id=c.id, nr=313, name="", ret=-1),  # number only: finit_module
            NetworkEvent(container_id=c.id, direction="out", remote_ip="198.51.100.66", remote_port=443),
        )
        got = {(a["kind"], a["subject"], a["severity"], a["rule"]) for a in await rig.call("alerts")}
        assert got == {
            ("file", "read /root/.ssh/id_rsa", "high", "research:sensitive-file"),
            ("file", "write /etc/shadow", "critical", "research:sensitive-file"),
            ("syscall", "ptrace", "high", "research:dangerous-syscall"),
            ("syscall", "finit_module", "critical", "research:dangerous-syscall"),
            ("threat", "botnet:198.51.100.66", "critical", "feed:botnet"),
        }
        assert "/bin/anything" in rig.profiles.for_container(c.id).profile.processes  # learned
    finally:
        await rig.stop()


async def test_every_feed_lookup_becomes_a_threat_alert_and_a_recorded_hit(app):
    rig, web, client, db, _ = app
    rig.feeds.hashes[SHA_EVIL] = "malware-hashes"
    rig.feeds.domains["evil.example"] = "bad-domains"
    rig.feeds.ips["10.5.0.66"] = "local-c2"
    await rig.feed(
        ExecEvent(container_id=client.id, path="/bin/wget", sha256=SHA_EVIL),  # also a changed binary
        FileClosedEvent(container_id=web.id, path="/tmp/x", size=10, sha256=SHA_EVIL),
        DnsEvent(container_id=client.id, name="evil.example", qtype=1),
        NetworkEvent(container_id=db.id, direction="out", remote_ip="10.5.0.66", remote_port=4444),
    )
    threats = {(a["container"], a["detail"]["what"], a["detail"]["feed"]) for a in await rig.call("alerts", kind="threat")}
    assert threats == {("shop_client_1", "program", "malware-hashes"), ("shop_web_1", "written file", "malware-hashes"),
                       ("shop_client_1", "DNS name", "bad-domains"), ("shop_db_1", "peer address", "local-c2")}
    assert len(rig.feeds.hits) == 4
    hit, name, cid, alert_id = rig.feeds.hits[0]
    assert name == "shop_client_1" and cid == client.id and isinstance(alert_id, int)


async def test_a_binary_rewritten_at_a_learned_path_is_reported_as_changed(app):
    rig, web, client, db, _ = app
    p = rig.profiles.for_container(client.id).profile
    await asyncio.sleep(0.1)
    assert "/bin/wget" in rig.hooks.exec_allow[p.id]
    # The attacker replaces the applet link with a file of its own.
    await rig.feed(FileEvent(container_id=client.id, op="unlink", path="/bin/wget"),
                   FileEvent(container_id=client.id, op="create", path="/bin/wget"))
    await asyncio.sleep(0.1)
    # Held back from the kernel's allow-list, so the next exec is hashed and checked here.
    assert "/bin/wget" not in rig.hooks.exec_allow[p.id] and "/bin/sleep" in rig.hooks.exec_allow[p.id]
    await rig.feed(ExecEvent(container_id=client.id, path="/bin/wget", sha256=SHA_EVIL, binary="/bin/wget"))
    changed = await rig.call("alerts", kind="process")
    assert len(changed) == 1
    a = changed[0]
    assert a["severity"] == "critical" and a["summary"].startswith("binary changed at learned path /bin/wget")
    assert a["detail"]["learned_sha256"] == SHA_BUSYBOX and a["detail"]["sha256"] == SHA_EVIL
    # Same bytes again (a restore): known, and the path goes back into the kernel's list.
    await rig.feed(ExecEvent(container_id=client.id, path="/bin/wget", sha256=SHA_BUSYBOX))
    await asyncio.sleep(0.1)
    assert "/bin/wget" in rig.hooks.exec_allow[p.id]
    # Writing to the resolved binary holds back every path that runs it.
    await rig.feed(FileEvent(container_id=client.id, op="write", path="/bin/busybox"))
    await asyncio.sleep(0.1)
    assert {"/bin/wget", "/bin/sleep"}.isdisjoint(rig.hooks.exec_allow[p.id])


async def test_protect_mode_hands_alerts_to_enforcement_and_records_its_action(app):
    rig, web, client, db, outsider = app
    await rig.call("mode", target="shop", mode="protect")
    await rig.feed(NetworkEvent(container_id=web.id, direction="in", local_port=8080, remote_ip="10.5.0.9",
                                remote_container_id=outsider.id),
                   ExecEvent(container_id=client.id, path="/bin/sh2", sha256=SHA_EVIL, killed=True))
    await asyncio.sleep(0.05)
    alerts = {a["kind"]: a for a in await rig.call("alerts")}
    assert alerts["network"]["action"] == "blocked"
    assert alerts["process"]["action"] == "killed" and alerts["process"]["summary"] == "killed process /bin/sh2"
    # Enforcement was asked about the connection only: the kernel had already killed the exec.
    assert [(name, alert_id) for name, _, alert_id in rig.enforcement.calls] == [("shop_web_1", alerts["network"]["id"])]
    # Not in alert mode.
    await rig.call("mode", target="shop", mode="alert")
    await rig.feed(NetworkEvent(container_id=db.id, direction="listen", local_port=7777))
    assert len(rig.enforcement.calls) == 1


async def test_events_of_unknown_containers_are_counted_not_guessed(app):
    rig, *_ = app
    await rig.feed(ExecEvent(container_id="f" * 64, path="/bin/x"), ExecEvent(container_id="", path="/bin/y"))
    assert rig.e.detector.unattributed == 2 and await rig.call("alerts") == []


async def test_runc_entering_for_docker_exec_is_neither_learned_nor_alerted(app):
    rig, web, client, db, _ = app
    await rig.feed(ExecEvent(container_id=web.id, path="/proc/self/exe", argv=["runc", "init"], sha256=SHA_EVIL),
                   ExecEvent(container_id=web.id, path="/proc/self/exe", argv=["sh"], sha256=SHA_EVIL))
    alerts = await rig.call("alerts")
    assert [(a["subject"], a["detail"]["argv"]) for a in alerts] == [("/proc/self/exe:sh", ["sh"])]
    assert rig.e.detector.runtime_execs == 1


async def test_writing_the_root_directory_never_teaches_a_prefix_of_everything(tmp_path):
    rig = Rig(tmp_path / "rig", learn_seconds=3600.0)
    await rig.start()
    try:
        c = rig.container("lone", "lone", "lone", lone=True)
        await rig.feed(FileEvent(container_id=c.id, op="mkdir", path="/"),
                       FileEvent(container_id=c.id, op="mkdir", path="/tmp"))
        p = rig.profiles.for_container(c.id).profile
        rig.profiles.activate(p)
        await rig.feed(FileEvent(container_id=c.id, op="create", path="/etc/cron.d/x"))
        assert [a["subject"] for a in await rig.call("alerts")] == ["write /etc/cron.d/x"]
        assert "/" not in p.file_prefixes
    finally:
        await rig.stop()


async def test_a_peer_the_inventory_learns_of_late_is_decided_as_that_container(app, monkeypatch):
    rig, web, client, db, _ = app
    monkeypatch.setattr("enforcer.detect.detector.DEFER_SECONDS", 0.2)
    # A second client replica starts; its first request reaches web before its address is known.
    await rig.feed(NetworkEvent(container_id=web.id, direction="in", proto="tcp", local_ip="10.5.0.2",
                                local_port=8080, remote_ip="10.5.0.13", remote_port=40100))
    rig.container("shop_client_2", "shop", "client", ip="10.5.0.13")
    # And an address that never becomes a container is decided as an address.
    await rig.feed(NetworkEvent(container_id=web.id, direction="in", proto="tcp", local_ip="10.5.0.2",
                                local_port=8080, remote_ip="10.5.0.77", remote_port=40200))
    await asyncio.sleep(0.5)
    alerts = await rig.call("alerts")
    assert [(a["container"], a["subject"]) for a in alerts] == [("shop_web_1", "in tcp 10.5.0.77 8080")]
    assert rig.e.detector.deferred == 2


async def test_runc_init_syscalls_are_not_the_apps_but_its_dangerous_ones_still_count(app):
    rig, web, client, db, _ = app
    await rig.feed(SyscallEvent(container_id=web.id, nr=24, name="sched_yield", comm="runc:[2:INIT]", first=True),
                   SyscallEvent(container_id=web.id, nr=250, name="keyctl", comm="runc:[2:INIT]", dangerous=True),
                   SyscallEvent(container_id=web.id, nr=165, name="mount", comm="runc:[2:INIT]", dangerous=True),
                   SyscallEvent(container_id=web.id, nr=250, name="keyctl", comm="sh", dangerous=True))
    got = sorted((a["subject"], a["detail"]["comm"]) for a in await rig.call("alerts"))
    assert got == [("keyctl", "sh"), ("mount", "runc:[2:INIT]")]
    assert 24 not in rig.profiles.for_container(web.id).profile.syscalls


async def test_busybox_applets_run_as_self_exec_are_told_apart_by_name(app):
    rig, web, client, db, _ = app
    p = rig.profiles.for_container(client.id).profile
    rig.profiles.relearn(p)
    await rig.feed(ExecEvent(container_id=client.id, path="/proc/self/exe", argv=["wget", "-q", "http://web/"],
                             sha256=SHA_BUSYBOX, binary="/bin/busybox"))
    rig.profiles.activate(p)
    await rig.feed(ExecEvent(container_id=client.id, path="/proc/self/exe", argv=["wget", "http://web/x"],
                             sha256=SHA_BUSYBOX, binary="/bin/busybox"),
                   ExecEvent(container_id=client.id, path="/proc/self/exe", argv=["nc", "-e", "/bin/sh"],
                             sha256=SHA_BUSYBOX, binary="/bin/busybox"))
    (a,) = await rig.call("alerts")
    assert a["subject"] == "/proc/self/exe:nc" and a["detail"]["path"] == "/proc/self/exe"
    await asyncio.sleep(0.1)
    # The kernel sees only "/proc/self/exe": allowing it there would allow every applet.
    assert not any(x.startswith("/proc/") for x in rig.hooks.exec_allow[p.id])


async def test_self_exec_applets_go_to_the_kernel_only_when_it_keys_them_by_applet(app):
    rig, web, client, db, _ = app
    p = rig.profiles.for_container(client.id).profile
    rig.profiles.relearn(p)
    await rig.feed(ExecEvent(container_id=client.id, path="/proc/self/exe", argv=["wget"], sha256=SHA_BUSYBOX))
    rig.hooks.self_exec_by_applet = True
    rig.profiles.activate(p)
    assert "/proc/self/exe:wget" in rig.hooks.exec_allow[p.id]


async def test_protect_mode_does_not_let_a_path_keyed_kernel_kill_the_apps_own_applets(app):
    rig, web, client, db, _ = app
    p = rig.profiles.for_container(client.id).profile
    rig.profiles.relearn(p)
    await rig.feed(ExecEvent(container_id=client.id, path="/proc/self/exe", argv=["wget"], sha256=SHA_BUSYBOX))
    rig.profiles.activate(p)
    assert "/proc/self/exe" not in rig.hooks.exec_allow[p.id]  # alert mode: every self-exec is reported
    await rig.call("mode", target="shop", mode="protect")
    assert "/proc/self/exe" in rig.hooks.exec_allow[p.id]
    assert rig.hooks.policies[client.cgroup_id] == (p.id, "protect")
