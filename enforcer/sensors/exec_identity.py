"""Which file each allowed exec path names in each container (bpf/process.c `exec_identity`).

The kernel's allow-list holds path strings, and a path is only a name: a process in the
container can move another file there (`cd /usr/bin; mv python3 node`) under a name the
kernel cannot tie to the allowed one at the rename. So when a path enters a container's
allow-list, the file at that path in the container's root is looked up (openat2 with
RESOLVE_IN_ROOT, non-blocking; 256 bytes are read from a regular file to follow a script's
"#!" to its interpreter) and its identity (device, inode) is written for (container, path). An exec of the path that runs another file is then
judged as not allowed (an event; the kill in protect). Symlinks in the path are followed
as the exec follows them, so `/bin/sh -> busybox` pins busybox.

An identity is taken when the path enters the allow-list (a container's first watch with
an active profile, a learned or allowed program, a path back from suspect) and kept
until the container goes: never refreshed from whatever is there later, since that could
be the attacker's file. The file was checked before it got there: its content is the
image's (a container's first moments), or the one user space just hashed and matched.
Lookups run in a daemon thread, one container at a time.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from typing import Any, Iterable

from . import layout as L
from .paths import open_in_root, path_hash
from .rewrite_marks import kernel_dev

log = logging.getLogger(__name__)


def plain_path(key: str) -> str | None:
    """The file path of an allow-list key ("/bin/busybox:ls" -> "/bin/busybox"); None when it
    names no file in the container's root (relative, /proc/self/exe, /dev/fd/N)."""
    path = key
    if ":" in path:
        path = path.rsplit(":", 1)[0]
    if not path.startswith("/") or path.startswith(("/proc/", "/dev/fd/")):
        return None
    return path


MAX_INTERPRETERS = 4  # binfmt_script: a script's interpreter may itself be a script, this deep


def identity(root: str, path: str) -> tuple[int, int] | None:
    """(kernel dev, inode) of the program an exec of `path` inside `root` runs: the file the
    path names (symlinks followed in the root) or, for a script, its interpreter's (the
    kernel's exe of a script's exec is the interpreter). None if there is none."""
    for _ in range(MAX_INTERPRETERS + 1):
        try:
            fd = open_in_root(root, path)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            head = os.pread(fd, 256, 0) if stat.S_ISREG(st.st_mode) else b""
        except OSError:
            head = b""
        finally:
            os.close(fd)
        interpreter = _interpreter(head)
        if interpreter is None:
            return kernel_dev(st.st_dev), st.st_ino
        path = interpreter
    return None


def _interpreter(head: bytes) -> str | None:
    """The interpreter a "#!" line names (its first word), or None for anything else."""
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    if not words or not words[0].startswith(b"/"):
        return None
    return words[0].decode("utf-8", "surrogateescape")


class ExecIdentities:
    def __init__(self) -> None:
        self.bpf: Any = None
        self._pinned: dict[int, set[int]] = {}  # cgroup id -> path hashes with an identity
        self._lock = threading.Lock()
        self.pinned_total = 0  # identities written (status)

    def pin(self, cgroup_id: int, pid: int, keys: Iterable[str], refresh: bool = False) -> None:
        """Take the identity of every path in `keys` the container has none for yet (every
        one with refresh: these paths just came back into the allow-list, checked)."""
        if self.bpf is None or not pid:
            return
        done = self._pinned.setdefault(cgroup_id, set())
        todo = {}
        for key in keys:
            path = plain_path(key)
            if path is None:
                continue
            h = path_hash(path)
            if refresh or h not in done:
                todo[h] = path
                done.add(h)
        if todo:
            threading.Thread(target=self._write, args=(self.bpf, cgroup_id, pid, todo), daemon=True,
                             name="stockade-exec-identity").start()

    def forget(self, cgroup_id: int) -> None:
        hashes = self._pinned.pop(cgroup_id, set())
        if self.bpf is None:
            return
        table = self.bpf[b"exec_identity"]
        for h in hashes:
            try:
                del table[L.ExecIdentKey(cgroup_id, h)]
            except KeyError:
                pass

    def _write(self, bpf: Any, cgroup_id: int, pid: int, todo: dict[int, str]) -> None:
        with self._lock:
            try:
                table = bpf[b"exec_identity"]
                root = f"/proc/{pid}/root"
                for h, path in todo.items():
                    found = identity(root, path)
                    if found is None:  # not there (yet): the path alone decides
                        continue
                    dev, ino = found
                    table[L.ExecIdentKey(cgroup_id, h)] = L.InodeKey(ino, dev, 0)
                    self.pinned_total += 1
            except Exception as e:  # noqa: BLE001 - the program was unloaded, the map full
                log.warning("sensors: exec identities of cgroup %d not written: %s", cgroup_id, e)
