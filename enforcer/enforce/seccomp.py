"""A Docker seccomp profile from a learned syscall set (pure: names in, JSON object out).

Allowed: the syscalls the profile learned, plus two fixed sets, each for a reason:
- RUNTIME: runc installs the filter *before* it drops capabilities and switches user
  (unless no-new-privileges is set; then just before execve), so after the filter is in
  place runc's Go runtime still checks /proc, closes inherited fds, sets capabilities and
  ids, changes directory and calls execve.
- STARTUP: a container is watched from Docker's start event, a few milliseconds after
  its first instructions, so what a program does first (the loader, a shell entrypoint
  forking and redirecting, a server opening its socket, files and directories created)
  is never seen while learning. These are ordinary process, file, socket, time and
  memory calls: none of them changes the kernel or crosses a namespace.
Never added unless learned: mount, umount2, pivot_root, chroot, ptrace, process_vm_*,
bpf, perf_event_open, *_module, kexec_*, reboot, swapon/off, unshare, setns, keyctl,
add_key, request_key, mknod(at), personality, userfaultfd, open_by_handle_at, clock and
host name setters, io_uring_*, acct, quotactl, syslog, iopl/ioperm...

Everything else fails with EPERM, except clone3, which fails with ENOSYS unless learned:
glibc falls back to clone only on ENOSYS, so EPERM there would break thread creation.
Only the native ABI is allowed: 32-bit (int 0x80) and x32 syscalls do not match the
filter's architecture and are refused.
"""

from __future__ import annotations

import platform
from typing import Any, Iterable

# What runc's init does after the filter is installed (runc 1.1, standard_init_linux.go:
# the procfs check, finalizeNamespace, the exec fifo, LookPath and execve).
RUNTIME_SYSCALLS: tuple[str, ...] = (
    "capget", "capset", "prctl", "setgroups", "setuid", "setgid", "setresuid", "setresgid",
    "setfsuid", "setfsgid", "statfs", "fstatfs", "close_range", "execve", "getppid", "gettid",
    # its Go runtime meanwhile
    "futex", "clone", "sched_yield", "sched_getaffinity", "sigaltstack", "tgkill", "tkill",
    "epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_wait",
)

# What programs do in the milliseconds before a container is watched.
STARTUP_SYSCALLS: tuple[str, ...] = (
    # loader and libc start-up
    "arch_prctl", "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "prlimit64",
    "getrlimit", "setrlimit", "brk", "mmap", "munmap", "mprotect", "madvise", "mremap", "uname",
    "getrandom", "sysinfo",
    # identity
    "getpid", "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "getpgrp", "getpgid", "setpgid", "getsid", "setsid", "umask", "getpriority", "setpriority",
    # a shell: fork, exec, wait, pipes and redirections
    "fork", "vfork", "wait4", "waitid", "dup", "dup2", "dup3", "pipe", "pipe2", "exit", "exit_group",
    # files and directories
    "open", "openat", "creat", "close", "read", "write", "readv", "writev", "pread64", "pwrite64",
    "lseek", "stat", "fstat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2",
    "readlink", "readlinkat", "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir",
    "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
    "chmod", "fchmod", "fchmodat", "ftruncate", "truncate", "fsync", "fdatasync", "utimensat",
    "fcntl", "flock", "ioctl", "sendfile",
    # a server opening its socket
    "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "setsockopt",
    "getsockopt", "getsockname", "getpeername", "sendto", "recvfrom", "sendmsg", "recvmsg",
    "shutdown", "poll", "ppoll", "select", "pselect6", "eventfd2", "timerfd_create",
    "timerfd_settime", "signalfd4",
    # time and signals
    "clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep",
    "alarm", "getitimer", "setitimer", "times", "getrusage", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "pause", "kill",
)

ENOSYS = 38
EPERM = 1

SCMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def build_seccomp(learned: Iterable[str], *, source: str = "", arch: str | None = None) -> dict[str, Any]:
    """Docker's seccomp JSON allowing `learned` (syscall names) and the runtime's needs."""
    learned_names = sorted({n for n in learned if _usable(n)})
    runtime = sorted(set(RUNTIME_SYSCALLS + STARTUP_SYSCALLS) - set(learned_names))
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
                                "comment": "runc and program start-up (before the container was watched)"})
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
