"""Typed sensor events: what the eBPF sensors hand to the rest of the enforcer.

One definition, used by the sensors (which build them from kernel records), the profiles
and the detector (which consume them) and the tests. The hub fills `container_id` from
the inventory by cgroup id before an event is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class SensorEvent:
    time: float = 0.0  # epoch seconds
    cgroup_id: int = 0
    container_id: str = ""
    pid: int = 0  # thread-group id (the process as ps shows it), host pid namespace
    tid: int = 0
    uid: int = 0
    comm: str = ""

    sensor = "base"


@dataclass(slots=True)
class ExecEvent(SensorEvent):
    """A program started (execve/execveat committed to a new image), or was killed before its
    first instruction. path and argv are the kernel's own copies (bpf/process.c)."""

    ppid: int = 0
    path: str = ""  # the filename given to execve, as the container sees it (e.g. /bin/wget)
    argv: list[str] = field(default_factory=list)  # bounded; argv_truncated says so
    argv_truncated: bool = False
    sha256: str = ""  # of the binary the path resolved to ("" if it could not be read)
    binary: str = ""  # the resolved binary inside the container (e.g. /bin/busybox)
    multicall: bool = False  # the binary picks its applet from argv[0] (busybox, toybox)
    killed: bool = False  # the kernel killed it before its first instruction (protect mode)
    rewritten: bool = False  # an allowed path, but a watched container had opened its binary for writing
    other_file: bool = False  # an allowed path, but not the file found there when it was allowed
    hash_error: str = ""  # why sha256 is "" (e.g. "read stalled after 5 s"); sensors/hashing.py
    hash_reason: str = ""  # the same as a stats key: not_regular, too_large, queue_full, stalled, unreadable

    sensor = "process"


@dataclass(slots=True)
class ForkEvent(SensorEvent):
    child_pid: int = 0

    sensor = "process"


@dataclass(slots=True)
class ExitEvent(SensorEvent):
    exit_code: int = 0

    sensor = "process"


@dataclass(slots=True)
class NetworkEvent(SensorEvent):
    """A connection or a listener, seen from the container it belongs to.

    direction: "out" (this container connected), "in" (this container accepted; attributed
    by the local address, never to the kernel thread that happened to run), "listen".
    """

    direction: str = "out"
    proto: str = "tcp"  # tcp | udp
    family: int = 4  # 4 | 6
    local_ip: str = ""
    local_port: int = 0
    remote_ip: str = ""
    remote_port: int = 0
    remote_container_id: str = ""  # the far end, when it is a container of the inventory

    sensor = "network"


@dataclass(slots=True)
class DnsEvent(SensorEvent):
    """A DNS query a container sent (to port 53)."""

    name: str = ""
    qtype: int = 0
    server_ip: str = ""

    sensor = "dns"


@dataclass(slots=True)
class FileEvent(SensorEvent):
    """op: write | create | rename | unlink | chmod | mkdir | read (sensitive paths only)."""

    op: str = "write"
    path: str = ""  # as the container sees it; relative paths resolved against the cwd
    new_path: str = ""  # rename target
    flags: int = 0
    mode: int = 0
    sensitive: bool = False  # the path is on the sensitive list (shadow, ssh keys, ...)

    sensor = "file"


@dataclass(slots=True)
class InodeEvent(FileEvent):
    """A watched sensitive inode was opened or modified (sensors/inode_watch.py, fanotify).

    Decided like a FileEvent with `sensitive` set; `path` is the name the file was watched
    under inside the container, `opened_as` the path the kernel resolved for this open (a
    hard link, a symlinked directory, a relative path all land on the same inode).
    `lost` > 0: events were lost (a queue overflowed): the detector raises that instead.
    """

    dev: int = 0
    ino: int = 0
    opened_as: str = ""
    denied: bool = False  # protect mode: the kernel refused the open (FAN_OPEN_PERM)
    lost: int = 0

    sensor = "inode"


@dataclass(slots=True)
class FileClosedEvent(SensorEvent):
    """A file written by the container was closed; sha256 when small enough to hash."""

    path: str = ""
    size: int = 0
    sha256: str = ""
    hash_error: str = ""  # why sha256 is "" (see ExecEvent)
    hash_reason: str = ""

    sensor = "file"


@dataclass(slots=True)
class SyscallEvent(SensorEvent):
    """A syscall this container had not used before, or any call of a dangerous one.

    A call judged by its arguments has a qualified number (>= 512) and name, e.g.
    "clone:newuser" (clone or clone3 with CLONE_NEWUSER), "socket:packet", "socket:raw":
    sent besides (not instead of) the plain syscall's own event."""

    nr: int = 0
    name: str = ""
    ret: int = 0  # negative errno when it failed (e.g. denied by seccomp: -1 EPERM)
    dangerous: bool = False
    first: bool = False  # first use in this container (novelty)
    killed: bool = False  # protect mode: SIGKILL at sys_enter, the caller never returned
    args: dict[str, str] = field(default_factory=dict)  # what qualified it: {"flags": "0x10000000"}

    sensor = "syscall"


Event = (ExecEvent | ForkEvent | ExitEvent | NetworkEvent | DnsEvent | FileEvent | InodeEvent | FileClosedEvent
         | SyscallEvent)


@dataclass(slots=True)
class RewriteGuardFullEvent(SensorEvent):
    """A file this container opened for writing could not be marked (the rewrite guard's map
    is full, bpf/common.h): the kernel no longer lets any of its execs through on the
    allow-list alone (fail closed) until the container restarts."""

    sensor = "file"
