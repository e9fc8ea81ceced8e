"""Red team, issue 13 item 3: symlinks, hard links and relative paths must not walk past the
file sensor. Against a real enforcer (eBPF sensors and the fanotify inode watch) and real
busybox containers: every way of reaching /etc/shadow raises a sensitive-read alert naming
/etc/shadow; links, symlinks and renames onto or of sensitive files are sensitive writes; in
protect mode the open itself is refused (FAN_OPEN_PERM) while host processes still read the
file; and an enforcer killed with SIGKILL leaves no container blocked in open()."""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.enforce import sensing, wait_active
from support.harness import EnforcerProcess, container_info, exec_in, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

LEARN_SECONDS = 8
# The files an attacker is after (the busybox image has none), written from the host so that
# no write of the container's own raises an alert before the test's action does.
FILES = {"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n",
         "etc/shadow": "root:$6$secret:19000:0:99999:7:::\n", "root/.ssh/id_rsa": "private-key\n"}


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    with sensing(tmp_path_factory.mktemp("redteam-paths") / "enforcer", LEARN_SECONDS) as e:
        yield e


def _victim(enforcer: EnforcerProcess, dockerx: Any) -> str:
    """A running container whose sensitive files the inode watch has marked."""
    name = dockerx.run("--network", "none", command=["sleep", "3600"])
    info = container_info(name)
    cid, root = info["Id"], Path(f"/proc/{info['State']['Pid']}/root")
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    wait_for(lambda: any(c["name"] == name and c["state"] == "running" for c in enforcer.call("containers")),
             timeout=30, what=f"the enforcer to know {name}")
    # shadow, passwd, group and /root/.ssh: four inodes.
    wait_for(lambda: enforcer.call("status")["inode_watch"]["marked"].get(cid, 0) >= 4, timeout=30,
             what="the inode watch to mark the container's sensitive files")
    return name


def _alert(enforcer: EnforcerProcess, name: str, subject: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(lambda: next((a for a in enforcer.call("alerts", container=name)
                                  if a["kind"] == "file" and a["subject"] == subject), None),
                    timeout=timeout, what=f"a file alert {subject!r} for {name}")


def _sh(name: str, script: str) -> Any:
    proc = exec_in(name, "sh", "-c", script)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def test_read_through_a_symlinked_directory_names_the_real_file(enforcer, dockerx):
    name = _victim(enforcer, dockerx)
    _sh(name, "ln -s /etc /tmp/e && cat /tmp/e/shadow")
    alert = _alert(enforcer, name, "read /etc/shadow")
    assert alert["severity"] == "high" and alert["rule"] == "research:sensitive-file"
    assert "/etc/shadow" in alert["summary"]
    # The string the process passed was /tmp/e/shadow: only the inode watch can name it.
    assert alert["detail"]["opened_as"] == "/etc/shadow" and alert["detail"]["ino"]


def test_read_through_a_hard_link_is_a_read_of_the_file(enforcer, dockerx):
    name = _victim(enforcer, dockerx)
    _sh(name, "ln /etc/shadow /tmp/h && cat /tmp/h")
    alert = _alert(enforcer, name, "read /etc/shadow")
    assert alert["detail"]["opened_as"] in ("/tmp/h", "/etc/shadow")
    # Making the link is itself a sensitive write (the kernel's link count says so too).
    _alert(enforcer, name, "write /etc/shadow")


def test_relative_read_after_chdir(enforcer, dockerx):
    name = _victim(enforcer, dockerx)
    _sh(name, "cd /etc && cat shadow && cd /root/.ssh && cat id_rsa")
    _alert(enforcer, name, "read /etc/shadow")
    _alert(enforcer, name, "read /root/.ssh/id_rsa")


def test_write_through_a_symlinked_directory_counts_against_the_target(enforcer, dockerx):
    name = _victim(enforcer, dockerx)
    _sh(name, "ln -s /etc /tmp/e && echo 'x:$6$y:1::::::' >> /tmp/e/shadow")
    alert = _alert(enforcer, name, "write /etc/shadow")
    assert alert["severity"] == "critical" and alert["detail"]["op"] == "write"
    assert alert["detail"]["opened_as"] == "/etc/shadow"


def test_symlink_and_hard_link_to_sensitive_files_are_sensitive_writes(enforcer, dockerx):
    name = _victim(enforcer, dockerx)
    _sh(name, "ln -s /etc/shadow /tmp/x")
    alert = _alert(enforcer, name, "write /etc/shadow")
    assert alert["severity"] == "critical" and alert["detail"]["op"] == "symlink"
    _sh(name, "ln /etc/passwd /tmp/p")
    alert = _alert(enforcer, name, "write /etc/passwd")
    assert alert["severity"] == "critical" and alert["detail"]["op"] == "link"


def test_rename_onto_passwd_directly_and_through_a_symlinked_directory(enforcer, dockerx):
    name = _victim(enforcer, dockerx)
    _sh(name, "echo 'evil:x:0:0::/:/bin/sh' > /tmp/pw && mv /tmp/pw /etc/passwd")
    first = _alert(enforcer, name, "write /etc/passwd")
    assert first["severity"] == "critical" and first["detail"]["op"] in ("rename", "replace")
    other = _victim(enforcer, dockerx)
    # The name mv passes (/tmp/e/group) is not sensitive: the inode watch sees /etc/group
    # now reach another inode.
    _sh(other, "ln -s /etc /tmp/e && echo 'evil:x:0:' > /tmp/g && mv /tmp/g /tmp/e/group")
    alert = _alert(enforcer, other, "write /etc/group")
    assert alert["severity"] == "critical" and alert["detail"]["op"] == "replace"


def _open_in_container(pid: int, path: str) -> str:
    """open(path) by a process in the container's cgroup and root that execs nothing: forked
    from this test, it joins the container's cgroup, chroots into its root and opens. (Protect
    mode would kill any exec the profile has not learned; the open is what is under test.)
    Returns the first line read, or the error's name."""
    from enforcer.inventory.cgroups import cgroup_for_pid

    procs = Path(cgroup_for_pid(pid).path) / "cgroup.procs"
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            procs.write_text(str(os.getpid()))
            os.chroot(f"/proc/{pid}/root")
            os.chdir("/")
            if path.startswith("cd "):  # "cd DIR NAME": a relative open after chdir
                _, where, path = path.split()
                os.chdir(where)
            try:
                with open(path) as f:
                    out = f.readline().strip()
            except OSError as e:
                out = errno.errorcode.get(e.errno or 0, str(e))
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        # A wedged open would hang here: bounded, and the child is killed.
        if not select.select([r], [], [], 20)[0]:
            os.kill(child, signal.SIGKILL)
            os.close(r)
            raise AssertionError(f"open({path}) in the container did not return within 20 s")
        with os.fdopen(r) as f:
            return f.read()
    finally:
        os.waitpid(child, 0)


def test_protect_mode_refuses_the_open_and_a_dead_enforcer_wedges_nothing(enforcer, dockerx):
    name = _victim(enforcer, dockerx)
    pid = container_info(name)["State"]["Pid"]
    root = Path(f"/proc/{pid}/root")
    (root / "tmp/e").symlink_to("/etc")
    (root / "tmp/h").hardlink_to(root / "etc/shadow")
    assert _open_in_container(pid, "/tmp/e/shadow").startswith("root:")  # alert mode: read, alerted
    enforcer.cli("mode", name, "protect")
    wait_active(enforcer, name)
    wait_for(lambda: enforcer.call("status")["inode_watch"]["protected"] >= 1, timeout=20,
             what="the inode watch to see protect mode")
    time.sleep(2.5)  # one re-resolve: the marks ask for permission now

    for how in ("/tmp/e/shadow", "/tmp/h", "cd /etc shadow", "/root/.ssh/id_rsa"):
        assert _open_in_container(pid, how) == "EPERM", how
    alert = wait_for(lambda: next((a for a in enforcer.call("alerts", container=name)
                                   if a["subject"] == "read /root/.ssh/id_rsa"), None), timeout=20,
                     what="the denied read's alert")
    assert alert["action"] == "denied"
    # The container's ordinary files, and the host's opens of the same inode, are untouched.
    assert _open_in_container(pid, "/etc/passwd").startswith("root:x:0:0")
    assert "secret" in (root / "etc/shadow").read_text()

    # A dead enforcer: the kernel answers what was pending, later opens are not watched.
    enforcer.kill9()
    start = time.monotonic()
    assert "secret" in _open_in_container(pid, "/tmp/e/shadow")
    assert time.monotonic() - start < 10
