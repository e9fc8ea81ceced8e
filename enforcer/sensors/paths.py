"""Paths as a container sees them: the kernel's path hash, the sensitive-path list, and
resolving a container path (symlinks included) inside the container's root.

The kernel side (bpf/file.c, bpf/process.c) hashes path strings with FNV-1a 64 and
compares them with constants generated here, so the two sides must agree byte for byte.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat
from dataclasses import dataclass

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1
PATH_LEN = 256  # bytes the kernel keeps, with the NUL: at most 255 characters are hashed


def fnv1a(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def path_hash(path: str | bytes) -> int:
    """The hash the kernel computes for a path string as executed (exec allow-lists)."""
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    raw = raw.split(b"\0", 1)[0][: PATH_LEN - 1]
    return fnv1a(raw)


# Reads of these are research events in every mode; writes to them are flagged too.
SENSITIVE_EXACT: tuple[str, ...] = (
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
    "/etc/master.passwd", "/etc/security/opasswd",
    "/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock", "/run/podman/podman.sock",
    "/proc/kcore", "/dev/mem", "/dev/kmem", "/dev/port",
    "/etc/kubernetes/admin.conf", "/var/lib/kubelet/kubeconfig",
)
# Everything under these (the trailing slash is part of the prefix).
SENSITIVE_PREFIXES: tuple[str, ...] = (
    "/etc/sudoers.d/", "/etc/ssl/private/", "/var/run/secrets/kubernetes.io/",
    "/run/secrets/kubernetes.io/",
)
# Any path with a directory of this name: ssh keys and authorized_keys, cloud credentials.
SENSITIVE_DIRS: tuple[str, ...] = (".ssh", ".aws", ".gnupg", ".kube", ".docker", ".azure")
# Last components worth a second look when the path is not literal (relative, //, /proc/self/root).
SENSITIVE_NAMES: tuple[str, ...] = (
    "shadow", "gshadow", "sudoers", "docker.sock", "containerd.sock", "credentials",
    "authorized_keys", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "kcore",
)


def is_sensitive(path: str) -> bool:
    """The same rules as the kernel, on a normalised absolute path."""
    if path in SENSITIVE_EXACT:
        return True
    if any(path.startswith(p) for p in SENSITIVE_PREFIXES):
        return True
    parts = path.split("/")[:-1]
    return any(d in parts for d in SENSITIVE_DIRS)


def bpf_defines() -> str:
    """The C macros bpf/file.c compares path hashes with."""

    def chain(name: str, values: list[int]) -> str:
        # Branch-free (file.c is_equal): 1 when h is one of the values, else 0.
        body = " | ".join(f"is_equal(h, 0x{v:016x}ULL)" for v in values) or "0"
        return f"#define {name}(h) ({body})\n"

    dirs = [fnv1a(d.encode()) for d in SENSITIVE_DIRS]
    return (
        chain("SENSITIVE_EXACT", [fnv1a(p.encode()) for p in SENSITIVE_EXACT])
        + chain("SENSITIVE_PREFIX", [fnv1a(p.encode()) for p in SENSITIVE_PREFIXES])
        + chain("SENSITIVE_DIR", dirs)
        + chain("SENSITIVE_NAME", [fnv1a(n.encode()) for n in SENSITIVE_NAMES])
    )


# -- resolving inside a container's root --------------------------------------------------
class PathEscape(Exception):
    """A path could not be resolved inside the root (too many links, not found...)."""


@dataclass(slots=True)
class Resolved:
    path: str  # as the container sees it, symlinks resolved (e.g. /bin/busybox)
    host_path: str  # the same file through /proc/<pid>/root


def join_container_path(base: str, path: str) -> str:
    """An absolute, normalised container path (no symlinks resolved)."""
    full = path if path.startswith("/") else posixpath.join(base or "/", path)
    norm = posixpath.normpath(full)
    return "/" + norm.lstrip("/")


def resolve_in_root(root: str, path: str, max_links: int = 40) -> Resolved:
    """Follow symlinks as the container would: an absolute link target starts again at the
    container's root, never at the host's (a host-side realpath would be wrong, and unsafe)."""
    if not path.startswith("/"):
        raise PathEscape(f"not absolute: {path!r}")
    done: list[str] = []
    todo = [p for p in path.split("/") if p]
    links = 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = "/" + "/".join(done + [part])
        try:
            st = os.lstat(root + candidate)
        except OSError as e:
            raise PathEscape(f"{candidate}: {os.strerror(e.errno or errno.ENOENT)}") from None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                raise PathEscape(f"{path}: too many symbolic links")
            target = os.readlink(root + candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p] + todo
            continue
        done.append(part)
    resolved = "/" + "/".join(done)
    return Resolved(path=resolved, host_path=root + resolved)


# openat2(2) with RESOLVE_IN_ROOT: the kernel itself keeps every step inside the root, so
# a container that swaps a component for a symlink between our checks cannot send us out.
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)


def open_in_root(root: str, path: str, flags: int = os.O_RDONLY) -> int:
    """A read-only fd of `path` opened inside `root` (a directory such as /proc/<pid>/root).
    flags=os.O_PATH: an fd that only names the file (a device or FIFO is not opened)."""
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # openat2 refuses O_PATH with any flag but O_CLOEXEC, O_DIRECTORY and O_NOFOLLOW.
        extra = os.O_CLOEXEC if flags & os.O_PATH else os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        how = _OpenHow(flags=flags | extra, mode=0,
                       resolve=_RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        fd = _libc.syscall(_SYS_OPENAT2, rootfd, path.encode("utf-8", "surrogateescape"),
                           ctypes.byref(how), ctypes.sizeof(how))
        if fd < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSYS:  # older kernel: resolve by hand, then open
                return os.open(resolve_in_root(root, path).host_path, flags | extra)
            raise OSError(err, os.strerror(err), path)
        return int(fd)
    finally:
        os.close(rootfd)
