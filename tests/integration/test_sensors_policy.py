"""The kernel hooks for profiles and enforcement, on a SensorHub in-process (these hooks
have no socket op: the profiles layer calls them). Real kernel, real containers; only the
inventory is a stand-in that the test fills with the containers it starts."""

from __future__ import annotations

import subprocess
from typing import Iterator

import pytest

from support.harness import DockerResources, exec_in
from support.sensors import HubRunner, container_model, running_hub

pytestmark = [pytest.mark.docker, pytest.mark.bpf]

NR_UNSHARE = 272
NR_EXECVE = 59
NR_EXIT_GROUP = 231


@pytest.fixture(scope="module")
def runner(busybox_image: str) -> Iterator[HubRunner]:
    with running_hub(dedup_ttl=60.0) as r:
        yield r


def _watch(runner: HubRunner, dockerx: DockerResources) -> tuple[str, object]:
    name = dockerx.run("--network", "none")
    c = container_model(name)
    runner.call(runner.inventory.add, c)
    return name, c


def test_protect_mode_kills_an_exec_that_is_not_allowed(runner, dockerx):
    name, c = _watch(runner, dockerx)
    runner.call(runner.hub.maps.allow_exec, 41, ["/bin/ls"])
    runner.call(runner.hub.maps.set_policy, c.cgroup_id, 41, "protect")
    assert runner.call(runner.hub.maps.policy, c.cgroup_id) == (41, "protect")
    assert exec_in(name, "/bin/ls", "/").returncode == 0
    assert exec_in(name, "/bin/touch", "/tmp/ran").returncode == 137
    ev = runner.log.wait_for(type="ExecEvent", container_id=c.id, path="/bin/touch")
    assert ev["killed"] and ev["argv"] == ["/bin/touch", "/tmp/ran"]
    # Killed before its first instruction: the file was never made.
    assert exec_in(name, "/bin/ls", "/tmp/ran").returncode != 0
    # Repeats are killed too, even when their event is dropped as a repeat.
    assert exec_in(name, "/bin/touch", "/tmp/ran").returncode == 137
    assert not runner.log.matching(type="ExecEvent", container_id=c.id, path="/bin/ls")
    counters = runner.call(runner.hub.kernel_counters)
    assert counters["process"][4] >= 2  # killed


def test_protect_mode_keys_busybox_applets_by_name(runner, dockerx):
    # busybox sh runs a bare applet name as /proc/self/exe with argv[0] = the applet: the
    # kernel must tell an allowed applet (wget) from one that is not (nc).
    name, c = _watch(runner, dockerx)
    runner.call(runner.hub.maps.allow_exec, 44, ["/bin/sh", "/proc/self/exe:wget"])
    runner.call(runner.hub.maps.set_policy, c.cgroup_id, 44, "protect")
    proc = exec_in(name, "/bin/sh", "-c", "wget --help; echo wget $?; nc --help; echo nc $?")
    assert "Usage: wget" in proc.stderr and "wget 137" not in proc.stdout, (proc.stdout, proc.stderr)
    assert "nc 137" in proc.stdout, (proc.stdout, proc.stderr)
    ev = runner.log.wait_for(type="ExecEvent", container_id=c.id, path="/proc/self/exe")
    assert ev["killed"] and ev["argv"][0] == "nc"


def test_protect_mode_does_not_kill_a_failed_path_search(runner, dockerx):
    # A shell trying $PATH entries that do not exist must survive to find the allowed one.
    name, c = _watch(runner, dockerx)
    exec_in(name, "sh", "-c", "mkdir -p /tmp; printf '#!/bin/sh\\necho found\\n' > /tmp/found; chmod +x /tmp/found",
            check=True)
    runner.call(runner.hub.maps.allow_exec, 43, ["/bin/sh", "/tmp/found"])
    runner.call(runner.hub.maps.set_policy, c.cgroup_id, 43, "protect")
    proc = exec_in(name, "/bin/sh", "-c", "PATH=/nowhere:/tmp; found")
    assert proc.returncode == 0 and proc.stdout.strip() == "found", proc.stderr


def test_alert_mode_sends_only_what_the_allow_lists_miss(runner, dockerx):
    name, c = _watch(runner, dockerx)
    runner.call(runner.hub.maps.allow_exec, 42, ["/bin/ls"])
    runner.call(runner.hub.maps.allow_syscalls, 42, [n for n in range(512) if n != NR_UNSHARE])
    runner.call(runner.hub.maps.reset_novelty, c.cgroup_id)
    runner.call(runner.hub.maps.set_policy, c.cgroup_id, 42, "alert")
    assert exec_in(name, "/bin/ls", "/").returncode == 0
    assert exec_in(name, "/bin/date").returncode == 0  # alert mode: reported, not killed
    ev = runner.log.wait_for(type="ExecEvent", container_id=c.id, path="/bin/date")
    assert not ev["killed"]
    exec_in(name, "unshare", "-U", "true")
    runner.log.wait_for(type="SyscallEvent", container_id=c.id, nr=NR_UNSHARE)
    assert not runner.log.matching(type="ExecEvent", container_id=c.id, path="/bin/ls")
    # Every syscall but unshare is allowed: no novelty events, only the dangerous ones.
    syscalls = runner.log.matching(type="SyscallEvent", container_id=c.id)
    assert syscalls and all(e["dangerous"] for e in syscalls), syscalls


def test_learn_mode_sends_a_repeated_exec_once_and_keeps_the_syscall_set(runner, dockerx):
    name, c = _watch(runner, dockerx)
    before = runner.call(runner.hub.kernel_counters)["process"][3]
    exec_in(name, "sh", "-c", "mkdir -p /tmp; cp /bin/busybox /tmp/bb; i=0; while [ $i -lt 40 ]; do /tmp/bb true; i=$((i+1)); done",
            check=True)
    runner.log.wait_for(type="ExecEvent", container_id=c.id, path="/tmp/bb")
    runner.log.wait_for(type="ExitEvent", container_id=c.id)
    execs = runner.log.matching(type="ExecEvent", container_id=c.id, path="/tmp/bb")
    assert len(execs) == 1
    deduped = runner.call(runner.hub.kernel_counters)["process"][3] - before
    assert deduped >= 39
    used = runner.call(runner.hub.maps.syscall_bitmap, c.cgroup_id)
    assert {NR_EXECVE, NR_EXIT_GROUP} <= used
    firsts = {e["nr"] for e in runner.log.matching(type="SyscallEvent", container_id=c.id, first=True)}
    assert firsts <= used and NR_EXECVE in firsts


def test_relearn_forgets_what_was_sent(runner, dockerx):
    name, c = _watch(runner, dockerx)
    exec_in(name, "/bin/hostname")
    runner.log.wait_for(type="ExecEvent", container_id=c.id, path="/bin/hostname")
    runner.call(runner.hub.maps.reset_novelty, c.cgroup_id)
    assert runner.call(runner.hub.maps.syscall_bitmap, c.cgroup_id) == set()
    exec_in(name, "/bin/hostname")
    runner.log.wait_for(type="ExecEvent", container_id=c.id, path="/bin/hostname",
                        pid=lambda p: p != runner.log.matching(type="ExecEvent", container_id=c.id)[0]["pid"])


def test_unwatched_container_sends_nothing(runner, dockerx):
    name = dockerx.run("--network", "none")  # never added to the inventory
    c = container_model(name)
    exec_in(name, "/bin/ls", "/")
    subprocess.run(["docker", "exec", name, "unshare", "-U", "true"], capture_output=True)
    watched, _ = _watch(runner, dockerx)
    exec_in(watched, "/bin/uname")
    runner.log.wait_for(type="ExecEvent", path="/bin/uname")
    assert not [e for e in runner.log.events if e["cgroup_id"] == c.cgroup_id]


def test_the_enforcers_own_container_is_not_watched(runner, dockerx):
    # Run as a container, the enforcer finds itself in the inventory: its own cgroup (here a
    # container standing in for it) must never be watched, or its bpf() calls are alerts.
    name = dockerx.run("--network", "none")
    c = container_model(name)
    runner.hub.maps.own_cgroup_id = c.cgroup_id
    try:
        runner.call(runner.inventory.add, c)
        assert runner.call(runner.hub.maps.policy, c.cgroup_id) is None
        exec_in(name, "/bin/ls", "/")
        watched, _ = _watch(runner, dockerx)
        exec_in(watched, "/bin/uname", "-a")
        runner.log.wait_for(type="ExecEvent", path="/bin/uname", argv=["/bin/uname", "-a"])
        assert not [e for e in runner.log.events if e["cgroup_id"] == c.cgroup_id]
    finally:
        runner.hub.maps.own_cgroup_id = 0


def test_pruning_drops_the_rewrite_guards_entries_of_cgroups_gone_while_no_enforcer_ran(runner, dockerx):
    from enforcer.sensors import layout as L

    _name, c = _watch(runner, dockerx)
    bpf = runner.hub.bpf
    gone = 987654321  # a cgroup id no live container has
    ident, full, quota = bpf[b"exec_identity"], bpf[b"rewrite_full"], bpf[b"marks_per_cgroup"]
    for cg in (gone, c.cgroup_id):
        ident[L.ExecIdentKey(cg, 5)] = L.InodeKey(1, 2, 0)
        full[full.Key(cg)] = full.Leaf(1)
        quota[quota.Key(cg)] = quota.Leaf(3)
    runner.call(runner.hub.maps.prune_stale)
    assert [k.cgroup for k in ident.keys()].count(gone) == 0
    assert gone not in [k.value for k in full.keys()] and gone not in [k.value for k in quota.keys()]
    # The live container keeps its own.
    assert c.cgroup_id in [k.cgroup for k in ident.keys()] and c.cgroup_id in [k.value for k in full.keys()]
    for table, key in ((full, full.Key(c.cgroup_id)), (quota, quota.Key(c.cgroup_id)),
                       (ident, L.ExecIdentKey(c.cgroup_id, 5))):
        del table[key]
