"""The raw sys_exit program's per-CPU copy of the seen-syscalls word (bpf/syscall.c,
"the last seen words, per CPU") must never hide a first use: not another container's on
the same CPU (an attacker making every call cannot poison it), not after a relearn (the
generation changes). Real kernel, real containers on one CPU, an in-process SensorHub."""

from __future__ import annotations

import subprocess
import time
from typing import Any, Iterator

import pytest

from support.harness import DockerResources
from support.sensors import HubRunner, container_model, running_hub

pytestmark = [pytest.mark.docker, pytest.mark.bpf]

NR_READ = 0
# A busybox shell reading a file with its `read` builtin: openat, read, close... in a loop,
# no fork: the same few calls, from one CPU, as fast as it can.
HOT_LOOP = "while :; do read -r x < /proc/loadavg; done"


@pytest.fixture(scope="module")
def runner(busybox_image: str) -> Iterator[HubRunner]:
    with running_hub(dedup_ttl=60.0) as r:
        yield r


def _watch(runner: HubRunner, dockerx: DockerResources, *command: str) -> tuple[str, Any]:
    name = dockerx.run("--network", "none", "--cpuset-cpus", "1", **({"command": list(command)} if command else {}))
    c = container_model(name)
    runner.call(runner.inventory.add, c)
    return name, c


def _first_use_after(runner: HubRunner, since: int, cid: str, nr: int, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in runner.log.events[since:]:
            if e.get("type") == "SyscallEvent" and e.get("container_id") == cid and e.get("nr") == nr and e.get("first"):
                return e
        time.sleep(0.1)
    raise AssertionError(f"no first use of syscall {nr} in {cid[:12]} after event {since}")


def test_another_container_on_the_same_cpu_cannot_hide_a_first_use(runner, dockerx):
    _busy, b = _watch(runner, dockerx, "sh", "-c", HOT_LOOP)
    _first_use_after(runner, 0, b.id, NR_READ)  # the hot loop's calls are seen (and cached)
    quiet, q = _watch(runner, dockerx)  # sleeps: it has not called getppid
    since = len(runner.log.events)
    # The busy container calls read on CPU 1 all the time (CPU 1's copy of word 0 is its);
    # the quiet one, on the same CPU, reads once: its first use is its own.
    time.sleep(0.5)
    subprocess.run(["docker", "exec", quiet, "cat", "/proc/self/stat"], capture_output=True, check=True)
    _first_use_after(runner, since, q.id, NR_READ)


def test_a_relearn_reports_a_hot_call_again(runner, dockerx):
    name, c = _watch(runner, dockerx, "sh", "-c", HOT_LOOP)
    _first_use_after(runner, 0, c.id, NR_READ)
    time.sleep(0.5)  # the loop keeps calling read: the copy on CPU 1 says "seen"
    since = len(runner.log.events)
    runner.call(runner.hub.maps.reset_novelty, c.cgroup_id)
    # The new generation: the very next read is a first use again (the loop never stops
    # calling it, so it is reported within the copy's lifetime at worst).
    ev = _first_use_after(runner, since, c.id, NR_READ)
    assert ev["first"]
