"""Lineage of an alert from the fanotify inode watch, against a real enforcer: the watch runs
in its own thread and can hand `cat /etc/shadow` to the detector before the process
sensor's exec of cat; the incident must still name the story it belongs to, the `docker
exec` shell that ran cat (not a "no process" row in the stories view)."""

from __future__ import annotations

import subprocess
from typing import Any, Iterator

import pytest

from support.enforce import sensing
from support.harness import DockerResources, EnforcerProcess, container_info, docker, unique, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

LEARN_SECONDS = 8


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    with sensing(tmp_path_factory.mktemp("lineage") / "enforcer", LEARN_SECONDS) as e:
        yield e


@pytest.fixture
def res() -> Iterator[DockerResources]:
    r = DockerResources()
    yield r
    r.cleanup()


def _exec_shell_pid(name: str, marker: str) -> int:
    """The host pid of the `docker exec` shell whose script carries `marker` (docker top
    lists the container's processes with their host pids)."""
    out = docker("top", name, "-eo", "pid,args").stdout.splitlines()[1:]
    pids = [int(line.split(None, 1)[0]) for line in out if marker in line and " -c " in line]
    assert len(pids) == 1, out
    return pids[0]


def test_a_docker_exec_shell_reading_shadow_is_the_lineage_root_of_the_alert(
        enforcer: EnforcerProcess, res: DockerResources) -> None:
    e = enforcer
    name = res.run("--network", "none", command=["sleep", "3600"])
    cid = container_info(name)["Id"]
    wait_for(lambda: any(c["name"] == name and c["state"] == "running" for c in e.call("containers")),
             timeout=30, what=f"the enforcer to know {name}")
    wait_for(lambda: e.call("status")["inode_watch"]["marked"].get(cid, 0) >= 1, timeout=30,
             what="the inode watch to mark /etc/shadow")
    marker = unique("mark")
    # cat and sleep are forked by the shell (neither is its last command, which busybox sh
    # would exec in its place), so the shell is the root and cat its child.
    shell = subprocess.Popen(["docker", "exec", name, "sh", "-c", f"cat /etc/shadow > /dev/null; sleep 8; echo {marker}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        root_pid = wait_for(lambda: _exec_shell_pid(name, marker) if marker in docker(
            "top", name, "-eo", "pid,args").stdout else None, timeout=10, what="the exec shell")

        def alert() -> dict[str, Any] | None:
            return next((a for a in e.call("alerts", container=name)
                         if a["subject"] == "read /etc/shadow" and a.get("lineage")), None)

        found = wait_for(alert, timeout=20, what="a shadow read with its lineage")
        assert found["lineage"]["pid"] == root_pid, (found["lineage"], found["detail"])
        assert found["lineage"]["path"] == "/bin/sh"
        assert found["detail"]["pid"] != root_pid  # cat, the shell's child
    finally:
        shell.wait(30)
