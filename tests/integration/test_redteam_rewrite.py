"""Red team, a learned binary replaced and run at once (the rewrite guard, bpf/common.h).

In alert and protect mode the kernel lets an exec of an allowed path through without an
event. Before the guard, a process that rewrote an allowed binary and ran it straight
away won the race with user space (which takes the path out of the allow-list only after
it has seen the write): no alert, and no kill in protect. Now a watched container's
open-for-write marks the file by its identity (device, inode) before the open returns,
and an exec whose binary carries a mark is judged as if its path were not allowed; a
rename or unlink at an allowed path takes the path out of the kernel's allow-list before
it happens.

Each attack below is one shell command in the container: write (under another name for
the same file), then exec at once. The binaries are two static programs copied in by the
host (`docker cp`, so never marked): /opt/tool1..5 (learned, print "ok") and /opt/evil,
evil2 (never run while learning, print "evil").
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from support.enforce import sensing, wait_active, wait_known
from support.harness import EnforcerProcess, container_info, docker, exec_in, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

LEARN_SECONDS = 10
SOURCE = '#include <unistd.h>\nint main(void) { write(1, WHO "\\n", sizeof(WHO)); return 0; }\n'
# Creates N files in the current directory as fast as it can (one open for writing each).
FILL = """#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    char name[32];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "f%d", i);
        int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0) return 1;
        close(fd);
    }
    return 0;
}
"""
MARKS_PER_CONTAINER = 32768  # bpf/common.h


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    with sensing(tmp_path_factory.mktemp("redteam-rewrite") / "enforcer", LEARN_SECONDS) as e:
        yield e


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """opt/tool1..5 and opt/evil, evil2: two different static programs."""
    out = tmp_path_factory.mktemp("rewrite") / "opt"
    out.mkdir()
    src = out.parent / "who.c"
    src.write_text(SOURCE)
    names = [(f"tool{i}", "ok") for i in range(1, 6)] + [("evil", "evil"), ("evil2", "evil")]
    for name, who in names:
        subprocess.run(["gcc", "-O2", "-static", f'-DWHO="{who}"', "-o", str(out / name), str(src)],
                       check=True, capture_output=True)
    (out / "run.sh").write_text("#!/bin/sh\necho script ok\n")
    (out / "run.sh").chmod(0o755)
    fill = out.parent / "fill.c"
    fill.write_text(FILL)
    subprocess.run(["gcc", "-O2", "-static", "-o", str(out / "fill"), str(fill)], check=True, capture_output=True)
    return out


def _learned(e: EnforcerProcess, dockerx, programs: Path, mode: str) -> str:
    c = dockerx.run(network=dockerx.network())
    docker("cp", str(programs), f"{c}:/")
    wait_known(e, c)
    for i in range(1, 6):
        assert exec_in(c, f"/opt/tool{i}").stdout.strip() == "ok"
    assert exec_in(c, "/opt/run.sh").stdout.strip() == "script ok"
    # The shell and the tools the attacks use are learned too: protect must stop the
    # binary, not the shell around it.
    exec_in(c, "sh", "-c", "cd /tmp && cat /opt/tool1 > t && mv t u && ln u v && ln -s u w && rm u v w; echo rc=$?",
            check=True)
    exec_in(c, "sh", "-c", "mkdir -p /tmp/fill && cd /tmp/fill && /opt/fill 1", check=True)
    before = _guard(e)["identities"]
    e.cli("mode", c, mode)
    wait_active(e, c)
    wait_for(lambda: e.call("container", target=c)["mode"] == mode, what=f"{mode} mode")
    # Which file each allowed path names in this container (its five tools among them).
    wait_for(lambda: _guard(e)["identities"] >= before + 5, timeout=20, what="the exec identities")
    return c


def _guard(e: EnforcerProcess) -> dict:
    return e.call("stats")["rewrite_guard"]


def _alert(e: EnforcerProcess, container: str, summary: str, kind: str = "process") -> dict:
    return wait_for(lambda: next((a for a in e.call("alerts", container=container)
                                  if a["kind"] == kind and summary in a["summary"]), None),
                    timeout=30, what=f"a {kind} alert saying {summary!r}")


REWRITES = [  # (the shell's working directory, the name the write uses, the name the exec uses)
    ("/", "/proc/self/root/opt/tool1", "/opt/tool1"),
    ("/opt", "tool2", "/opt/tool2"),
    ("/tmp", "../opt/./tool3", "/opt/tool3"),
    ("/", "//opt//tool4", "/opt/tool4"),
    ("/", "/opt/tool5", "/opt/tool5"),
]


def test_a_learned_binary_rewritten_and_run_at_once_is_alerted_every_time(enforcer, dockerx, programs):
    c = _learned(enforcer, dockerx, programs, "alert")
    guard = _guard(enforcer)
    assert guard["on"], guard
    before = guard["held_execs"]
    for cwd, write_as, run_as in REWRITES:
        proc = exec_in(c, "sh", "-c", f"cd {cwd} && cat /opt/evil > {write_as} && {run_as}")
        assert proc.stdout.strip() == "evil", proc  # alert mode: it runs, and is seen
    for _cwd, _write_as, run_as in REWRITES:
        alert = _alert(enforcer, c, f"binary changed at learned path {run_as}")
        assert alert["detail"]["rewritten"] is True and alert["detail"]["sha256"], alert["detail"]
    assert _guard(enforcer)["held_execs"] - before >= len(REWRITES)
    # The status says the guard is on and what it holds.
    assert "guard on" in enforcer.cli("status").stdout


def test_in_protect_mode_a_rewritten_binary_never_runs_and_an_untouched_one_does(enforcer, dockerx, programs):
    c = _learned(enforcer, dockerx, programs, "protect")
    assert exec_in(c, "/opt/tool5").stdout.strip() == "ok"  # never written: the allow-list alone
    for cwd, write_as, run_as in REWRITES[:4]:
        proc = exec_in(c, "sh", "-c", f"cd {cwd} && cat /opt/evil > {write_as} && {run_as}; echo rc=$?")
        assert "evil" not in proc.stdout and "rc=137" in proc.stdout, (write_as, proc)
        assert _alert(enforcer, c, run_as)["action"] == "killed"
    assert exec_in(c, "/opt/tool5").stdout.strip() == "ok"  # the others' writes did not touch it
    # A script's exec runs its interpreter: the identity pinned for its path is the shell's.
    assert exec_in(c, "/opt/run.sh").stdout.strip() == "script ok"


def test_in_protect_mode_a_binary_moved_or_linked_over_an_allowed_path_never_runs(enforcer, dockerx, programs):
    c = _learned(enforcer, dockerx, programs, "protect")
    # /opt/evil was copied in by the host: never opened for writing in the container, so
    # only the path's removal at the rename (or the unlink) stands between it and a run.
    proc = exec_in(c, "sh", "-c", "mv /opt/evil /opt/tool1 && /opt/tool1; echo rc=$?")
    assert "evil" not in proc.stdout and "rc=137" in proc.stdout, proc
    proc = exec_in(c, "sh", "-c", "rm /opt/tool2 && ln /opt/evil2 /opt/tool2 && /opt/tool2; echo rc=$?")
    assert "evil" not in proc.stdout and "rc=137" in proc.stdout, proc
    # Removed under another name (which the kernel cannot tie to the allowed one), then a
    # symlink put in its place under the allowed name.
    proc = exec_in(c, "sh", "-c", "rm /proc/self/root/opt/tool3 && ln -s /opt/evil2 /opt/tool3 && /opt/tool3; "
                                  "echo rc=$?")
    assert "evil" not in proc.stdout and "rc=137" in proc.stdout, proc
    for path in ("/opt/tool1", "/opt/tool2", "/opt/tool3"):
        assert _alert(enforcer, c, path)["action"] == "killed"
    assert exec_in(c, "/opt/tool4").stdout.strip() == "ok"


def test_a_removed_containers_marks_go_with_its_root(enforcer, dockerx, programs):
    # Its root's device number goes back to the kernel and the next container's root may
    # get it: marks left on it would hold that container's untouched binaries.
    c = _learned(enforcer, dockerx, programs, "alert")
    before = _guard(enforcer)["tracked"]
    exec_in(c, "sh", "-c", "cd /tmp && for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do "
                           "cat /opt/tool1 > t$i; done", check=True)
    wait_for(lambda: _guard(enforcer)["tracked"] >= before + 20, timeout=30, what="the writes to be marked")
    docker("rm", "-f", c)
    wait_for(lambda: _guard(enforcer)["tracked"] <= before, timeout=30, what="the marks to be swept")


def test_a_container_past_its_mark_quota_fails_closed_alone_and_says_so(enforcer, dockerx, programs):
    a = _learned(enforcer, dockerx, programs, "protect")
    b = _learned(enforcer, dockerx, programs, "protect")
    # A writes more distinct files than its quota: the marks it can no longer store would
    # be rewrites the kernel cannot see, so its allowed programs are all held now.
    exec_in(a, "sh", "-c", f"mkdir -p /tmp/fill && cd /tmp/fill && /opt/fill {MARKS_PER_CONTAINER + 100}",
            check=True, timeout=300)
    guard = wait_for(lambda: (g := _guard(enforcer))["failing_closed"] >= 1 and g, timeout=20,
                     what="A to fail closed")
    assert guard["marks_lost"] >= 100, guard
    proc = exec_in(a, "sh", "-c", "/opt/tool5; echo rc=$?")
    assert "ok" not in proc.stdout, proc  # never written, but A can no longer be vouched for
    alert = _alert(enforcer, a, "rewrite guard full", kind="file")
    assert alert["severity"] == "high" and alert["rule"] == "research:rewrite-guard-full", alert
    assert "1 containers failing closed" in enforcer.cli("status").stdout
    # B is not held for A's writes: its untouched program runs, and its rewrites are still marked.
    assert exec_in(b, "/opt/tool5").stdout.strip() == "ok"
    proc = exec_in(b, "sh", "-c", "cat /opt/evil > /opt/tool4 && /opt/tool4; echo rc=$?")
    assert "evil" not in proc.stdout and "rc=137" in proc.stdout, proc
    # Gone with A: its quota, its flag and its marks.
    docker("rm", "-f", a)
    wait_for(lambda: _guard(enforcer)["failing_closed"] == 0, timeout=30, what="A's flag to go")


def _rewrite_and_run_nested(pid: int) -> int:
    """From a child cgroup of the container (where a process that can write its cgroupfs may
    move itself), rewrite /opt/tool4 and exec it at once, chrooted into the container's root.
    Forked from the test: returns the child's wait status."""
    from enforcer.inventory.cgroups import cgroup_for_pid

    nested = Path(cgroup_for_pid(pid).path) / "stockade-nested"
    nested.mkdir(exist_ok=True)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            # Into the container's root first (chroot is a dangerous syscall: protect would
            # kill it inside), then into the child cgroup, through a descriptor opened before.
            procs = os.open(nested / "cgroup.procs", os.O_WRONLY)
            os.chroot(f"/proc/{pid}/root")
            os.chdir("/opt")
            os.write(procs, str(os.getpid()).encode())
            with open("evil", "rb") as src, open("tool4", "wb") as dst:
                dst.write(src.read())
            os.execv("/opt/tool4", ["/opt/tool4"])
        finally:
            os._exit(3)
    _, status = os.waitpid(child, 0)
    return status


def test_a_rewrite_from_a_child_cgroup_is_marked_for_its_container(enforcer, dockerx, programs):
    c = _learned(enforcer, dockerx, programs, "protect")
    status = _rewrite_and_run_nested(container_info(c)["State"]["Pid"])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert _alert(enforcer, c, "/opt/tool4")["action"] == "killed"


def test_a_file_moved_to_an_allowed_path_under_another_name_is_not_the_allowed_one(enforcer, dockerx, programs):
    # The rename names the allowed path in a way the kernel cannot tie to it at the rename
    # (relative, through /proc/self/root): the file that runs is not the one found at the
    # path when it was allowed, and /opt/evil was never opened for writing in the container.
    c = _learned(enforcer, dockerx, programs, "protect")
    for move in ("cd /opt && mv evil tool1", "mv /opt/evil2 /proc/self/root/opt/tool2"):
        proc = exec_in(c, "sh", "-c", f"{move} && /opt/{'tool1' if 'tool1' in move else 'tool2'}; echo rc=$?")
        assert "evil" not in proc.stdout and "rc=137" in proc.stdout, (move, proc)
    for path in ("/opt/tool1", "/opt/tool2"):
        alert = _alert(enforcer, c, path)
        assert alert["action"] == "killed" and alert["detail"].get("other_file") is True, alert["detail"]
    assert exec_in(c, "/opt/tool3").stdout.strip() == "ok"
