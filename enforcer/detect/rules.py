"""Research rules (fire in every mode, learning included) and the severity of every alert.

Severity table (what each rule raises):

| rule                              | kind    | severity |
|-----------------------------------|---------|----------|
| feed hit (exec, written file, peer address, DNS name) | threat | critical |
| known path, binary changed (sha256)| process | critical |
| known path, binary could not be hashed (unverified) | process | critical |
| binary or written file not hashed (skipped, stalled, queue full) | process/file | medium |
| unknown program                   | process | high     |
| new listening port                | network | high     |
| outbound to an address outside the host's inventory | network | high |
| outbound to a container not allowed | network | medium |
| inbound from a peer not allowed   | network | medium   |
| write to a sensitive file         | file    | critical |
| read of a sensitive file          | file    | high     |
| write outside learned paths, system directory (/etc, /bin, /usr, ...) | file | high |
| write outside learned paths, elsewhere | file | medium |
| dangerous syscall: module load, kexec, bpf | syscall | critical |
| other dangerous syscall (ptrace, mount, unshare, setns, keyctl, io_uring_*, clone:newuser, socket:packet, socket:raw...) | syscall | high |
| syscall outside the learned set   | syscall | low      |

An alert raised in protect mode whose action was carried out (killed, blocked) keeps its
severity; the action says what happened.
"""

from __future__ import annotations

import re

SEVERITY: dict[str, str] = {
    "threat": "critical",
    "process.changed": "critical",
    "process.unknown": "high",
    "process.unverified": "critical",
    "unhashed": "medium",
    "guard.full": "high",
    "network.listener": "high",
    "network.out.external": "high",
    "network.out.container": "medium",
    "network.in": "medium",
    "file.sensitive.write": "critical",
    "file.sensitive.read": "high",
    "file.write.system": "high",
    "file.write": "medium",
    "syscall.dangerous.kernel": "critical",
    "syscall.dangerous": "high",
    "syscall.new": "low",
}

# Rule names as they appear in Alert.rule.
RULE_PROFILE = "profile"
RULE_SENSITIVE = "research:sensitive-file"
RULE_DANGEROUS = "research:dangerous-syscall"
RULE_UNHASHED = "research:unhashed"  # the hasher gave up on a file (sensors/hashing.py)
RULE_GUARD_FULL = "research:rewrite-guard-full"  # a written file could not be marked (bpf/common.h)
REWRITE_MARKS_PER_CONTAINER = 32768  # bpf/common.h MARKS_PER_CONTAINER


def rule_feed(feed: str) -> str:
    return f"feed:{feed}"


# -- sensitive files ----------------------------------------------------------------------
SENSITIVE_FILES = frozenset({
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
    "/etc/master.passwd", "/etc/security/opasswd",
    "/run/docker.sock", "/var/run/docker.sock", "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock", "/run/crio/crio.sock",
    "/proc/kcore", "/dev/mem", "/dev/kmem", "/dev/port",
    "/var/run/secrets/kubernetes.io/serviceaccount/token",
    "/run/secrets/kubernetes.io/serviceaccount/token",
    "/etc/kubernetes/admin.conf", "/root/.docker/config.json", "/root/.kube/config",
})
SENSITIVE_PREFIXES: tuple[str, ...] = (
    "/etc/sudoers.d/", "/root/.ssh/", "/root/.gnupg/", "/root/.aws/", "/etc/ssh/ssh_host_",
)
_HOME_SECRETS = re.compile(r"^/home/[^/]+/\.(ssh|gnupg|aws|kube|docker)/")


def is_sensitive(path: str) -> bool:
    return path in SENSITIVE_FILES or path.startswith(SENSITIVE_PREFIXES) or bool(_HOME_SECRETS.match(path))


# Read by everyone (ls -l, id), but a write, link or rename onto them grants root or
# persistence: sensitive for writes only.
SENSITIVE_WRITE_FILES = frozenset({
    "/etc/passwd", "/etc/group", "/etc/ld.so.preload", "/etc/crontab", "/etc/profile", "/root/.bashrc",
    "/root/.profile",
})


def is_sensitive_write(path: str) -> bool:
    return path in SENSITIVE_WRITE_FILES or is_sensitive(path)


SYSTEM_WRITE_DIRS: tuple[str, ...] = (
    "/etc/", "/bin/", "/sbin/", "/usr/", "/lib/", "/lib64/", "/boot/", "/root/", "/proc/", "/sys/",
)


# -- dangerous syscalls -------------------------------------------------------------------
DANGEROUS_KERNEL = frozenset({
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
})
DANGEROUS_SYSCALLS = DANGEROUS_KERNEL | frozenset({
    "ptrace", "mount", "umount", "umount2", "unshare", "setns", "pivot_root",
    "keyctl", "add_key", "request_key", "open_by_handle_at", "userfaultfd", "perf_event_open",
    "process_vm_readv", "process_vm_writev", "swapon", "swapoff", "reboot", "iopl", "ioperm",
    "fsopen", "fsmount", "fsconfig", "move_mount", "open_tree", "mount_setattr", "acct",
    "quotactl", "lookup_dcookie",
    # io_uring: file and network operations submitted through a ring never pass the syscall
    # tracepoints, so the ring itself is the thing to see.
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # Judged by their arguments (sensors/layout.py QUALIFIED): namespaces without unshare,
    # sniffing and spoofing on the bridge with the NET_RAW Docker grants by default.
    "clone:newns", "clone:newcgroup", "clone:newuts", "clone:newipc", "clone:newuser", "clone:newpid",
    "clone:newnet", "clone:newtime", "socket:packet", "socket:raw",
})

# x86_64 numbers of the dangerous ones, for events that carry only a number.
X86_64_NAMES: dict[int, str] = {
    101: "ptrace", 165: "mount", 166: "umount2", 272: "unshare", 308: "setns", 155: "pivot_root",
    175: "init_module", 313: "finit_module", 176: "delete_module", 246: "kexec_load",
    320: "kexec_file_load", 321: "bpf", 250: "keyctl", 248: "add_key", 249: "request_key",
    304: "open_by_handle_at", 323: "userfaultfd", 298: "perf_event_open", 310: "process_vm_readv",
    311: "process_vm_writev", 167: "swapon", 168: "swapoff", 169: "reboot", 172: "iopl",
    173: "ioperm", 430: "fsopen", 432: "fsmount", 431: "fsconfig", 429: "move_mount",
    428: "open_tree", 442: "mount_setattr", 163: "acct", 179: "quotactl", 212: "lookup_dcookie",
    425: "io_uring_setup", 426: "io_uring_enter", 427: "io_uring_register",
    512: "clone:newns", 513: "clone:newcgroup", 514: "clone:newuts", 515: "clone:newipc", 516: "clone:newuser",
    517: "clone:newpid", 518: "clone:newnet", 519: "clone:newtime", 520: "socket:packet", 521: "socket:raw",
}


# The container runtime entering a container for `docker exec` (runc renames its init
# process "runc:[2:INIT]"): its syscalls are not the app's, and it always joins a session
# keyring. A process can rename itself, so a renamed attacker hides at most a novel,
# harmless syscall and a keyctl: every other dangerous syscall still raises an alert.
RUNTIME_COMM_PREFIX = "runc:["
RUNTIME_SYSCALLS = frozenset({"keyctl"})


def syscall_severity(name: str) -> str:
    return SEVERITY["syscall.dangerous.kernel" if name in DANGEROUS_KERNEL else "syscall.dangerous"]
