"""The kernel's path scan (bpf/file.c scan_path): a read-only open leaves the kernel only
when its path is sensitive by the kernel's own test, an exact path, a prefix, a directory
name, or a last component worth a second look. The test is branch-free (is_equal), so that
the verifier walks the loop once per character; this checks each kind of match, and the
near misses, on the real kernel through an in-process SensorHub and a real container."""

from __future__ import annotations

from typing import Iterator

import pytest

from support.harness import exec_in
from support.sensors import HubRunner, container_model, running_hub

pytestmark = [pytest.mark.docker, pytest.mark.bpf]

SETUP = ("mkdir -p /root/.ssh /root/.aws /root/.awsx /etc/sudoers.d && "
         "touch /root/.ssh/id_rsa /root/.aws/config /root/.awsx/config /etc/sudoers.d/extra /etc/shadowx")


@pytest.fixture(scope="module")
def runner(busybox_image: str) -> Iterator[HubRunner]:
    with running_hub(dedup_ttl=60.0) as r:
        yield r


def _reads(runner: HubRunner, cid: str) -> set[str]:
    return {e["path"] for e in runner.log.matching(type="FileEvent", container_id=cid, op="read")}


def test_each_kind_of_sensitive_path_is_sent_and_the_near_misses_are_not(runner, dockerx):
    name = dockerx.run("--network", "none")
    c = container_model(name)
    runner.call(runner.inventory.add, c)
    assert exec_in(name, "sh", "-c", SETUP).returncode == 0
    script = ("cat /etc/shadow /etc/sudoers.d/extra /root/.aws/config >/dev/null; "
              "cd /root/.ssh && cat id_rsa >/dev/null; "
              "cat /etc/hostname /root/.awsx/config /etc/shadowx >/dev/null; "
              "echo x > /tmp/scan-marker")
    exec_in(name, "sh", "-c", script)
    runner.log.wait_for(type="FileEvent", container_id=c.id, path="/tmp/scan-marker")
    expected = {
        "/etc/shadow",            # exact
        "/etc/sudoers.d/extra",   # prefix
        "/root/.aws/config",      # a directory named .aws (config is no sensitive name)
    }
    for path in expected:
        runner.log.wait_for(type="FileEvent", container_id=c.id, op="read", path=path)
    # Opened as "id_rsa": only its name can match in the kernel. User space names it in full
    # when it can still read the process's cwd (cat is often gone by then).
    runner.log.wait_for(type="FileEvent", container_id=c.id, op="read", path=lambda p: p in ("id_rsa", "/root/.ssh/id_rsa"))
    reads = _reads(runner, c.id)
    # Ordinary reads and near misses (.awsx, shadowx) never leave the kernel.
    assert not reads & {"/etc/hostname", "/root/.awsx/config", "/etc/shadowx"}, reads
