"""How written paths become profile entries: normalising, noise, and generalising to prefixes.

Why generalise: a database writes /var/lib/postgresql/data/base/16384/2619 today and
.../2620 tomorrow; learning each file would alert forever. So a write teaches the
directory it happened in, cut at a depth of three ("/var/lib/postgresql/"), and temp
roots teach themselves whole ("/tmp/"). System directories are the exception: a write to
/etc/hostname must not allow /etc/crontab, so under them only the exact file is learned.
Writes to pseudo-devices (/dev/null, terminals, a process's own fds) are noise, never
entries and never alerts.
"""

from __future__ import annotations

import posixpath
import re

MAX_PREFIX_DEPTH = 3

# Learned as exact files, never as a prefix.
SYSTEM_DIRS: tuple[str, ...] = (
    "/etc/", "/bin/", "/sbin/", "/usr/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/boot/",
    "/root/", "/proc/", "/sys/",
)
# Names inside are random by design: the root itself is the prefix.
TEMP_ROOTS: tuple[str, ...] = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/", "/var/run/")

_NOISE_EXACT = frozenset({
    "/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/ptmx", "/dev/console",
    "/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/random", "/dev/urandom",
    "/proc/self/fd", "/proc/thread-self",
})
_NOISE_PREFIXES: tuple[str, ...] = ("/dev/pts/", "/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/")
_PROC_PID = re.compile(r"^/proc/\d+(?=/|$)")
_PROC_TASK = re.compile(r"^/proc/self/task/\d+(?=/|$)")


def normalise(path: str) -> str:
    """Lexically clean a container path; /proc/<pid>/... becomes /proc/self/...

    (Another process's /proc entry written by a container is still /proc/self here: the
    profile cares that /proc/*/oom_score_adj is written, not by which pid.)
    """
    if not path:
        return path
    p = posixpath.normpath(path)
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    if p.startswith("/proc/"):
        p = _PROC_PID.sub("/proc/self", p)
        p = _PROC_TASK.sub("/proc/thread-self", p)
    return p


def is_noise(path: str) -> bool:
    return path in _NOISE_EXACT or path.startswith(_NOISE_PREFIXES)


def generalise(path: str) -> str:
    """The file entry key a write to `path` (normalised, absolute) teaches ("" for "/")."""
    if path == "/":
        return ""  # never a prefix: it would allow every write
    if not path.startswith("/"):
        return path
    for root in TEMP_ROOTS:
        if path.startswith(root):
            return root
    if path.startswith(SYSTEM_DIRS):
        return path
    directory = posixpath.dirname(path)
    if directory == "/":
        return path  # a file at the root: only itself
    parts = directory.strip("/").split("/")[:MAX_PREFIX_DEPTH]
    return "/" + "/".join(parts) + "/"


def seed_prefix(path: str) -> str | None:
    """A declared writable place (volume, tmpfs, working dir) as a prefix; None for "/" or a system dir."""
    p = normalise(path)
    if not p.startswith("/") or p == "/" or (p + "/").startswith(SYSTEM_DIRS):
        return None
    return p.rstrip("/") + "/"
