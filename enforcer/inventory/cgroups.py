"""Container cgroups on either layout: cgroup v1 with a hybrid v2 mount, or pure cgroup v2.

eBPF's bpf_get_current_cgroup_id() returns the inode of the task's cgroup v2 directory, so
that is the id we need for each container. We read the v2 path from the `0::` line of
/proc/<pid>/cgroup and the v2 mount point from /proc/self/mountinfo, never assuming one
layout (`/sys/fs/cgroup/unified/docker/<id>`, `/sys/fs/cgroup/docker/<id>` and
`/sys/fs/cgroup/system.slice/docker-<id>.scope` all occur).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class CgroupInfo:
    cgroup_id: int
    path: str  # absolute directory of the v2 cgroup


@lru_cache(maxsize=1)
def cgroup2_mount() -> str | None:
    """Where the cgroup v2 hierarchy is mounted, or None (pure v1 host)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        pass
    return None


@lru_cache(maxsize=1)
def v1_freezer_mount() -> str | None:
    """Where the cgroup v1 freezer controller is mounted, or None."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = right.split()
                if fields and fields[0] == "cgroup" and "freezer" in fields[-1].split(","):
                    return left.split()[4]
    except OSError:
        pass
    return None


def cgroup_v2_relpath(pid: int) -> str | None:
    """The process's cgroup v2 path (e.g. /docker/<id>), or None if it has gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def cgroup_for_pid(pid: int) -> CgroupInfo | None:
    """The v2 cgroup of a process: its id (directory inode) and path."""
    mount = cgroup2_mount()
    rel = cgroup_v2_relpath(pid)
    if not mount or rel is None:
        return None
    path = os.path.join(mount, rel.lstrip("/"))
    try:
        return CgroupInfo(cgroup_id=os.stat(path).st_ino, path=path)
    except OSError:
        return None


def cgroup_pids(path: str) -> list[int]:
    """Every process in a cgroup and its descendants (exec'd tools may sit in a child)."""
    pids: list[int] = []
    for root, _dirs, files in os.walk(path):
        if "cgroup.procs" not in files:
            continue
        try:
            with open(os.path.join(root, "cgroup.procs")) as f:
                pids.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return sorted(set(pids))


def freezer_v1_state_file(container_id: str, pid: int) -> str | None:
    """The v1 freezer.state of a container (the one `docker pause` uses), if v1 is in use."""
    mount = v1_freezer_mount()
    if not mount:
        return None
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                parts = line.strip().split(":", 2)
                if len(parts) == 3 and "freezer" in parts[1].split(","):
                    candidate = os.path.join(mount, parts[2].lstrip("/"), "freezer.state")
                    if os.path.exists(candidate):
                        return candidate
    except OSError:
        pass
    candidate = os.path.join(mount, "docker", container_id, "freezer.state")
    return candidate if os.path.exists(candidate) else None
