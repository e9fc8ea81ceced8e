"""The hasher red team's helpers (tests and bench): what a hostile container does to the hasher,
how long a quiet container's exec takes to become an alert, and the enforcer's CPU."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import datetime
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


class AlertWatcher:
    """Subscribed to the `alert` topic: when each process alert about a path arrived
    (wall clock), and the time of the event it is about (the kernel's exec time)."""

    def __init__(self, socket_path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(socket_path)
        self.sock.sendall(b'{"id": 1, "op": "subscribe", "topics": ["alert"]}\n')
        self.seen: dict[str, tuple[float, float]] = {}  # path -> (arrived, event time)
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            arrived = time.time()
            buf += chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                msg = json.loads(line)
                a = msg.get("data") if msg.get("event") == "alert" else None
                if not a or a.get("kind") != "process":
                    continue
                d = a.get("detail") or {}
                path = d.get("path") or (d.get("latest_detail") or {}).get("path")
                when = datetime.fromisoformat(a["last_seen"].replace("Z", "+00:00")).timestamp()
                with self._cond:
                    self.seen.setdefault(path, (arrived, when))
                    self._cond.notify_all()

    def latency(self, path: str, timeout: float = 60) -> float:
        """Seconds from the exec (kernel time) to its alert reaching a subscriber."""
        with self._cond:
            if not self._cond.wait_for(lambda: path in self.seen, timeout):
                raise AssertionError(f"no process alert for {path} within {timeout:g} s")
            arrived, when = self.seen[path]
        return arrived - when

    def close(self) -> None:
        self.sock.close()
