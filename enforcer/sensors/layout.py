"""The kernel records and map entries, as ctypes structures mirroring bpf/*.c.

Kept in one place so that a change to a C struct has one Python twin to update; the hub's
self-check compares the sizes below with what the compiled program reports.
"""

from __future__ import annotations

import ctypes as ct

PATH_LEN = 256
COMM_LEN = 16
ARGS_LEN = 1024
ARG_MAX_READ = 256
DNS_LEN = 256
NR_SYSCALLS = 512
NR_QUALIFIED = 512  # bits NR_SYSCALLS.. : calls judged by their arguments (bpf/syscall.c)
NR_SYSCALL_BITS = NR_SYSCALLS + NR_QUALIFIED

SENSORS: tuple[str, ...] = ("process", "network", "dns", "file", "syscall")
S_PROCESS, S_NETWORK, S_DNS, S_FILE, S_SYSCALL = range(5)
C_EMITTED, C_LOST, C_SUPPRESSED, C_DEDUPED, C_KILLED, C_MARKED, C_MARK_LOST, C_REWRITTEN = range(8)
C_SLOTS = 8

EV_EXEC, EV_FORK, EV_EXIT, EV_NET, EV_DNS, EV_FILE, EV_FILE_CLOSED, EV_SYSCALL = range(1, 9)

MODE_LEARN, MODE_ALERT, MODE_PROTECT = 0, 1, 2
MODES = {"learn": MODE_LEARN, "alert": MODE_ALERT, "protect": MODE_PROTECT}

(CFG_TTL_NS, CFG_RATE_EXEC, CFG_RATE_TREE, CFG_RATE_NET, CFG_RATE_DNS, CFG_RATE_FILE, CFG_RATE_SYSCALL,
 CFG_WATCH_LEVELS) = range(8)

F_KILLED = 0x1
F_ARGV_TRUNC = 0x2
F_SENSITIVE = 0x4
F_CANDIDATE = 0x8
F_DANGEROUS = 0x10
F_FIRST = 0x20
F_EXECVEAT = 0x40
F_REWRITTEN = 0x80  # exec of an allowed path whose binary a watched container wrote (bpf/common.h)
F_OTHER_FILE = 0x100  # exec of an allowed path that names another file than the one found there when allowed

FILE_OPS = {1: "write", 2: "create", 3: "rename", 4: "unlink", 5: "chmod", 6: "mkdir", 7: "read", 8: "link",
            9: "symlink"}
NET_DIRECTIONS = {1: "out", 2: "in", 3: "listen"}
PROTOS = {6: "tcp", 17: "udp"}
AT_FDCWD = -100
SYMLINK_DFD = -1000  # bpf/file.c: a symlink's target text, relative to the link's own directory


class EvHdr(ct.Structure):
    _fields_ = [
        ("ts", ct.c_uint64), ("cgroup", ct.c_uint64), ("pid", ct.c_uint32), ("tid", ct.c_uint32),
        ("uid", ct.c_uint32), ("type", ct.c_uint16), ("flags", ct.c_uint16), ("comm", ct.c_char * COMM_LEN),
    ]


class ExecRec(ct.Structure):
    _fields_ = [
        ("h", EvHdr), ("ppid", ct.c_uint32), ("argc", ct.c_uint32), ("args_len", ct.c_uint32),
        ("pad", ct.c_uint32), ("path_hash", ct.c_uint64), ("path", ct.c_char * PATH_LEN),
        ("args", ct.c_uint8 * (ARGS_LEN + ARG_MAX_READ)),
    ]


class ForkRec(ct.Structure):
    _fields_ = [("h", EvHdr), ("child_pid", ct.c_uint32), ("pad", ct.c_uint32)]


class ExitRec(ct.Structure):
    _fields_ = [("h", EvHdr), ("exit_code", ct.c_int32), ("pad", ct.c_uint32)]


class NetRec(ct.Structure):
    _fields_ = [
        ("h", EvHdr), ("direction", ct.c_uint8), ("proto", ct.c_uint8), ("family", ct.c_uint8),
        ("pad", ct.c_uint8), ("lport", ct.c_uint16), ("rport", ct.c_uint16),
        ("laddr", ct.c_uint8 * 16), ("raddr", ct.c_uint8 * 16),
    ]


class DnsRec(ct.Structure):
    _fields_ = [
        ("h", EvHdr), ("family", ct.c_uint8), ("pad", ct.c_uint8), ("port", ct.c_uint16),
        ("len", ct.c_uint32), ("server", ct.c_uint8 * 16), ("payload", ct.c_uint8 * DNS_LEN),
    ]


class FileRec(ct.Structure):
    _fields_ = [
        ("h", EvHdr), ("op", ct.c_uint8), ("pad", ct.c_uint8 * 3), ("dfd", ct.c_int32),
        ("dfd2", ct.c_int32), ("open_flags", ct.c_uint32), ("mode", ct.c_uint32), ("pad2", ct.c_uint32),
        ("path", ct.c_char * PATH_LEN), ("path2", ct.c_char * PATH_LEN),
    ]


class ClosedRec(ct.Structure):
    _fields_ = [("h", EvHdr), ("fd", ct.c_int32), ("dfd", ct.c_int32), ("path", ct.c_char * PATH_LEN),
                ("path_full", ct.c_uint64), ("path_flags", ct.c_uint16), ("pad", ct.c_uint8 * 6)]


class SyscallRec(ct.Structure):
    _fields_ = [("h", EvHdr), ("nr", ct.c_int64), ("ret", ct.c_int64), ("arg0", ct.c_uint64), ("arg1", ct.c_uint64)]


class Policy(ct.Structure):
    _fields_ = [("profile_id", ct.c_uint32), ("mode", ct.c_uint32), ("gen", ct.c_uint32), ("pad", ct.c_uint32)]


class SyscallBits(ct.Structure):
    _fields_ = [("w", ct.c_uint64 * (NR_SYSCALL_BITS // 64))]


class InodeKey(ct.Structure):
    _fields_ = [("ino", ct.c_uint64), ("dev", ct.c_uint32), ("pad", ct.c_uint32)]


class ExecIdentKey(ct.Structure):
    _fields_ = [("cgroup", ct.c_uint64), ("path_hash", ct.c_uint64)]


class ExecAllowKey(ct.Structure):
    _fields_ = [("profile_id", ct.c_uint32), ("pad", ct.c_uint32), ("path_hash", ct.c_uint64)]


class IpKey(ct.Structure):
    _fields_ = [("addr", ct.c_uint8 * 16)]


RECORDS: dict[int, type[ct.Structure]] = {
    EV_EXEC: ExecRec, EV_FORK: ForkRec, EV_EXIT: ExitRec, EV_NET: NetRec, EV_DNS: DnsRec,
    EV_FILE: FileRec, EV_FILE_CLOSED: ClosedRec, EV_SYSCALL: SyscallRec,
}

# Records that may be sent shorter than their struct (file records without path2).
MIN_SIZES: dict[int, int] = {EV_FILE: FileRec.path2.offset}

# Syscalls whose every call is reported (x86_64 numbers), whatever the mode.
DANGEROUS_SYSCALLS: dict[str, int] = {
    "ptrace": 101, "mount": 165, "umount2": 166, "unshare": 272, "setns": 308,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
    "kexec_file_load": 320, "bpf": 321, "keyctl": 250, "add_key": 248, "request_key": 249,
    "open_by_handle_at": 304, "userfaultfd": 323, "perf_event_open": 298, "pivot_root": 155,
    "chroot": 161, "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
    "process_vm_writev": 311, "process_vm_readv": 310, "fsopen": 430, "fsmount": 432,
    "move_mount": 429, "open_tree": 428, "syslog": 103, "acct": 163, "settimeofday": 164,
    "clock_settime": 227, "name_to_handle_at": 303, "quotactl": 179, "lookup_dcookie": 212,
    "uselib": 134, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
}

DANGEROUS_SYSCALL_NRS = frozenset(DANGEROUS_SYSCALLS.values())

# Qualified syscalls: one call judged by its arguments, numbered NR_SYSCALLS + bit (the
# bits of bpf/syscall.c's qualifiers()). Every one is dangerous; each is learned, allowed
# and reported under its own name, so a program that clones threads is not one that
# creates user namespaces, and a packet socket does not pass as the app's `socket`.
CLONE_NAMESPACES: tuple[str, ...] = ("newns", "newcgroup", "newuts", "newipc", "newuser", "newpid", "newnet",
                                     "newtime")
QUALIFIED: dict[int, str] = {
    **{NR_SYSCALLS + i: f"clone:{ns}" for i, ns in enumerate(CLONE_NAMESPACES)},
    NR_SYSCALLS + 8: "socket:packet",
    NR_SYSCALLS + 9: "socket:raw",
}
