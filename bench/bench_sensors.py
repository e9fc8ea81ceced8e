"""Benchmark of the eBPF sensors (prints figures; asserts nothing).

1. Workloads inside a container (a static C program, bench/sensors_workload.c): an exec
   loop, an open/write/close loop, a TCP connect loop to a peer container on an internal
   network; each with the sensors off and on (a real enforcer process): ops/s, ratio.
2. The enforcer's user-space CPU per 1,000 container syscalls during those runs.
3. Cost per syscall of a host (unwatched) process: dd with 1-byte blocks, off and on.
4. The sustained event rate user space handles before losing events (rate caps off),
   and the event-to-callback latency at the hub's poll interval.

Run as root on a machine set up by `make setup`: .venv/bin/python bench/bench_sensors.py
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.harness import DockerResources, EnforcerProcess, container_info, docker, ensure_busybox_image, wait_for  # noqa: E402

SECONDS = 4.0
ROUNDS = 2


def build_workload(tmp: Path) -> Path:
    out = tmp / "load"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(out), str(REPO / "bench" / "sensors_workload.c")], check=True)
    return out


def run_load(container: str, *args: str) -> float:
    out = docker("exec", container, "/load", *args, timeout=120).stdout.split()
    return int(out[0]) / float(out[1])


def bpf_prog_time(pid: int) -> int:
    """Total run time (ns) of the BPF programs whose fds the process holds (with
    kernel.bpf_stats_enabled=1 the kernel keeps it in each program fd's fdinfo)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        if "prog_id:" in info:
            m = re.search(r"^run_time_ns:\s+(\d+)", info, re.M)
            total += int(m.group(1)) if m else 0
    return total


def bpf_time_per_op(pid: int, container: str, workload: list[str]) -> tuple[float, float]:
    """(ns in the enforcer's BPF programs per op, ns per op) over one run of a workload."""
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    try:
        before = bpf_prog_time(pid)
        ops = run_load(container, *workload)
        spent = bpf_prog_time(pid) - before
    finally:
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text("0")
    n = ops * SECONDS
    return spent / n, 1e9 / ops


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dd_ns_per_syscall() -> float:
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=1000000"], capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best / 2e6 * 1e9


def syscalls_per_op(cgroup_id: int, container: str, workload: list[str]) -> float:
    """Count the workload's syscalls with a throwaway counter (not during timed runs)."""
    from bcc import BPF

    b = BPF(text=b"""
BPF_ARRAY(n, u64, 1);
RAW_TRACEPOINT_PROBE(sys_enter) {
    if (bpf_get_current_cgroup_id() != CGROUP) return 0;
    u32 z = 0; u64 *c = n.lookup(&z); if (c) __sync_fetch_and_add(c, 1); return 0;
}""", cflags=[f"-DCGROUP={cgroup_id}ULL", "-w"])
    out = docker("exec", container, "/load", *workload).stdout.split()
    total = b["n"][b["n"].Key(0)].value
    b.cleanup()
    return total / max(int(out[0]), 1)


def main() -> int:
    if os.geteuid() != 0:
        print("bench_sensors: run as root", file=sys.stderr)
        return 1
    ensure_busybox_image()
    res = DockerResources()
    tmp = Path(tempfile.mkdtemp(prefix="stockade-bench-"))
    try:
        load = build_workload(tmp)
        net = res.network()
        server = res.run(network=net, command=["sleep", "3600"])
        client = res.run(network=net, command=["sleep", "3600"])
        for c in (server, client):
            docker("cp", str(load), f"{c}:/load")
            docker("exec", c, "/bin/sh", "-c", "mkdir -p /tmp")
        server_ip = container_info(server)["NetworkSettings"]["Networks"][net]["IPAddress"]
        subprocess.Popen(["docker", "exec", server, "/load", "serve", "8080"], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        workloads = {
            "exec loop": ["exec", str(SECONDS)],
            "open/write loop": ["write", str(SECONDS)],
            "connect loop": ["connect", str(SECONDS), server_ip, "8080"],
        }
        from enforcer.inventory.cgroups import cgroup_for_pid
        client_cg = cgroup_for_pid(int(container_info(client)["State"]["Pid"]))
        assert client_cg is not None
        per_op = {name: syscalls_per_op(client_cg.cgroup_id, client, [w[0], "1"] + w[2:])
                  for name, w in workloads.items()}

        off: dict[str, list[float]] = {k: [] for k in workloads}
        on: dict[str, list[float]] = {k: [] for k in workloads}
        cpu: dict[str, list[tuple[float, float]]] = {k: [] for k in workloads}
        dd_off = dd_ns_per_syscall()
        enforcer = None
        for _round in range(ROUNDS):
            for name, w in workloads.items():
                off[name].append(run_load(client, *w))
            enforcer = EnforcerProcess(tmp / f"enforcer{_round}").start()
            wait_for(lambda: all(s["loaded"] for s in enforcer.call("stats")["sensors"]), timeout=120,
                     what="sensors loaded")
            wait_for(lambda: any(c["name"] == client and c["cgroup_id"] for c in enforcer.call("containers")),
                     timeout=30)
            time.sleep(1)
            for name, w in workloads.items():
                before = cpu_seconds(enforcer.proc.pid)  # type: ignore[union-attr]
                ops = run_load(client, *w)
                used = cpu_seconds(enforcer.proc.pid) - before  # type: ignore[union-attr]
                on[name].append(ops)
                cpu[name].append((used, ops * SECONDS * per_op[name]))
            if _round == ROUNDS - 1:
                dd_on = dd_ns_per_syscall()
                stats = enforcer.call("stats")
                prog_ns = {name: bpf_time_per_op(enforcer.proc.pid, client, w)  # type: ignore[union-attr]
                           for name, w in workloads.items()}
            enforcer.stop()

        print(f"== workloads in a container ({SECONDS:g} s each, best of {ROUNDS}; sensors on = real enforcer)")
        print(f"{'workload':18} {'off ops/s':>11} {'on ops/s':>11} {'ratio':>7} {'syscalls/op':>12} {'enforcer CPU per 1k syscalls':>30}")
        for name in workloads:
            a, b = max(off[name]), max(on[name])
            used = sum(u for u, _ in cpu[name])
            calls = sum(n for _, n in cpu[name])
            print(f"{name:18} {a:11.0f} {b:11.0f} {b / a:7.3f} {per_op[name]:12.1f} {used / calls * 1e3 * 1e6:27.1f} us")
        print(f"host process (unwatched) syscall: {dd_off:.0f} ns off, {dd_on:.0f} ns on: +{dd_on - dd_off:.0f} ns per syscall")
        print("time in Stockade's BPF programs per op (kernel.bpf_stats_enabled), the part of the cost "
              "that is the programs themselves:")
        for name, (ns, op_ns) in prog_ns.items():
            print(f"  {name:18} {ns:8.0f} ns per op = {ns / op_ns:6.2%} of an op ({op_ns / 1000:.0f} us)")
        print("sensor counters after the runs:",
              ", ".join(f"{s['name']}: {s['events']} sent, {s['deduped']} repeats dropped, {s['lost']} lost"
                        for s in stats["sensors"]))
        sustained_rate_and_latency(res, load)
    finally:
        res.cleanup()
    return 0


def sustained_rate_and_latency(res: DockerResources, load: Path) -> None:
    """An in-process hub with the rate caps off, fed by a container creating new files."""
    from support.sensors import HubRunner, container_model

    flood = res.run("--network", "none", command=["sleep", "3600"])
    docker("cp", str(load), f"{flood}:/load")
    docker("exec", flood, "/bin/sh", "-c", "mkdir -p /tmp")
    latencies: list[float] = []
    runner = HubRunner(on_event=lambda ev: latencies.append(time.time() - ev.time),
                       rate_caps={k: 0 for k in range(1, 7)}, dedup_ttl=30.0)
    try:
        c = container_model(flood)
        runner.call(runner.inventory.add, c)
        time.sleep(0.5)
        print(f"== sustained event rate (in-process hub, poll every {runner.hub.poll_interval * 1000:.0f} ms, "
              "3 events per op: create, close, unlink)")
        print(f"{'offered ops/s':>14} {'events/s in':>12} {'events/s to Python':>19} {'lost':>8} {'hub CPU %':>10}")
        for rate in (1000, 5000, 10000, 20000, 40000):
            before = runner.call(runner.hub.stats)
            cpu0 = time.process_time()
            latencies.clear()
            t0 = time.monotonic()
            out = docker("exec", flood, "/load", "flood", "3", str(rate)).stdout.split()
            time.sleep(0.5)
            wall = time.monotonic() - t0
            cpu_used = time.process_time() - cpu0
            after = runner.call(runner.hub.stats)
            sent = sum(a.events - b.events for a, b in zip(after, before))
            lost = sum(a.lost - b.lost for a, b in zip(after, before))
            offered = int(out[0]) * 3 / float(out[1])
            print(f"{int(out[0]) / float(out[1]):14.0f} {offered:12.0f} {sent / float(out[1]):19.0f} {lost:8d} "
                  f"{cpu_used / wall * 100:9.0f}%")
            if rate == 1000 and latencies:
                lat = sorted(latencies)
                print(f"   latency kernel event -> Python callback at 1000 ops/s: p50 {statistics.median(lat) * 1e3:.1f} ms, "
                      f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms")
    finally:
        runner.close()


if __name__ == "__main__":
    sys.exit(main())
