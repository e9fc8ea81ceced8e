"""Helpers of the red-team tests and bench: what a hostile container does to the hasher,
how long a quiet container's exec takes to become an alert, and the enforcer's CPU."""

from __future__ import annotations

import os
import time
from typing import Any

from support.harness import EnforcerProcess, docker, exec_in, wait_for

# Run in the hostile container (docker exec -d): every written file the hasher would read
# forever or for long. `: > /dev/zero` (and symlinks to it under new names, which the
# kernel's per-path dedup does not fold), a FIFO with a reader, a 10 GiB sparse file.
HASHER_ATTACK = ("mkfifo /tmp/p; i=0; while true; do i=$((i+1)); [ $i -gt 300 ] && i=1; "
                 ": > /dev/zero; ln -sf /dev/zero /tmp/z$i; : > /tmp/z$i; "
                 "cat /tmp/p > /dev/null & : > /tmp/p; truncate -s 10G /tmp/big$i; done")


def start_attack(container: str) -> None:
    docker("exec", "-d", container, "sh", "-c", HASHER_ATTACK)


def exec_to_alert(e: EnforcerProcess, container: str, path: str, timeout: float = 30) -> tuple[float, dict[str, Any]]:
    """Copy busybox to `path` in the container, run it, and time from the exec's return
    to the process alert about it (seconds, the alert)."""
    assert exec_in(container, "cp", "/bin/busybox", path).returncode == 0
    exec_in(container, path, "true")
    t0 = time.monotonic()
    alert = wait_for(lambda: process_alert(e, container, path), timeout=timeout, interval=0.05,
                     what=f"the process alert for {path}")
    return time.monotonic() - t0, alert


def process_alert(e: EnforcerProcess, container: str, path: str) -> dict[str, Any] | None:
    """The process alert about `path`: its own incident, or the latest folded into a burst
    (more than 20 new incidents of one kind a minute, detect/alerts.py)."""
    for a in e.call("alerts", container=container, limit=200):
        detail = a.get("detail") or {}
        if a["kind"] == "process" and path in (detail.get("path"), (detail.get("latest_detail") or {}).get("path")):
            return a
    return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float) -> float:
    """The share of one core the process used over `seconds` of wall time."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
