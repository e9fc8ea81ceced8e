"""Real users and groups for role tests: an admin group, a viewer group, and three users
(admin, viewer, outsider), removed afterwards; and a folder those users may enter (pytest's
tmp_path is 0700 under root, so the test users could not reach a socket there); an enforcer
whose socket those groups own; running a command as one of the users."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .harness import REPO, EnforcerProcess, sh, unique


@dataclass
class Principal:
    name: str
    uid: int
    gid: int


@dataclass
class Principals:
    admin_group: str
    viewer_group: str
    admin: Principal
    viewer: Principal
    outsider: Principal


@contextlib.contextmanager
def principals(prefix: str) -> Iterator[Principals]:
    """`prefix`: two or three letters that name this test module's users and groups."""
    tag = unique("")[:8]
    admin_group, viewer_group = f"{prefix}a{tag}", f"{prefix}v{tag}"
    made_users: list[str] = []
    made_groups: list[str] = []
    try:
        for g in (admin_group, viewer_group):
            sh("groupadd", g)
            made_groups.append(g)
        users = {}
        for role, groups in (("admin", f"{admin_group},{viewer_group}"), ("viewer", viewer_group), ("outsider", "")):
            name = f"{prefix}{role[0]}{tag}"
            args = ["useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin"]
            if groups:
                args += ["-G", groups]
            sh(*args, name)
            made_users.append(name)
            pw = pwd.getpwnam(name)
            users[role] = Principal(name, pw.pw_uid, pw.pw_gid)
        yield Principals(admin_group, viewer_group, users["admin"], users["viewer"], users["outsider"])
    finally:
        for u in made_users:
            sh("userdel", u, check=False)
        for g in made_groups:
            sh("groupdel", g, check=False)


def open_workdir(prefix: str) -> Path:
    """A folder the test users can enter."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    return d


@contextlib.contextmanager
def guarded_enforcer(p: Principals, prefix: str) -> Iterator[EnforcerProcess]:
    """A real enforcer (no sensors) whose socket belongs to the viewer group and whose
    admins are the admin group, in a folder the test users may enter."""
    workdir = open_workdir(prefix)
    try:
        e = EnforcerProcess(workdir / "e", "--no-sensors", "--socket-group", p.viewer_group,
                            "--admin-group", p.admin_group, "--viewer-group", p.viewer_group)
        os.chmod(workdir / "e", 0o755)
        with e.session():
            yield e
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def as_user(p: Principal, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command as the test user, with its own groups (initgroups), from the repo."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "TERM": "xterm-256color"}
    return subprocess.run(["setpriv", f"--reuid={p.uid}", f"--regid={p.gid}", "--init-groups", *cmd],
                          capture_output=True, text=True, timeout=timeout, cwd=str(REPO), env=env)
