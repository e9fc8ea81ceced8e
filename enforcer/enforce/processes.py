"""Processes of a container, from /proc: membership checks, killing, and the details a
forensics bundle records (tree, binaries, open files, sockets).

Killing uses a pidfd: the process is pinned first, its cgroup is checked, and the signal
goes to that same process. A pid that is reused between the check and the kill cannot
be hit by mistake (the classic race of kill(pid) after a check).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from ..inventory.cgroups import cgroup2_mount, cgroup_v2_relpath

SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT, "HUP": signal.SIGHUP,
           "STOP": signal.SIGSTOP, "CONT": signal.SIGCONT, "QUIT": signal.SIGQUIT, "USR1": signal.SIGUSR1,
           "USR2": signal.SIGUSR2}


class ProcessError(Exception):
    """The process cannot be acted on; `code` is a protocol error code."""

    def __init__(self, message: str, code: str = "failed") -> None:
        super().__init__(message)
        self.code = code


def parse_signal(value: Any) -> signal.Signals:
    if value is None or value == "":
        return signal.SIGKILL
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value)
        except ValueError:
            raise ProcessError(f"no signal {value}", "bad_request") from None
    if isinstance(value, str):
        name = value.upper().removeprefix("SIG")
        if name in SIGNALS:
            return SIGNALS[name]
        if name.isdigit():
            return parse_signal(int(name))
    raise ProcessError(f"signal must be one of {', '.join(SIGNALS)} or a number", "bad_request")


def in_cgroup(pid: int, cgroup_path: str) -> bool:
    """Is the process in this cgroup v2 directory or below it (a child cgroup)?"""
    rel = cgroup_v2_relpath(pid)
    mount = cgroup2_mount()
    if rel is None or not mount or not cgroup_path:
        return False
    path = os.path.normpath(os.path.join(mount, rel.lstrip("/")))
    root = os.path.normpath(cgroup_path)
    return path == root or path.startswith(root + os.sep)


def kill_in_container(pid: int, cgroup_path: str, container_name: str, sig: signal.Signals = signal.SIGKILL) -> None:
    """Send `sig` to host pid `pid` if, and only if, it belongs to the container's cgroup."""
    if pid <= 1:
        raise ProcessError(f"pid {pid} is not a process of {container_name}", "bad_request")
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise ProcessError(f"no process {pid}", "not_found") from None
    except OSError as e:
        raise ProcessError(f"cannot open process {pid}: {e.strerror}") from None
    try:
        member = in_cgroup(pid, cgroup_path)
        try:
            # Still the process we pinned? (If it had exited, the pid may now be another's.)
            signal.pidfd_send_signal(pidfd, 0)
        except ProcessLookupError:
            raise ProcessError(f"process {pid} exited", "not_found") from None
        if not member:
            raise ProcessError(f"process {pid} is not in container {container_name}; refused", "forbidden")
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            raise ProcessError(f"process {pid} exited", "not_found") from None
        except OSError as e:
            raise ProcessError(f"cannot signal process {pid}: {e.strerror}") from None
    finally:
        os.close(pidfd)


# -- what forensics records ------------------------------------------------------------------
@dataclass(slots=True)
class ProcessInfo:
    pid: int
    ppid: int
    comm: str = ""
    state: str = ""
    argv: list[str] = field(default_factory=list)
    exe: str = ""
    exe_sha256: str = ""
    cwd: str = ""
    uid: int = -1
    gid: int = -1
    nspid: list[int] = field(default_factory=list)  # pid in each namespace, host first
    start_ticks: int = 0
    netns: str = ""
    fds: dict[str, str] = field(default_factory=dict)  # fd number -> link target
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "ppid": self.ppid, "comm": self.comm, "state": self.state, "argv": self.argv,
                "exe": self.exe, "exe_sha256": self.exe_sha256, "cwd": self.cwd, "uid": self.uid, "gid": self.gid,
                "nspid": self.nspid, "start_ticks": self.start_ticks, "netns": self.netns, "fds": self.fds,
                "error": self.error}


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _sha256_file(path: str, cache: dict[tuple[int, int], str], limit: int = 256 << 20) -> str:
    """sha256 of an executable through /proc/<pid>/exe (works for deleted binaries too)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key in cache:
            return cache[key]
        if st.st_size > limit:
            return ""
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        cache[key] = h.hexdigest()
        return cache[key]
    except OSError:
        return ""
    finally:
        os.close(fd)


def process_info(pid: int, hashes: dict[tuple[int, int], str]) -> ProcessInfo:
    base = f"/proc/{pid}"
    info = ProcessInfo(pid=pid, ppid=0)
    try:
        with open(f"{base}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        # comm may hold spaces and parentheses: split on the last ")".
        info.comm = stat[stat.index("(") + 1: stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        info.state, info.ppid, info.start_ticks = rest[0], int(rest[1]), int(rest[19])
        with open(f"{base}/cmdline", "rb") as f:
            info.argv = [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]][:256]
        with open(f"{base}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "Uid":
                    info.uid = int(value.split()[0])
                elif key == "Gid":
                    info.gid = int(value.split()[0])
                elif key == "NSpid":
                    info.nspid = [int(x) for x in value.split()]
    except (OSError, ValueError, IndexError) as e:
        info.error = f"gone or unreadable: {e}"
        return info
    info.exe = _readlink(f"{base}/exe")
    info.exe_sha256 = _sha256_file(f"{base}/exe", hashes)
    info.cwd = _readlink(f"{base}/cwd")
    info.netns = _readlink(f"{base}/ns/net")
    try:
        for fd in sorted(os.listdir(f"{base}/fd"), key=int)[:4096]:
            target = _readlink(f"{base}/fd/{fd}")
            if target:
                info.fds[fd] = target
    except OSError:
        pass
    return info


def process_tree(infos: list[ProcessInfo]) -> list[dict[str, Any]]:
    """Nested {"pid", "comm", "argv", "exe_sha256", "children": [...]} from flat infos."""
    by_pid = {p.pid: {"pid": p.pid, "comm": p.comm, "argv": p.argv, "exe": p.exe, "exe_sha256": p.exe_sha256,
                      "children": []} for p in infos}
    roots: list[dict[str, Any]] = []
    for p in infos:
        parent = by_pid.get(p.ppid)
        (parent["children"] if parent is not None else roots).append(by_pid[p.pid])
    return roots


# -- sockets -------------------------------------------------------------------------------------
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


def _addr(hexaddr: str) -> tuple[str, int]:
    """`0100007F:0050` -> ("127.0.0.1", 80): the kernel prints each 32-bit word in host order."""
    host, _, port = hexaddr.partition(":")
    raw = b"".join(struct.pack("<I", int(host[i:i + 8], 16)) for i in range(0, len(host), 8))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(port, 16)


def read_sockets(pid: int) -> list[dict[str, Any]]:
    """TCP and UDP sockets of the network namespace `pid` lives in (/proc/<pid>/net/*)."""
    out: list[dict[str, Any]] = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{proto}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            try:
                lip, lport = _addr(parts[1])
                rip, rport = _addr(parts[2])
                state = int(parts[3], 16)
            except (ValueError, OSError):
                continue
            out.append({"proto": proto, "local_ip": lip, "local_port": lport, "remote_ip": rip,
                        "remote_port": rport, "state": TCP_STATES.get(state, str(state)) if proto.startswith("tcp")
                        else ("UNCONN" if state == 7 else str(state)), "uid": int(parts[7]), "inode": int(parts[9])})
    return out


def attach_socket_owners(sockets: list[dict[str, Any]], infos: list[ProcessInfo]) -> None:
    """Add `pids` (and fd numbers) to each socket from the processes' `socket:[inode]` links."""
    owners: dict[int, list[dict[str, Any]]] = {}
    for p in infos:
        for fd, target in p.fds.items():
            if target.startswith("socket:["):
                try:
                    inode = int(target[8:-1])
                except ValueError:
                    continue
                owners.setdefault(inode, []).append({"pid": p.pid, "fd": int(fd), "comm": p.comm})
    for s in sockets:
        s["owners"] = owners.get(s["inode"], [])
