"""A compose override that hardens an app as far as its learned profiles justify (pure).

Per service:
- `security_opt`: the service's seccomp profile (learned syscalls + runtime needs) and
  `no-new-privileges:true`;
- `cap_drop: [ALL]` and `cap_add` only for what the profile shows a use of (a listener
  below 1024 -> NET_BIND_SERVICE, set*id syscalls -> SETUID/SETGID, chown -> CHOWN/FOWNER,
  ...), each with the evidence as a comment;
- `read_only: true` when every write is inside a volume, a tmpfs, a place Docker mounts
  itself (/dev, /etc/hosts...) or a temp directory, which then gets a `tmpfs`; otherwise
  the comment names the paths that keep the root writable. Writes are the profile's
  learned file entries plus what `docker diff` shows of the running containers (that
  also covers the first milliseconds of a container, before the sensors watch it).

All text a container could influence (paths, names) is written as a JSON-quoted YAML
string, and comments are escaped to one line: a hostile path cannot add YAML keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

# Written by Docker itself (bind mounts or pseudo file systems): fine under read_only.
DOCKER_MANAGED: tuple[str, ...] = ("/dev/", "/proc/", "/sys/", "/etc/hosts", "/etc/hostname",
                                   "/etc/resolv.conf", "/etc/mtab")
# Temp roots: writes here are fine once the directory is a tmpfs.
TMPFS_ROOTS: tuple[str, ...] = ("/tmp/", "/var/tmp/", "/run/", "/var/run/", "/dev/shm/")

# capability -> syscalls whose use justifies it
CAPABILITY_SYSCALLS: dict[str, tuple[str, ...]] = {
    "SETUID": ("setuid", "setreuid", "setresuid", "setfsuid"),
    "SETGID": ("setgid", "setregid", "setresgid", "setfsgid", "setgroups"),
    "CHOWN": ("chown", "fchown", "lchown", "fchownat"),
    "FOWNER": ("chown", "fchown", "lchown", "fchownat"),
    "MKNOD": ("mknod", "mknodat"),
    "SYS_CHROOT": ("chroot",),
}


@dataclass(slots=True)
class ServiceFacts:
    """What the profile of one service learned, and what its compose file declares."""

    name: str
    seccomp_path: str  # where its seccomp profile was written
    syscalls: set[str] = field(default_factory=set)
    written: list[str] = field(default_factory=list)  # learned file entries (prefixes end in "/") + docker diff
    listeners: list[tuple[str, int]] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)  # container-side mount points
    tmpfs: list[str] = field(default_factory=list)
    user: str = ""  # image or compose user ("" = root)
    profile_id: int = 0
    profile_state: str = ""  # learning | active | "" (no profile yet)


@dataclass(slots=True)
class Decision:
    cap_add: dict[str, str] = field(default_factory=dict)  # capability -> why
    read_only: bool = False
    read_only_why: str = ""
    tmpfs: list[str] = field(default_factory=list)


def _under(path: str, place: str) -> bool:
    place = place.rstrip("/")
    return path == place or path.startswith(place + "/") or (path.rstrip("/") == place)


def decide(s: ServiceFacts) -> Decision:
    d = Decision()
    # Capabilities.
    low = sorted({p for proto, p in s.listeners if 0 < p < 1024})
    if low:
        d.cap_add["NET_BIND_SERVICE"] = "listens on " + ", ".join(f"port {p}" for p in low)
    for cap, calls in CAPABILITY_SYSCALLS.items():
        used = sorted(set(calls) & s.syscalls)
        if used:
            d.cap_add[cap] = "uses " + ", ".join(used)
    if {"kill", "tgkill"} & s.syscalls and "SETUID" in d.cap_add:
        d.cap_add["KILL"] = "signals processes after switching user"
    # Read-only root.
    blocking: list[str] = []
    tmpfs: list[str] = []
    declared = [v for v in s.volumes + s.tmpfs if v.startswith("/")]
    for path in sorted(set(s.written)):
        if not path.startswith("/"):
            continue
        if any(path.startswith(m) if m.endswith("/") else path == m for m in DOCKER_MANAGED):
            continue
        if any(_under(path, place) for place in declared):
            continue
        root = next((r for r in TMPFS_ROOTS if path.startswith(r) or path + "/" == r), None)
        if root is not None:
            mount = root.rstrip("/")
            if mount not in tmpfs and mount != "/dev/shm":  # Docker already mounts /dev/shm
                tmpfs.append(mount)
            continue
        blocking.append(path)
    if blocking:
        d.read_only_why = "writes outside volumes and tmpfs: " + ", ".join(blocking[:5]) + \
                          (f" (+{len(blocking) - 5} more)" if len(blocking) > 5 else "")
    else:
        d.read_only = True
        d.tmpfs = tmpfs
        d.read_only_why = "every learned write is in a volume or tmpfs"
    return d


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=True)


def _comment(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)[1:-1]


def render_override(app: str, services: Iterable[ServiceFacts], version: str | None, generated: str) -> str:
    lines = [
        f"# Stockade hardening for app {_comment(app)}, generated {generated} from learned profiles.",
        "# Use: docker-compose -f <your compose file> -f <this file> up -d",
    ]
    if version:
        lines.append(f"version: {_q(version)}")
    lines.append("services:")
    any_service = False
    for s in services:
        any_service = True
        d = decide(s)
        state = f"profile {s.profile_id} ({s.profile_state})" if s.profile_id else "no profile yet"
        lines.append(f"  # {_comment(s.name)}: {state}; {len(s.syscalls)} syscalls, {len(s.written)} write places, "
                     f"{len(s.listeners)} listeners learned")
        if s.profile_state == "learning":
            lines.append("  # still learning: regenerate once the profile is active")
        lines.append(f"  {_q(s.name)}:")
        lines.append("    security_opt:")
        lines.append(f"      - {_q('seccomp:' + s.seccomp_path)}")
        lines.append(f"      - {_q('no-new-privileges:true')}")
        lines.append("    cap_drop:")
        lines.append(f"      - {_q('ALL')}")
        if d.cap_add:
            lines.append("    cap_add:")
            for cap, why in sorted(d.cap_add.items()):
                lines.append(f"      - {_q(cap)}  # {_comment(why)}")
        if d.read_only:
            lines.append(f"    read_only: true  # {_comment(d.read_only_why)}")
        else:  # never `false`: an override must not undo a read_only the compose file sets
            lines.append(f"    # not read_only: {_comment(d.read_only_why)}")
        if d.read_only and d.tmpfs:
            lines.append("    tmpfs:")
            for mount in d.tmpfs:
                lines.append(f"      - {_q(mount)}")
    if not any_service:
        lines.append("  {}")
    return "\n".join(lines) + "\n"
