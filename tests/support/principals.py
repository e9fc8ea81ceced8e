"""Real users and groups for role tests: an admin group, a viewer group, and three users
(admin, viewer, outsider), removed afterwards; and a folder those users may enter (pytest's
tmp_path is 0700 under root, so the test users could not reach a socket there)."""

from __future__ import annotations

import contextlib
import os
import pwd
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .harness import sh, unique


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
