"""Profiles in a real enforcer (real store and socket; Docker and the kernel faked at their
boundary, see tests/support/rig.py): learning, activation, restart, modes, relearn, ops."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from support.rig import Rig
from enforcer.protocol import ProtocolError
from enforcer.sensors.events import ExecEvent, NetworkEvent, SyscallEvent

SHA_A = "a" * 64


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path / "rig", learn_seconds=3600.0)
    r.compose("blog", {"web": {"expose": [{"port": 8080}], "command": ["httpd", "-f", "-p", "8080"]},
                       "client": {"links": ["web"]}})
    yield r
    await r.stop()


async def _wait(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_replicas_share_a_profile_and_a_new_digest_learns_anew(rig):
    await rig.start()
    a = rig.container("blog_web_1", "blog", "web", image_id="sha256:v1")
    b = rig.container("blog_web_2", "blog", "web", image_id="sha256:v1")
    c = rig.container("blog_web_3", "blog", "web", image_id="sha256:v2")
    pa, pb, pc = (rig.profiles.for_container(x.id).profile for x in (a, b, c))
    assert pa is pb and pa is not pc
    assert (pa.app, pa.service, pa.image_digest) == ("blog", "web", "sha256:v1")
    assert pc.image_digest == "sha256:v2" and pc.state == "learning"


async def test_learning_records_then_active_profile_is_pushed_before_the_mode(rig):
    rig.settings_args["learn_seconds"] = 0.3
    await rig.start()
    await rig.client.subscribe(["profile"])
    web = rig.container("blog_web_1", "blog", "web", ip="10.1.0.2")
    p = rig.profiles.for_container(web.id).profile
    assert p.state == "learning"
    assert rig.hooks.policies[web.cgroup_id] == (p.id, "learn")
    await rig.feed(ExecEvent(container_id=web.id, path="/bin/cat", sha256=SHA_A),
                   SyscallEvent(container_id=web.id, nr=0, name="read", first=True))
    await _wait(lambda: p.state == "active")
    assert "/bin/cat" in rig.hooks.exec_allow[p.id] and 0 in rig.hooks.syscall_allow[p.id]
    assert rig.hooks.policies[web.cgroup_id] == (p.id, "alert")  # settings.default_mode
    states = []
    while (ev := rig.client.next_event_nowait()) is not None:
        states.append(ev["data"]["state"])
    assert states[-1] == "active"
    # The row is active in the database too.
    await asyncio.sleep(0.4)
    row = sqlite3.connect(rig.settings_args["db"]).execute("SELECT state, activated FROM profiles").fetchone()
    assert row[0] == "active" and row[1] is not None


async def test_kernel_syscall_bitmap_is_merged_when_learning_ends(rig):
    rig.settings_args["learn_seconds"] = 0.2
    await rig.start()
    web = rig.container("blog_web_1", "blog", "web")
    rig.hooks.used[web.cgroup_id] = {0, 1, 60}  # seen by the kernel, events lost
    p = rig.profiles.for_container(web.id).profile
    await _wait(lambda: p.state == "active")
    assert {0, 1, 60} <= p.syscalls


async def test_restart_keeps_active_profiles_and_learning_deadlines(rig):
    rig.settings_args["learn_seconds"] = 0.2
    await rig.start()
    web = rig.container("blog_web_1", "blog", "web")
    p = rig.profiles.for_container(web.id).profile
    await rig.feed(ExecEvent(container_id=web.id, path="/bin/cat", sha256=SHA_A))
    await _wait(lambda: p.state == "active")
    activated = p.activated
    rig.settings_args["learn_seconds"] = rig.e.settings.learn_seconds = 3600.0
    client = rig.container("blog_client_1", "blog", "client")
    deadline = rig.profiles.for_container(client.id).profile.learn_until
    await rig.crash()
    await rig.start()
    p2 = rig.profiles.for_container(web.id).profile
    assert (p2.id, p2.state, p2.activated) == (p.id, "active", activated)
    assert "/bin/cat sha256:" + SHA_A in p2.entries["process"]
    # Active after the restart: the same exec raises nothing, a new one does.
    await rig.feed(ExecEvent(container_id=web.id, path="/bin/cat", sha256=SHA_A),
                   ExecEvent(container_id=web.id, path="/bin/nc", sha256=SHA_A))
    assert [a["subject"] for a in await rig.alerts_of(web)] == ["/bin/nc"]
    learning = rig.profiles.for_container(client.id).profile
    assert learning.state == "learning" and learning.learn_until == pytest.approx(deadline)


async def test_per_app_learning_period_overrides_the_default(rig):
    rig.settings_args["apps"] = {"quick": {"learn_seconds": 0.1, "mode": "protect"}}
    await rig.start()
    await rig.e.store.inventory.set_app_learn_seconds("blog", 5.0)
    await rig.e.profiles.reload_modes()
    web = rig.container("blog_web_1", "blog", "web")
    q = rig.container("quick", "quick", "quick", lone=True)
    pw = rig.profiles.for_container(web.id).profile
    assert pw.learn_until - pw.created == pytest.approx(5.0)
    pq = rig.profiles.for_container(q.id).profile
    await _wait(lambda: pq.state == "active")
    assert rig.hooks.policies[q.cgroup_id] == (pq.id, "protect")


async def test_mode_of_app_and_container_override(rig):
    rig.settings_args["learn_seconds"] = 0.0
    await rig.start()
    web = rig.container("blog_web_1", "blog", "web")
    client = rig.container("blog_client_1", "blog", "client")
    await _wait(lambda: rig.profiles.for_container(web.id).profile.state == "active")
    result = await rig.call("mode", target="blog", mode="protect")
    assert result == {"target": "blog", "scope": "app", "mode": "protect"}
    assert rig.hooks.policies[web.cgroup_id][1] == "protect"
    result = await rig.call("mode", target="blog_client_1", mode="learn")
    assert result == {"target": "blog_client_1", "scope": "container", "mode": "learn"}
    assert rig.hooks.policies[client.cgroup_id][1] == "learn"
    assert rig.hooks.policies[web.cgroup_id][1] == "protect"
    rows = {c["name"]: c for c in await rig.call("containers")}
    assert rows["blog_client_1"]["mode"] == "learn" and rows["blog_web_1"]["mode"] == "protect"
    apps = {a["name"]: a for a in await rig.call("apps")}
    assert apps["blog"]["mode"] == "protect"
    # learn mode records, so the new program is allowed from then on; no alert.
    await rig.feed(ExecEvent(container_id=client.id, path="/bin/vi", sha256=SHA_A))
    assert await rig.alerts_of(client) == []
    assert "/bin/vi" in rig.profiles.for_container(client.id).profile.processes
    # The modes survive a restart.
    await rig.restart()
    assert rig.hooks.policies[client.cgroup_id][1] == "learn"
    assert rig.hooks.policies[web.cgroup_id][1] == "protect"
    with pytest.raises(ProtocolError, match="mode must be one of"):
        await rig.call("mode", target="blog", mode="block")
    with pytest.raises(ProtocolError) as err:
        await rig.call("mode", target="nosuch", mode="alert")
    assert err.value.code == "not_found"


async def test_relearn_clears_learned_entries_keeps_the_seed_and_restarts_learning(rig):
    rig.settings_args["learn_seconds"] = 0.1
    await rig.start()
    web = rig.container("blog_web_1", "blog", "web", ip="10.1.0.2")
    p = rig.profiles.for_container(web.id).profile
    await rig.feed(ExecEvent(container_id=web.id, path="/bin/cat", sha256=SHA_A),
                   NetworkEvent(container_id=web.id, direction="listen", proto="tcp", local_port=9999))
    await _wait(lambda: p.state == "active")
    seeds = {k for k, e in p.entries["listener"].items() if e.source == "seed"}
    assert "tcp/8080" in seeds and "tcp/9999" in p.entries["listener"]
    rig.settings_args["learn_seconds"] = 60.0
    rig.e.settings.learn_seconds = 60.0
    result = await rig.call("relearn", target="blog_web_1")
    assert result == {"profiles": [p.id]}
    assert p.state == "learning" and p.learn_until - rig.e.profiles.clock() > 50
    assert set(p.entries["listener"]) == seeds and "/bin/cat" not in p.processes
    assert rig.hooks.policies[web.cgroup_id] == (p.id, "learn")
    assert web.cgroup_id in rig.hooks.forgotten
    await asyncio.sleep(0.4)
    con = sqlite3.connect(rig.settings_args["db"])
    kinds = con.execute("SELECT source, COUNT(*) FROM profile_entries GROUP BY source").fetchall()
    assert dict(kinds).get("learned", 0) == 0
    assert con.execute("SELECT state FROM profiles WHERE id = ?", (p.id,)).fetchone()[0] == "learning"


async def test_profile_op_has_the_protocol_shape(rig):
    rig.image("sha256:img1", {"User": "www", "WorkingDir": "/srv", "Cmd": ["httpd", "-f", "-p", "8080"]})
    await rig.start()
    rig.container("blog_web_1", "blog", "web")
    rig.container("blog_client_1", "blog", "client")
    result = await rig.call("profile", target="blog_web_1")
    assert result["container"]["name"] == "blog_web_1"
    assert result["container"]["profile_state"] == "learning" and result["container"]["learning_left"] > 3000
    prof = result["profile"]
    for key in ("id", "app", "service", "image_digest", "state", "created", "learn_until", "activated", "mode", "entries"):
        assert key in prof
    assert set(prof["entries"]) == {"process", "listener", "peer", "file", "syscall"}
    entry = prof["entries"]["listener"][0]
    assert set(entry) == {"key", "data", "source", "first_seen", "used", "never_used"} and entry["source"] == "seed"
    assert entry["used"] is False and entry["never_used"] is True  # declared, not seen yet
    assert prof["never_used"] >= 1 and prof["pruned"] == []
    assert prof["image"]["user"] == "www"
    apps = {a["name"]: a for a in await rig.call("apps")}
    edges = apps["blog"]["edges"]
    assert {"from": "client", "to": "web", "proto": "tcp", "port": 8080, "source": "seed"} in edges
    with pytest.raises(ProtocolError) as err:
        await rig.call("profile", target="nosuch")
    assert err.value.code == "not_found"


async def test_network_policies_name_protected_active_containers_and_signal_changes(rig):
    rig.settings_args["learn_seconds"] = 0.0
    await rig.start()
    web = rig.container("blog_web_1", "blog", "web")
    rig.container("blog_client_1", "blog", "client")
    await _wait(lambda: rig.profiles.for_container(web.id).profile.state == "active")
    signals: list[int] = []
    rig.profiles.on_policy_change(lambda: signals.append(1))
    assert rig.profiles.network_policies() == {}  # alert mode: no default-deny
    await rig.call("mode", target="blog", mode="protect")
    assert signals
    policies = rig.profiles.network_policies()
    assert set(policies) == {"blog_web_1", "blog_client_1"}
    # The compose links are seeded peers: client -> web:8080 out, web <- client:8080 in.
    assert ("out", "tcp", "blog/web", 8080) in policies["blog_client_1"]
    assert ("in", "tcp", "blog/client", 8080) in policies["blog_web_1"]
    signals.clear()
    await rig.call("mode", target="blog_client_1", mode="alert")
    assert signals and set(rig.profiles.network_policies()) == {"blog_web_1"}
