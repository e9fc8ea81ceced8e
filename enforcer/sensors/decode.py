"""Kernel records -> typed events (sensors/events.py), on the hub's poll thread.

Decoding also does what only user space can, while the process is most likely still
alive: relative paths are resolved against /proc/<pid>/cwd (or the directory fd), the
executed binary is opened through /proc/<pid>/exe (or resolved inside the container's
root) and handed to the hasher, DNS payloads are parsed into a name and a type.
Container ids are filled later, on the event loop, from the inventory.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import os
import posixpath
import re
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from . import layout as L
from .events import (DnsEvent, ExecEvent, ExitEvent, FileClosedEvent, FileEvent, ForkEvent, NetworkEvent,
                     SensorEvent, SyscallEvent)
from .hashing import UNREADABLE, FileHasher, HashResult
from .paths import PathEscape, is_sensitive, join_container_path, open_in_root, resolve_in_root

_PROC_ROOT_PREFIX = re.compile(r"^/proc/(self|thread-self|\d+)/root(?=/)")


# x86_64 syscalls newer than Debian bcc's table (which ends at rseq, 334); glibc and runc
# call several of them (clone3, close_range, openat2, faccessat2) in every container.
_NEWER_SYSCALLS = dict(enumerate((
    "pidfd_send_signal", "io_uring_setup", "io_uring_enter", "io_uring_register", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "pidfd_open", "clone3", "close_range",
    "openat2", "pidfd_getfd", "faccessat2", "process_madvise", "epoll_pwait2", "mount_setattr",
    "quotactl_fd", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    "memfd_secret", "process_mrelease", "futex_waitv", "set_mempolicy_home_node", "cachestat",
    "fchmodat2", "map_shadow_stack", "futex_wake", "futex_wait", "futex_requeue", "statmount",
    "listmount", "lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules", "mseal"), start=424))


def _syscall_names() -> dict[int, str]:
    try:
        from bcc.syscall import syscalls  # noqa: PLC0415 - Debian's table of x86_64 names
        names = {int(k): v.decode() for k, v in syscalls.items()}
    except Exception:  # noqa: BLE001 - names are a nicety
        names = {nr: name for name, nr in L.DANGEROUS_SYSCALLS.items()}
    return {**_NEWER_SYSCALLS, **names, **L.QUALIFIED}


SYSCALL_NAMES = _syscall_names()


@dataclass(slots=True)
class Decoded:
    event: SensorEvent
    sensor: str
    pending: Future[HashResult] | None = None  # deliver once the file is hashed


def ip_text(raw: bytes, family: int) -> str:
    if not any(raw):
        return ""
    addr = ipaddress.IPv6Address(raw)
    mapped = addr.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    return str(addr)


def parse_dns_question(payload: bytes) -> tuple[str, int]:
    """(name, qtype) of the first question of a DNS query; ("", 0) if it is not one."""
    if len(payload) < 17:
        return "", 0
    labels: list[str] = []
    i = 12
    while i < len(payload):
        n = payload[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 or i + 1 + n > len(payload):  # compression or truncated: not a plain query
            return "", 0
        labels.append(payload[i + 1:i + 1 + n].decode("ascii", "backslashreplace"))
        i += 1 + n
    else:
        return "", 0
    qtype = int.from_bytes(payload[i:i + 2], "big") if i + 2 <= len(payload) else 0
    return ".".join(labels), qtype


_SOCKET_FAMILIES = {2: "AF_INET", 10: "AF_INET6", 17: "AF_PACKET"}


def qualifier_args(nr: int, rec: L.SyscallRec) -> dict[str, str]:
    """The arguments that made a call qualified (clone flags, socket family and type), as text."""
    name = L.QUALIFIED.get(nr, "")
    if name.startswith("clone:"):
        return {"flags": hex(rec.arg0)}
    if name.startswith("socket:"):
        return {"family": _SOCKET_FAMILIES.get(rec.arg0, str(rec.arg0)), "type": hex(rec.arg1)}
    return {}


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


class Decoder:
    """Turns one raw record into a Decoded (or None when user space drops it)."""

    def __init__(self, hasher: FileHasher, container_root_pid: Callable[[int], int]) -> None:
        self.hasher = hasher
        self.root_pid = container_root_pid  # cgroup id -> a live pid of that container (0 if none)
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC; events carry wall-clock epoch seconds.
        self.clock_offset = time.time() - time.monotonic()
        self.dropped_candidates = 0

    def decode(self, data: int, size: int) -> Decoded | None:
        hdr = ct.cast(data, ct.POINTER(L.EvHdr)).contents
        cls = L.RECORDS.get(hdr.type)
        if cls is None or size < L.MIN_SIZES.get(hdr.type, ct.sizeof(cls)):
            return None
        if size < ct.sizeof(cls):  # a file record without its second path: copy, zero-padded
            buf = ct.create_string_buffer(ct.sizeof(cls))
            ct.memmove(buf, data, size)
            rec = cls.from_buffer(buf)
        else:
            rec = ct.cast(data, ct.POINTER(cls)).contents
        base = dict(time=hdr.ts / 1e9 + self.clock_offset, cgroup_id=hdr.cgroup, pid=hdr.pid, tid=hdr.tid,
                    uid=hdr.uid, comm=_text(hdr.comm))
        t = hdr.type
        if t == L.EV_EXEC:
            return self._exec(rec, hdr, base)
        if t == L.EV_FORK:
            return Decoded(ForkEvent(**base, child_pid=rec.child_pid), "process")
        if t == L.EV_EXIT:
            return Decoded(ExitEvent(**base, exit_code=rec.exit_code), "process")
        if t == L.EV_NET:
            return self._net(rec, base)
        if t == L.EV_DNS:
            payload = bytes(rec.payload[:min(rec.len, L.DNS_LEN)])
            name, qtype = parse_dns_question(payload)
            if not name:
                return None
            return Decoded(DnsEvent(**base, name=name, qtype=qtype,
                                    server_ip=ip_text(bytes(rec.server), rec.family)), "dns")
        if t == L.EV_FILE:
            return self._file(rec, hdr, base)
        if t == L.EV_FILE_CLOSED:
            return self._closed(rec, base)
        if t == L.EV_SYSCALL:
            nr = int(rec.nr)
            return Decoded(SyscallEvent(**base, nr=nr, name=SYSCALL_NAMES.get(nr, f"syscall_{nr}"), ret=int(rec.ret),
                                        dangerous=bool(hdr.flags & L.F_DANGEROUS), first=bool(hdr.flags & L.F_FIRST),
                                        killed=bool(hdr.flags & L.F_KILLED), args=qualifier_args(nr, rec)),
                           "syscall")
        return None

    # -- process ----------------------------------------------------------------------
    def _exec(self, rec: L.ExecRec, hdr: L.EvHdr, base: dict) -> Decoded:
        raw_args = bytes(rec.args[:rec.args_len])
        argv = [a.decode("utf-8", "surrogateescape") for a in raw_args.split(b"\0")[:rec.argc]]
        path = _text(rec.path)
        ev = ExecEvent(**base, ppid=rec.ppid or _ppid(hdr.pid), path=path, argv=argv,
                       argv_truncated=bool(hdr.flags & L.F_ARGV_TRUNC), killed=bool(hdr.flags & L.F_KILLED),
                       rewritten=bool(hdr.flags & L.F_REWRITTEN), other_file=bool(hdr.flags & L.F_OTHER_FILE))
        fd, binary = self._open_executed(hdr.pid, ev.ppid, hdr.cgroup, path)
        ev.binary = binary
        if fd is not None:
            pending = self.hasher.submit_fd(fd, owner=hdr.cgroup, exec_=True)
        else:  # gone, and its path no longer resolves (e.g. deleted): said, never "known"
            pending = self.hasher.skip(UNREADABLE, "binary could not be opened (the process had gone)")
        return Decoded(ev, "process", pending)

    def _open_executed(self, pid: int, ppid: int, cgroup: int, path: str) -> tuple[int | None, str]:
        """An fd of the binary that ran, and its path inside the container."""
        # Busybox shells run applets as /proc/self/exe: the image of the process that
        # forked it. When the child has gone already, its parent still runs that image.
        candidates = [pid] + ([ppid] if ppid and path.startswith("/proc/") else [])
        for p in candidates:
            try:
                fd = os.open(f"/proc/{p}/exe", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # gone already (or killed before it ran)
            try:
                return fd, os.readlink(f"/proc/{p}/exe")
            except OSError:
                return fd, ""
        # An exiting process loses its exe before its root: try its root, then the container's.
        full = join_container_path(self._cwd(pid), path)
        for root_pid in (pid, self.root_pid(cgroup)):
            if not root_pid:
                continue
            try:
                resolved = resolve_in_root(f"/proc/{root_pid}/root", full)
                return open_in_root(f"/proc/{root_pid}/root", resolved.path), resolved.path
            except (OSError, PathEscape):
                continue
        return None, ""

    @staticmethod
    def _cwd(pid: int) -> str:
        try:
            return os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return "/"

    # -- network ----------------------------------------------------------------------
    @staticmethod
    def _net(rec: L.NetRec, base: dict) -> Decoded:
        return Decoded(NetworkEvent(
            **base, direction=L.NET_DIRECTIONS.get(rec.direction, "?"), proto=L.PROTOS.get(rec.proto, str(rec.proto)),
            family=rec.family, local_ip=ip_text(bytes(rec.laddr), rec.family), local_port=rec.lport,
            remote_ip=ip_text(bytes(rec.raddr), rec.family), remote_port=rec.rport,
        ), "network")

    # -- files ------------------------------------------------------------------------
    def _resolve(self, pid: int, dfd: int, path: str) -> str:
        if path.startswith("/"):
            return join_container_path("/", path)
        try:
            base = os.readlink(f"/proc/{pid}/cwd" if dfd == L.AT_FDCWD else f"/proc/{pid}/fd/{dfd}")
        except OSError:
            return path  # the process has gone: keep what it said
        return join_container_path(base, path)

    def _file(self, rec: L.FileRec, hdr: L.EvHdr, base: dict) -> Decoded | None:
        op = L.FILE_OPS.get(rec.op, "?")
        new_path = _text(rec.path2)
        if new_path:
            new_path = self._resolve(hdr.pid, rec.dfd2, new_path)
        if rec.dfd == L.SYMLINK_DFD:  # the text a symlink will hold, read from where the link is
            path = join_container_path(posixpath.dirname(new_path) or "/", _text(rec.path))
        else:
            path = self._resolve(hdr.pid, rec.dfd, _text(rec.path))
        sensitive = bool(hdr.flags & L.F_SENSITIVE) or _sensitive(path) or (bool(new_path) and _sensitive(new_path))
        if not sensitive and hdr.flags & L.F_CANDIDATE and not path.startswith("/"):
            # Relative, and the process went before its cwd could be read: its name is
            # all we know, and a name like `shadow` or `id_rsa` is worth reporting.
            sensitive = True
        if op == "read" and not sensitive:
            self.dropped_candidates += 1  # matched by name only, and not sensitive once resolved
            return None
        return Decoded(FileEvent(**base, op=op, path=path, new_path=new_path, flags=rec.open_flags, mode=rec.mode,
                                 sensitive=sensitive), "file")

    def _closed(self, rec: L.ClosedRec, base: dict) -> Decoded:
        pid = base["pid"]
        path = self._resolve(pid, rec.dfd, _text(rec.path))
        ev = FileClosedEvent(**base, path=path)
        pending = None
        if path.startswith("/"):
            for root_pid in (pid, self.root_pid(base["cgroup_id"])):
                if not root_pid:
                    continue
                try:
                    # O_PATH: a device or FIFO is only named, never opened; the hasher
                    # reopens it for reading once fstat says it is a regular file.
                    fd = open_in_root(f"/proc/{root_pid}/root", path, os.O_PATH)
                    pending = self.hasher.submit_fd(fd, owner=base["cgroup_id"])
                    break
                except OSError:
                    continue  # gone, or removed again already (a temp file): nothing to hash
        return Decoded(ev, "file", pending)


def _sensitive(path: str) -> bool:
    return is_sensitive(_PROC_ROOT_PREFIX.sub("", path))


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
