"""Floods against a real enforcer (tests/integration/test_floods.py, bench/bench_stress.py): the flood
program (bench/flood_workload.c, built static and copied into busybox containers), a probe
that keeps asking the enforcer's socket while a flood runs (latency of each answer and the
enforcer's RSS), and a subscriber that never reads."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.harness import (BUSYBOX_IMAGE, REPO, TEST_LABEL, DockerResources, EnforcerProcess, container_info, docker,
                     socket_call, unique)

WORKLOAD = REPO / "bench" / "flood_workload.c"


def build_flood(out_dir: Path) -> Path:
    out = out_dir / "flood"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(out), str(WORKLOAD)], check=True, capture_output=True)
    return out


def flood_container(dockerx: DockerResources, binary: Path, network: str, command: list[str] | None = None) -> str:
    """A busybox container with /flood, that serves on 8080 unless told otherwise. The
    program is in the image's view before the container starts (docker cp to a created
    container), so nothing but the workload itself runs in it."""
    name = unique("stflood")
    docker("create", "--name", name, "--label", f"{TEST_LABEL}=1", "--network", network, BUSYBOX_IMAGE,
           *(command or ["/flood", "serve", "8080"]))
    dockerx.containers.append(name)
    docker("cp", str(binary), f"{name}:/flood")
    docker("start", name)
    return name


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def timed_call(path: str, op: str, timeout: float = 5.0, **args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    result = socket_call(path, op, timeout=timeout, **args)
    return result, time.perf_counter() - t


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


@dataclass
class ProbeResult:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, KiB)
    errors: list[str] = field(default_factory=list)

    def all_latencies(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]

    def summary(self) -> str:
        lat = self.all_latencies()
        if not lat:
            return "no requests"
        return (f"{len(lat)} requests: p50 {statistics.median(lat) * 1000:.1f} ms, p99 {pct(lat, 99) * 1000:.1f} ms, "
                f"max {max(lat) * 1000:.1f} ms; RSS {self.rss[0][1] // 1024 if self.rss else 0}"
                f"->{max(r for _, r in self.rss) // 1024 if self.rss else 0} MiB peak; errors {len(self.errors)}")


class Probe:
    """Asks `status` and `alerts` in turn every `interval` seconds in a thread, and samples
    the enforcer's RSS, until stopped. A request that does not answer within `timeout`
    is an error (recorded, the probe goes on)."""

    def __init__(self, e: EnforcerProcess, interval: float = 0.25, timeout: float = 5.0,
                 ops: tuple[tuple[str, dict[str, Any]], ...] = (("status", {}), ("alerts", {"limit": 50}))) -> None:
        self.e = e
        self.interval = interval
        self.timeout = timeout
        self.ops = ops
        self.result = ProbeResult(latencies={op: [] for op, _ in ops})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Probe":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(self.timeout * 3)

    def _run(self) -> None:
        t0 = time.monotonic()
        pid = self.e.proc.pid  # type: ignore[union-attr]
        i = 0
        while not self._stop.is_set():
            op, args = self.ops[i % len(self.ops)]
            i += 1
            try:
                _, dt = timed_call(self.e.socket, op, timeout=self.timeout, **args)
                self.result.latencies[op].append(dt)
            except Exception as ex:  # noqa: BLE001 - recorded; the test decides
                self.result.errors.append(f"{op}: {type(ex).__name__}: {ex}")
            try:
                self.result.rss.append((time.monotonic() - t0, rss_kib(pid)))
            except OSError as ex:
                self.result.errors.append(f"rss: {ex}")
            self._stop.wait(self.interval)


class DeafSubscriber:
    """A client that subscribes to topics and then never reads: the enforcer must count
    what it cannot deliver to it and keep serving everyone else."""

    def __init__(self, path: str, topics: list[str]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(path)
        self.sock.sendall((json.dumps({"id": 1, "op": "subscribe", "topics": topics}) + "\n").encode())

    def close(self) -> None:
        self.sock.close()


def run_flood(container: str, *args: str, timeout: float = 300) -> tuple[int, float]:
    """Run /flood in the container; (operations, seconds) as it reports them."""
    out = docker("exec", container, "/flood", *args, timeout=timeout).stdout.split()
    return int(out[0]), float(out[1])


def start_flood(container: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["docker", "exec", container, "/flood", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_flood(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, float]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"flood exited {proc.returncode}: {err.strip() or out.strip()}")
    ops, seconds = out.split()[:2]
    return int(ops), float(seconds)


def sensor(stats: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in stats["sensors"] if s["name"] == name)


def accounted(s: dict[str, Any]) -> int:
    """Everything a sensor did with what it saw: delivered, lost, suppressed, deduped."""
    return int(s["events"]) + int(s["lost"]) + int(s["suppressed"]) + int(s["deduped"])


def make_links(container: str, n: int) -> None:
    """Hard links of /flood under n distinct paths, made from the host (no exec, no file
    event in the container: nothing for the profile to learn)."""
    root = f"/proc/{container_info(container)['State']['Pid']}/root"
    os.makedirs(f"{root}/tmp/fl", exist_ok=True)
    for i in range(n):
        try:
            os.link(f"{root}/flood", f"{root}/tmp/fl/p{i:05d}")
        except FileExistsError:
            pass
