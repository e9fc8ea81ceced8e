"""MITRE ATT&CK technique ids for alerts (`Alert.tags`), so an analyst and the pipelines
behind the outputs can group what Stockade finds with what their other tools find.

The mapping is from what the alert is about (kind, rule, the program or path, the
syscall), not from the alert's text. It names the technique the observed behaviour is
evidence of; where one behaviour serves several, the most specific one that the fact
supports is chosen (an unexpected `wget` is ingress tool transfer, T1105, not merely
"execution").
"""

from __future__ import annotations

import posixpath
from typing import Any

# Programs by what running one in a container is evidence of.
_TRANSFER = frozenset({"wget", "curl", "tftp", "ftp", "scp", "rsync", "fetch", "aria2c"})
_SCANNERS = frozenset({"nc", "ncat", "netcat", "nmap", "masscan", "zmap", "socat", "telnet"})
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox"})
_INTERPRETERS = frozenset({"python", "perl", "ruby", "php", "node", "lua"})

# Dangerous syscalls: escape, injection, persistence in the kernel.
_SYSCALLS: dict[str, str] = {
    "unshare": "T1611", "setns": "T1611", "mount": "T1611", "umount2": "T1611", "pivot_root": "T1611",
    "open_by_handle_at": "T1611", "kexec_load": "T1611", "kexec_file_load": "T1611",
    "ptrace": "T1055.008", "process_vm_writev": "T1055", "process_vm_readv": "T1055",
    "init_module": "T1547.006", "finit_module": "T1547.006", "delete_module": "T1547.006",
    "bpf": "T1014", "keyctl": "T1552", "add_key": "T1552", "request_key": "T1552",
    "io_uring_setup": "T1562", "clone": "T1611", "clone3": "T1611",
}

_CREDENTIAL_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/passwd", "/etc/master.passwd", "/etc/security/opasswd")


def _program(detail: dict[str, Any], subject: str) -> str:
    argv = detail.get("argv") or []
    applet = detail.get("applet") or ""
    name = (applet.rpartition(":")[2] if applet else "") or (posixpath.basename(str(argv[0])) if argv else "")
    return name or posixpath.basename(str(detail.get("path") or subject))


def techniques(kind: str, rule: str, subject: str, detail: dict[str, Any]) -> list[str]:
    """The ATT&CK technique ids an alert is evidence of (may be empty)."""
    if kind == "process":
        if "learned_sha256" in detail:
            return ["T1036"]  # a learned path now runs another binary: masquerading
        name = _program(detail, subject).rstrip("0123456789.")  # wget2, python3.11: the family
        if name in _TRANSFER:
            return ["T1105"]
        if name in _SCANNERS:
            return ["T1046"]
        if name in _SHELLS:
            return ["T1059.004"]
        if name in _INTERPRETERS:
            return ["T1059"]
        path = str(detail.get("path") or "")
        if path.startswith(("/tmp/", "/dev/shm/", "/var/tmp/")):
            return ["T1204.002"]  # a program dropped where nothing is installed, then run
        return ["T1059"]
    if kind == "network":
        direction = detail.get("direction")
        if direction == "listen":
            return ["T1571"]
        if direction == "in":
            return ["T1210"]
        if detail.get("peer_container"):
            return ["T1210"]  # lateral movement to a service nothing links it to
        return ["T1071"]
    if kind == "file":
        path = str(detail.get("path") or subject.partition(" ")[2])
        reading = subject.startswith("read ")
        if any(path == f or path.startswith(f + "-") for f in _CREDENTIAL_FILES):
            return ["T1003.008"] if reading else ["T1098"]
        if "/.ssh/" in path or path.endswith("/.ssh"):
            return ["T1552.004"] if reading else ["T1098.004"]
        if "sudoers" in path:
            return ["T1548.003"]
        if not reading and path.startswith(("/etc/cron", "/var/spool/cron")):
            return ["T1053.003"]
        return [] if reading else ["T1565.001"]
    if kind == "syscall":
        name = str(detail.get("name") or subject).partition(":")[0]
        tag = _SYSCALLS.get(name)
        return [tag] if tag else ["T1106"]
    if kind == "threat":
        what = detail.get("what", "")
        if what == "DNS name":
            return ["T1071.004"]
        if what == "peer address":
            return ["T1071"]
        return ["T1105"]  # a program or written file whose hash a feed lists
    return []

