"""Freeze and unfreeze against real containers and the real cgroup freezer (v1, and v2 on
the hybrid layout), Docker's own pause respected, freezes kept across a restart; killing
a process only inside the named container."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from support.enforce import v1_state, wait_known, wait_reconciled
from enforcer.enforce import freezer as fz
from enforcer.inventory.cgroups import cgroup_for_pid, freezer_v1_state_file
from enforcer.models import Container
from support.harness import container_info, docker, exec_in, wait_for

pytestmark = pytest.mark.docker

# A process that counts: frozen, the count stands still.
COUNTER = ["sh", "-c", "mkdir -p /tmp; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"]


def count(name: str) -> int:
    """The counter read through the host's view of the container's root (works while frozen)."""
    pid = container_info(name)["State"]["Pid"]
    with open(f"/proc/{pid}/root/tmp/count") as f:
        return int(f.read().strip() or 0)


def as_container(name: str) -> Container:
    info = container_info(name)
    cg = cgroup_for_pid(info["State"]["Pid"])
    assert cg is not None
    return Container(id=info["Id"], name=name, app=name, service=name, image="", state="running",
                     pid=info["State"]["Pid"], cgroup_id=cg.cgroup_id, cgroup_path=cg.path)


@pytest.mark.nftables
def test_freeze_stops_every_process_and_unfreeze_resumes(dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--no-sensors")
    name = dockerx.run(command=COUNTER)
    wait_known(e, name)
    wait_for(lambda: count(name) > 2, what="the counter to run")

    out = e.cli("freeze", name).stdout
    assert "FROZEN" in out
    assert v1_state(name) == "FROZEN"  # the file `docker pause` uses, read back directly
    frozen_at = count(name)
    time.sleep(0.5)
    assert count(name) == frozen_at
    c = e.call("container", target=name)
    assert c["frozen"] is True

    result = e.cli_json("unfreeze", name)
    assert result["state"] == "THAWED"
    assert v1_state(name) == "THAWED"
    wait_for(lambda: count(name) > frozen_at + 2, what="the counter to run again")
    assert e.call("container", target=name)["frozen"] is False
    actions = [(x["action"], x["result"]) for x in e.call("audit")]
    assert ("freeze", "ok") in actions and ("unfreeze", "ok") in actions


def test_cgroup_v2_freezer_freezes_and_thaws(dockerx, busybox_image):
    name = dockerx.run(command=COUNTER)
    wait_for(lambda: count(name) > 2, what="the counter to run")
    c = as_container(name)
    f = fz.freezer_for(c, prefer="v2")
    assert f.backend == "v2" and os.path.exists(os.path.join(f.path, "cgroup.freeze"))
    assert f.freeze() == fz.FROZEN
    with open(os.path.join(f.path, "cgroup.events")) as ev:
        assert "frozen 1" in ev.read()
    frozen_at = count(name)
    time.sleep(0.4)
    assert count(name) == frozen_at
    assert fz.is_frozen(c)
    assert f.thaw() == fz.THAWED
    wait_for(lambda: count(name) > frozen_at + 2, what="the counter to run again")
    assert not fz.is_frozen(c)


@pytest.mark.nftables
def test_docker_pause_is_respected(dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--no-sensors")
    name = dockerx.run(command=COUNTER)
    wait_known(e, name)
    docker("pause", name)
    wait_for(lambda: e.call("container", target=name)["state"] == "paused", what="the pause to be seen")
    result = e.cli_json("freeze", name)
    assert result == {"container": name, "state": "FROZEN", "paused_by_docker": True}
    proc = e.cli("unfreeze", name, check=False)
    assert proc.returncode != 0 and "docker unpause" in proc.stderr
    assert v1_state(name) == "FROZEN"  # Stockade did not thaw what Docker paused
    docker("unpause", name)
    assert v1_state(name) == "THAWED"


@pytest.mark.nftables
def test_freeze_survives_restart_and_is_reapplied(dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--no-sensors")
    name = dockerx.run(command=COUNTER)
    wait_known(e, name)
    e.cli("freeze", name)
    e.stop()
    assert v1_state(name) == "FROZEN"  # nothing to hold it but the kernel
    # Thawed behind the enforcer's back while it is down: the next start freezes it again.
    info = container_info(name)
    with open(freezer_v1_state_file(info["Id"], info["State"]["Pid"]) or "", "w") as f:
        f.write("THAWED")
    e.start()
    wait_reconciled(e)
    assert v1_state(name) == "FROZEN"
    assert e.cli_json("unfreeze", name)["state"] == "THAWED"
    e.restart()
    wait_reconciled(e)
    assert v1_state(name) == "THAWED"  # unfreeze was stored too


@pytest.mark.nftables
def test_kill_only_inside_the_container(dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--no-sensors")
    name = dockerx.run(command=["sh", "-c", "sleep 1000 & sleep 1001 & wait"])
    other = dockerx.run()
    wait_known(e, name, other)

    def pids_of(cname: str, argv0: str) -> list[int]:
        out = []
        for c in e.call("containers"):
            if c["name"] == cname:
                for pid in c["pids"]:
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            if f.read().split(b"\0")[:2] == [b"sleep", argv0.encode()]:
                                out.append(pid)
                    except OSError:
                        pass
        return out

    [victim] = wait_for(lambda: pids_of(name, "1000"), what="the sleep process")
    result = e.cli_json("kill", name, str(victim))
    assert result == {"pid": victim, "signal": "KILL"}
    wait_for(lambda: not os.path.exists(f"/proc/{victim}") or _zombie(victim), what="the process to die")
    assert pids_of(name, "1001"), "the rest of the container keeps running"

    # A process of another container, and one of the host: refused, and left alive.
    [foreign] = wait_for(lambda: pids_of(other, "3600"), what="the other container's process")
    proc = e.cli("kill", name, str(foreign), check=False)
    assert proc.returncode != 0 and "not in container" in proc.stderr
    host = subprocess.Popen(["sleep", "30"])
    try:
        proc = e.cli("kill", name, str(host.pid), check=False)
        assert proc.returncode != 0 and "not in container" in proc.stderr
        assert host.poll() is None
    finally:
        host.kill()
        host.wait()
    assert os.path.exists(f"/proc/{foreign}")
    refused = [x for x in e.call("audit") if x["action"] == "kill" and x["result"].startswith("error")]
    assert len(refused) == 2
    assert exec_in(other, "true").returncode == 0


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
