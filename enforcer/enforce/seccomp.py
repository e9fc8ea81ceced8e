"""A Docker seccomp profile from a learned syscall set (pure: names in, JSON object out).

Allowed: the syscalls the profile learned, plus what the runtime needs to start the
container. runc installs the filter *before* it drops capabilities and switches user
(unless no-new-privileges is set, then just before execve), so after the filter is in
place runc's Go runtime still closes inherited fds, sets capabilities and ids, changes
directory and calls execve; then the program's loader runs before its first learned
syscall may have been seen (a container is watched from its start event, a few
milliseconds after its first instructions). Both lists are below, with why.

Everything else fails with EPERM, except clone3, which fails with ENOSYS unless learned:
glibc falls back to clone only on ENOSYS, so EPERM there would break thread creation.
Only the native x86_64 ABI is allowed: 32-bit (int 0x80) and x32 syscalls do not match
the filter's architecture and are refused.
"""

from __future__ import annotations

import platform
from typing import Any, Iterable

# What runc's init does after the filter is installed (runc 1.1, standard_init_linux.go:
# finalizeNamespace, the exec fifo, LookPath and execve), and its Go runtime meanwhile.
RUNTIME_SYSCALLS: tuple[str, ...] = (
    # capabilities and identity
    "capget", "capset", "prctl", "setgroups", "setuid", "setgid", "setresuid", "setresgid",
    "setfsuid", "setfsgid", "getuid", "geteuid", "getgid", "getegid",
    # closing inherited fds (lists /proc/self/fd), the exec fifo, finding the binary
    "openat", "close", "close_range", "fcntl", "getdents64", "fstat", "newfstatat", "statx", "read",
    "write", "readlinkat", "faccessat", "faccessat2", "chdir", "fchdir", "getcwd",
    # process
    "execve", "getpid", "getppid", "gettid", "kill", "tgkill", "exit", "exit_group",
    # the Go runtime: threads, signals, memory, scheduling, polling
    "futex", "clone", "nanosleep", "clock_nanosleep", "clock_gettime", "sched_yield",
    "sched_getaffinity", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
    "mmap", "munmap", "madvise", "mprotect", "epoll_create1", "epoll_ctl", "epoll_pwait",
    "epoll_wait", "pipe2", "getrandom",
)

# What a dynamically or statically linked program does before main(): glibc and musl start-up.
LOADER_SYSCALLS: tuple[str, ...] = (
    "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64", "brk", "access",
    "pread64", "uname", "readlink", "ioctl", "lseek",
)

ENOSYS = 38
EPERM = 1

SCMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def build_seccomp(learned: Iterable[str], *, source: str = "", arch: str | None = None) -> dict[str, Any]:
    """Docker's seccomp JSON allowing `learned` (syscall names) and the runtime's needs."""
    learned_names = sorted({n for n in learned if _usable(n)})
    runtime = sorted(set(RUNTIME_SYSCALLS + LOADER_SYSCALLS) - set(learned_names))
    machine = arch or platform.machine()
    profile: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": [SCMP_ARCH.get(machine, "SCMP_ARCH_NATIVE")],
        "syscalls": [],
    }
    if learned_names:
        profile["syscalls"].append({"names": learned_names, "action": "SCMP_ACT_ALLOW",
                                    "comment": f"learned by Stockade{': ' + source if source else ''}"})
    profile["syscalls"].append({"names": runtime, "action": "SCMP_ACT_ALLOW",
                                "comment": "needed by runc and the program loader to start the container"})
    if "clone3" not in learned_names:
        profile["syscalls"].append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
                                    "comment": "ENOSYS so that glibc falls back to clone"})
    return profile


def _usable(name: str) -> bool:
    # "#123" / "syscall_123": numbers the sensor could not name; libseccomp needs names.
    return bool(name) and not name.startswith(("#", "syscall_")) and name.replace("_", "").isalnum()


def allowed_names(profile: dict[str, Any]) -> set[str]:
    """Every name a profile built here allows (for tests and `harden` notes)."""
    return {n for rule in profile.get("syscalls", []) if rule.get("action") == "SCMP_ACT_ALLOW"
            for n in rule.get("names", [])}
