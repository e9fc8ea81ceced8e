#!/usr/bin/env python3
"""Overhead of the sensors, measured so that it holds still on a small, shared machine
(prints figures; asserts nothing; docs/performance.md).

Design:
- ONE real enforcer (`stockade-enforcer`, sensors loaded, the container's profile learned
  and active in alert mode) runs for the whole bench. "off" and "on" differ only in
  whether its programs are attached: the bench takes the program fds from the pinned
  links, unpins the links (the programs detach) and, for each "on" run, attaches every
  program through a new link it holds, closing them for the next "off" run. Attaching takes
  milliseconds (the verifier already ran), so off and on can alternate 8+ times in a few
  minutes, where restarting the enforcer takes 30-140 s of compiling and verifying here.
  In "off" runs the enforcer is up and idle (its timers still run): what is measured is the
  cost of the sensors, not of an idle daemon.
- Interleaved pairs, in ABBA order (off,on then on,off ...), PAIRS of them per workload;
  per pair the ratio on/off of the workload's throughput; reported: median, min-max and a
  bootstrap 95% interval of the median.
- CPUs: with 2 cores the workload containers (client and server) are pinned to CPU 1 and
  the enforcer (every thread) to CPU 0, the host workload to CPU 1: the enforcer's
  user-space work then competes with other jobs' load on CPU 0, not with the
  workload, and the ratio measures the sensors' in-kernel cost on the workload's CPU plus
  any wait for user space. (Unpinned, the workload and the enforcer share both CPUs and a
  best-of-2 measured the scheduler more than the sensors.)
- Three costs, separately: (1) the BPF programs: kernel run time per program (BPF_ENABLE_STATS,
  run_time_ns / run_cnt from each program fd's fdinfo) over one extra "on" run per workload,
  NOT during the timed pairs (the statistics add two clock reads per program run);
  (2) the enforcer's user-space CPU (/proc/PID/stat utime+stime, all threads) per event
  delivered to Python, over the "on" runs, minus its idle rate measured in the "off" runs;
  (3) the workload's own slowdown (the ratio).
- A host process (unwatched): dd with 1-byte blocks (2 syscalls per block) on CPU 1,
  interleaved the same way: the raw sys_enter/sys_exit programs run on every host syscall.
- The same pairs again with the container's profile set back to learn mode.

Last line: `overhead ratios: exec=R open=R connect=R` (alert mode, medians).

Run as root on a machine set up by `make setup`: .venv/bin/python bench/bench_overhead.py
(BENCH_PAIRS=N and BENCH_SECONDS=S in the environment change the defaults, 12 pairs of 1.5 s runs;
BENCH_ABLATE=open/write,exec profiles instead: the CPU-time ratio with one sensor's programs
attached at a time, bpf/<sensor>.c, and nothing else.)
"""

from __future__ import annotations

import ctypes
import glob
import os
import random
import resource
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from enforcer.sensors import pins as P  # noqa: E402
from bpf_fdinfo import run_stats  # noqa: E402 - bench/, this script's folder
from support.enforce import sensors_loaded, wait_active  # noqa: E402
from support.harness import (DockerResources, EnforcerProcess, container_info, docker,  # noqa: E402
                             ensure_busybox_image, wait_for)

PAIRS = int(os.environ.get("BENCH_PAIRS", "12"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "1.5"))
LEARN_SECONDS = 25
WORKLOAD_CPU = "1"
ENFORCER_CPU = "0"
DD_BLOCKS = 400_000
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_ENABLE_STATS = 32
_BPF_MAP_LOOKUP_ELEM = 1
_BPF_MAP_UPDATE_ELEM = 2
CAP_SLOTS = (1, 2, 3, 4, 5, 6)  # common.h CFG_RATE_EXEC .. CFG_RATE_SYSCALL
FLOOD_SECONDS = 2.0
FLOOD_RATES = (1000, 3000, 10000, 20000, 40000)
TOP_PROGRAMS = int(os.environ.get("BENCH_TOP", "5"))
# BENCH_WORKLOADS=open/write,exec: only these workloads (profiling one of them takes a third
# of the time); the full report needs all four.
ONLY = [w.strip() for w in os.environ.get("BENCH_WORKLOADS", "").split(",") if w.strip()]


# ---- attaching and detaching the enforcer's programs --------------------------------------

class Programs:
    """The enforcer's loaded programs, attachable and detachable at will by this process."""

    def __init__(self, pin_root: str) -> None:
        links = os.path.join(pin_root, "links")
        gens = sorted(os.listdir(links))
        if len(gens) != 1:
            raise RuntimeError(f"expected one pinned generation in {links}, found {gens}")
        self.folder = os.path.join(links, gens[0])
        self.progs: dict[str, int] = {}  # program name -> a prog fd of ours
        for name in sorted(os.listdir(self.folder)):
            if os.path.isdir(os.path.join(self.folder, name)):
                continue  # tails/: the program arrays, held by the enforcer's own fds meanwhile
            lfd = P.obj_get(os.path.join(self.folder, name))
            try:
                _link_id, prog_id = P.link_ids(lfd)
            finally:
                os.close(lfd)
            attr = ctypes.create_string_buffer(struct.pack("=III", prog_id, 0, 0), 16)
            self.progs[name] = P._bpf(_BPF_PROG_GET_FD_BY_ID, attr, f"prog {prog_id}")
        self.links: list[int] = []
        shutil.rmtree(self.folder)  # the pinned links go: every program detaches
        self.attached = False

    def attach(self) -> None:
        for name, fd in self.progs.items():
            self.links.append(self._link(name, fd))
        self.attached = True

    @staticmethod
    def _link(name: str, fd: int) -> int:
        deadline = time.monotonic() + 5
        while True:
            try:
                if name.startswith("tracepoint__"):
                    category, event = name[len("tracepoint__"):].split("__", 1)
                    return P.attach_tracepoint_link(fd, category, event)
                return P.attach_raw_tracepoint_link(fd, name[len("raw_tracepoint__"):])
            except P.PinError as err:
                # An unpinned link is freed by deferred work: until then the program is
                # still on the tracepoint (EEXIST). Only after the first unpin.
                if "File exists" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def detach(self) -> None:
        for fd in self.links:
            os.close(fd)
        self.links = []
        self.attached = False

    def run_stats(self) -> dict[str, tuple[int, int]]:
        """program -> (run_time_ns, run_cnt), from our fds' fdinfo."""
        return run_stats(self.progs)


class BpfStats:
    """Kernel run-time statistics of every BPF program while this is open (BPF_ENABLE_STATS:
    reference-counted, so it does not fight anyone else's kernel.bpf_stats_enabled)."""

    def __enter__(self) -> "BpfStats":
        attr = ctypes.create_string_buffer(struct.pack("=I", 0), 8)  # BPF_STATS_RUN_TIME
        self.fd = P._bpf(_BPF_ENABLE_STATS, attr, "enable stats")
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


# ---- measuring --------------------------------------------------------------------------------

def build_workload(tmp: Path) -> Path:
    out = tmp / "load"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(out), str(REPO / "bench" / "sensors_workload.c")], check=True)
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def io_bytes(pid: int) -> int:
    """Bytes the enforcer (all threads) has caused to be written to storage: its store
    writes share the file system the workloads' open/write loop truncates and writes."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("write_bytes:"))


def events_delivered(e: EnforcerProcess) -> tuple[int, int, int]:
    s = e.call("stats")
    return s["events_total"], s["lost_total"], s["suppressed_total"]


def median_ci(xs: list[float], n: int = 4000) -> tuple[float, float, float]:
    """(median, low, high): a percentile bootstrap 95% interval of the median."""
    rnd = random.Random(17)
    meds = sorted(statistics.median(rnd.choices(xs, k=len(xs))) for _ in range(n))
    return statistics.median(xs), meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


class Bench:
    def __init__(self, e: EnforcerProcess, progs: Programs,
                 workloads: dict[str, Callable[[], tuple[float, float]]]) -> None:
        self.e = e
        self.progs = progs
        self.workloads = workloads
        self.pid = e.proc.pid  # type: ignore[union-attr]

    overhead: list[float] = []  # seconds per run spent outside the workload (attach, stats...)
    mine = ""  # this enforcer's pin folder, left out of others_attached()
    broken = False  # the workload container went away (dockerd restarted): later phases skipped

    def others_attached(self) -> int:
        """Programs other Stockade enforcers (the other jobs' tests) have linked now: they
        run on every syscall too, so a pair during which that number changed is marked."""
        return sum(1 for p in glob.glob("/sys/fs/bpf/stockade/*/links/*/*") if not p.startswith(self.mine + "/"))

    def run(self, name: str, on: bool) -> dict[str, float]:
        start = time.monotonic()
        o0 = self.others_attached()
        if on:
            self.progs.attach()
        try:
            ev0 = events_delivered(self.e)
            c0, t0, w0 = cpu_seconds(self.pid), time.monotonic(), io_bytes(self.pid)
            rate, cpu_rate = self.workloads[name]()
            c1, t1, w1 = cpu_seconds(self.pid), time.monotonic(), io_bytes(self.pid)
            time.sleep(0.1)  # the hub drains its ring buffers on a timer: count this run's
            ev1 = events_delivered(self.e)
        finally:
            if on:
                self.progs.detach()
        self.overhead.append(time.monotonic() - start - (t1 - t0))
        o1 = self.others_attached()
        return {"rate": rate, "cpu_rate": cpu_rate, "cpu": c1 - c0, "wall": t1 - t0, "written": w1 - w0,
                "events": ev1[0] - ev0[0],
                "lost": ev1[1] - ev0[1], "suppressed": ev1[2] - ev0[2], "others": (o0, o1)}

    def pairs(self, names: list[str], label: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {n: {"ratios": [], "cpu_ratios": [], "off": [], "on": [], "clean": []}
                                          for n in names}
        for i in range(PAIRS):
            for name in names:
                order = (False, True) if i % 2 == 0 else (True, False)  # ABBA: drift cancels
                try:
                    got = {on: self.run(name, on) for on in order}
                except RuntimeError as err:  # dockerd restarted under the bench: keep what was measured
                    print(f"  [{label}] stopped at pair {i + 1}: {err}; the figures below are over "
                          f"{i} pairs", flush=True)
                    for r in out.values():
                        for k in ("ratios", "cpu_ratios", "off", "on", "clean"):
                            del r[k][i:]
                    self.broken = True
                    return out
                out[name]["ratios"].append(got[True]["rate"] / got[False]["rate"])
                out[name]["cpu_ratios"].append(got[True]["cpu_rate"] / got[False]["cpu_rate"])
                out[name]["off"].append(got[False])
                out[name]["on"].append(got[True])
                out[name]["clean"].append(len({*got[True]["others"], *got[False]["others"]}) == 1)
            print(f"  [{label}] pair {i + 1}/{PAIRS}: " + ", ".join(
                f"{n} {out[n]['ratios'][-1]:.3f} (cpu {out[n]['cpu_ratios'][-1]:.3f})" for n in names), flush=True)
        return out


def report(label: str, res: dict[str, dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Prints both ratios per workload; returns their medians (wall-clock, CPU-time)."""
    print(f"== {label}: {PAIRS} interleaved off/on pairs (ABBA), {SECONDS:g} s runs")
    print("   wall = ops per second of wall-clock time; cpu = ops per CPU-second of the workload itself "
          "(user+system of the loop and its children: what the sensors add to its own work, without the "
          "waits for the disk or for other processes on its CPU)")
    print(f"{'workload':11} {'kind':4} {'off ops/s':>10} {'on ops/s':>10} {'ratio med':>9} {'min-max':>13} "
          f"{'bootstrap 95%':>14}")
    medians: dict[str, float] = {}
    cpu_medians: dict[str, float] = {}
    for name, r in res.items():
        if not r["ratios"]:
            print(f"{name:11} no complete pair")
            medians[name] = cpu_medians[name] = float("nan")
            continue
        for kind, key, rk, into in (("wall", "rate", "ratios", medians), ("cpu", "cpu_rate", "cpu_ratios", cpu_medians)):
            med, lo, hi = median_ci(r[rk])
            into[name] = med
            off = statistics.median(x[key] for x in r["off"])
            on = statistics.median(x[key] for x in r["on"])
            print(f"{name:11} {kind:4} {off:10.0f} {on:10.0f} {med:9.3f} {min(r[rk]):6.3f}-{max(r[rk]):.3f} "
                  f"{lo:6.3f}-{hi:.3f}   pairs: " + " ".join(f"{x:.3f}" for x in r[rk]))
    others = sorted({n for r in res.values() for x in r["off"] + r["on"] for n in x["others"]})
    if others:
        # Their programs run on every syscall of the workload too, also in the off-runs: with
        # none attached, "off" is the syscall fast path, and the ratio carries the whole cost
        # of switching the syscall tracepoints on (docs/performance.md, runs G and H).
        print(f"   other enforcers' programs linked during these pairs: {others[0]}-{others[-1]}")
    print("   pairs during which no other enforcer attached or detached programs (theirs run on every "
          "syscall too):")
    for name, r in res.items():
        clean = [(w, c) for w, c, ok in zip(r["ratios"], r["cpu_ratios"], r["clean"]) if ok]
        if len(clean) >= 3:
            cm, clo, chi = median_ci([c for _, c in clean])
            print(f"      {name:11} {len(clean)} of {len(r['clean'])}: cpu ratio median {cm:.3f} "
                  f"(95% {clo:.3f}-{chi:.3f}), wall {statistics.median(w for w, _ in clean):.3f}")
        else:
            print(f"      {name:11} {len(clean)} of {len(r['clean'])}: too few")
    print(f"   (2) the enforcer's user space (CPU {ENFORCER_CPU}), over the on-runs:")
    for name, r in res.items():
        if not r["on"]:
            continue
        ev = sum(x["events"] for x in r["on"])
        wall = sum(x["wall"] for x in r["on"])
        lost = sum(x["lost"] for x in r["on"])
        capped = sum(x["suppressed"] for x in r["on"])
        used = sum(x["cpu"] for x in r["on"])
        idle = sum(x["cpu"] for x in r["off"]) / max(sum(x["wall"] for x in r["off"]), 1e-9)
        busy = used - idle * wall
        per_ev = f"{busy / ev * 1e6:.0f} us above idle per event" if ev else "no events"
        print(f"      {name:11} {ev / wall:7.0f} events/s to Python, {lost} lost, {capped} over the rate caps; "
              f"enforcer {used / wall * 100:.1f}% of a CPU (idle {idle * 100:.1f}%): {per_ev}")
        w_on = sum(x["written"] for x in r["on"]) / wall / 1024
        w_off = sum(x["written"] for x in r["off"]) / max(sum(x["wall"] for x in r["off"]), 1e-9) / 1024
        print(f"      {'':11} enforcer's storage writes: {w_on:.0f} KiB/s during the on-runs, {w_off:.0f} KiB/s "
              f"during the off-runs")
    return medians, cpu_medians


def bpf_cost(progs: Programs, b: Bench, names: list[str], alert: dict[str, dict[str, Any]],
             label: str = "") -> None:
    """Cost (1): what the sensors add in the kernel to one op of the workload: the extra CPU
    time per op in the workload's own context (median over the pairs; BPF programs plus the
    tracepoint machinery they switch on), then where it goes: kernel run time per program
    (bpf stats) over one extra on-run. The programs run for every process on the host, the
    other jobs' too: runs per op is an upper bound, ns per run is per program run."""
    print(f"== (1){label} kernel cost per op: extra CPU of the workload itself (on - off, median of pairs), "
          "and the programs' own run time (bpf stats, one extra on-run each, not during the pairs)")
    with BpfStats():
        for name in names:
            extra = statistics.median(1e9 / on["cpu_rate"] - 1e9 / off["cpu_rate"]
                                      for on, off in zip(alert[name]["on"], alert[name]["off"]))
            base = statistics.median(1e9 / off["cpu_rate"] for off in alert[name]["off"])
            s0 = progs.run_stats()
            r = b.run(name, True)
            s1 = progs.run_stats()
            ops = r["rate"] * r["wall"] if name != "host dd" else DD_BLOCKS * 2.0
            if name == "host dd":  # per syscall (2 per block)
                extra, base = extra / 2, base / 2
            per = {p: (s1[p][0] - s0[p][0], s1[p][1] - s0[p][1]) for p in s1}
            print(f"  {name:11} +{extra:6.0f} ns per {'syscall' if name == 'host dd' else 'op'} "
                  f"(off: {base:.0f} ns of CPU); top programs:")
            print(f"      {'program':34} {'ns/run':>7} {'runs/op':>8} {'ns/op':>7}  (runs include other processes)")
            for p, (t, n) in sorted(per.items(), key=lambda kv: -kv[1][0])[:TOP_PROGRAMS]:
                if t:
                    short = p.replace("raw_tracepoint__", "raw:").replace("tracepoint__", "")
                    print(f"      {short:34} {t / max(n, 1):7.0f} {n / ops:8.1f} {t / ops:7.0f}")


def program_groups() -> dict[str, set[str]]:
    """Program names per sensor source file (bpf/*.c), for the ablation."""
    out: dict[str, set[str]] = {}
    for c in sorted((REPO / "enforcer" / "sensors" / "bpf").glob("*.c")):
        text = c.read_text()
        names = {f"tracepoint__{a}__{b}" for a, b in re.findall(r"^TRACEPOINT_PROBE\((\w+),\s*(\w+)\)", text, re.M)}
        names |= {f"raw_tracepoint__{a}" for a in re.findall(r"^RAW_TRACEPOINT_PROBE\((\w+)\)", text, re.M)}
        out[c.stem] = names
    return out


def ablation(progs: Programs, b: Bench, names: list[str], pairs: int) -> None:
    """Profile by attaching one sensor's programs only: off vs that group on, interleaved."""
    groups = program_groups()
    everything = dict(progs.progs)
    print(f"== ablation: CPU-time ratio with ONE sensor's programs attached (off vs group), {pairs} pairs")
    try:
        for group, members in groups.items():
            progs.progs = {n: fd for n, fd in everything.items() if n in members}
            for name in names:
                ratios = []
                for i in range(pairs):
                    order = (False, True) if i % 2 == 0 else (True, False)
                    got = {on: b.run(name, on) for on in order}
                    ratios.append(got[True]["cpu_rate"] / got[False]["cpu_rate"])
                med, lo, hi = median_ci(ratios)
                print(f"  {group:8} ({len(progs.progs):2d} programs) {name:11} cpu ratio {med:.3f} "
                      f"(95% {lo:.3f}-{hi:.3f}) pairs: " + " ".join(f"{x:.3f}" for x in ratios), flush=True)
    finally:
        progs.progs = everything


def set_config(pin_root: str, values: dict[int, int]) -> dict[int, int]:
    """Write slots of the enforcer's pinned `config` map (common.h config_id); returns the
    old values. Used to lift the per-container rate caps (0 = no cap) for the flood."""
    path = glob.glob(os.path.join(pin_root, "maps-*", "config"))[-1]
    fd = P.obj_get(path)
    old = {}
    try:
        for slot, value in values.items():
            key = ctypes.c_int(slot)
            cur = ctypes.c_uint64(0)
            attr = ctypes.create_string_buffer(struct.pack("=IIQQQ", fd, 0, ctypes.addressof(key),
                                                           ctypes.addressof(cur), 0), 32)
            P._bpf(_BPF_MAP_LOOKUP_ELEM, attr, "config lookup")
            old[slot] = cur.value
            new = ctypes.c_uint64(value)
            attr = ctypes.create_string_buffer(struct.pack("=IIQQQ", fd, 0, ctypes.addressof(key),
                                                           ctypes.addressof(new), 0), 32)
            P._bpf(_BPF_MAP_UPDATE_ELEM, attr, "config update")
    finally:
        os.close(fd)
    return old


def event_capacity(e: EnforcerProcess, progs: Programs, client: str, pin_root: str) -> None:
    """(4) Events that reach Python: the whole enforcer (hub, detector, store), the rate caps
    off, fed by a container creating new files at a set rate (3 events per op: create,
    close, unlink; every path new, so nothing is a repeat)."""
    print("== (4) events to the enforcer's Python with the kernel rate caps off (config slots "
          f"{CAP_SLOTS[0]}-{CAP_SLOTS[-1]} = 0), learning mode, new files at a set rate, {FLOOD_SECONDS:g} s each")
    print(f"{'offered ops/s':>14} {'events/s made':>14} {'events/s to Python':>19} {'lost':>8} "
          f"{'enforcer CPU':>13}")
    old = set_config(pin_root, {slot: 0 for slot in CAP_SLOTS})
    progs.attach()
    first_loss = None
    best_clean = 0.0
    try:
        for rate in FLOOD_RATES:
            before = e.call("stats")
            c0, t0 = cpu_seconds(e.proc.pid), time.monotonic()  # type: ignore[union-attr]
            out = docker("exec", client, "/load", "flood", f"{FLOOD_SECONDS:g}", str(rate), timeout=120).stdout.split()
            time.sleep(1.0)  # let the hub drain what is still in the ring buffers
            c1, t1 = cpu_seconds(e.proc.pid), time.monotonic()  # type: ignore[union-attr]
            after = e.call("stats")
            secs = float(out[1])
            made = sum(a["events"] + a["lost"] - b["events"] - b["lost"]
                       for a, b in zip(after["sensors"], before["sensors"]) if a["name"] == "file")
            got = sum(a["events"] - b["events"] for a, b in zip(after["sensors"], before["sensors"]))
            lost = after["lost_total"] - before["lost_total"]
            print(f"{int(out[0]) / secs:14.0f} {made / secs:14.0f} {got / secs:19.0f} {lost:8d} "
                  f"{(c1 - c0) / (t1 - t0) * 100:12.0f}%", flush=True)
            if lost == 0:
                best_clean = max(best_clean, got / secs)
            elif first_loss is None:
                first_loss = made / secs
    finally:
        progs.detach()
        set_config(pin_root, old)
    print(f"sustained without loss: {best_clean:.0f} events/s; first loss at "
          + (f"{first_loss:.0f} events/s offered" if first_loss else "none of the rates tried"))



# ---- main -------------------------------------------------------------------------------------

def main() -> int:
    if os.geteuid() != 0:
        print("bench_overhead: run as root", file=sys.stderr)
        return 1
    started = time.monotonic()
    ensure_busybox_image()
    res = DockerResources()
    tmp = Path(tempfile.mkdtemp(prefix="stockade-overhead-"))
    e = EnforcerProcess(tmp / "enforcer", "--learn-seconds", str(LEARN_SECONDS))
    progs: Programs | None = None
    shells: list[subprocess.Popen[str]] = []
    failures: list[str] = []
    try:
        load = build_workload(tmp)
        net = res.network()
        server = res.run("--cpuset-cpus", WORKLOAD_CPU, network=net, command=["sleep", "3600"])
        # The client closes first: its TIME_WAIT sockets would use up the port range within
        # a few runs and later connects fail at once (counted as ops); reuse them.
        client = res.run("--cpuset-cpus", WORKLOAD_CPU, "--sysctl", "net.ipv4.tcp_tw_reuse=1",
                         "--sysctl", "net.ipv4.ip_local_port_range=1024 65000", network=net,
                         command=["sleep", "3600"])
        for c in (server, client):
            docker("cp", str(load), f"{c}:/load")
            docker("exec", c, "/bin/sh", "-c", "mkdir -p /tmp")
        ip = container_info(server)["NetworkSettings"]["Networks"][net]["IPAddress"]
        subprocess.Popen(["docker", "exec", server, "/load", "serve", "8080"], stdout=subprocess.DEVNULL)

        # One shell in the container runs every workload run: a `docker exec` per run took
        # 2-5 s under other jobs' load, most of the bench's time.
        def open_shell() -> subprocess.Popen[str]:
            sh_ = subprocess.Popen(["docker", "exec", "-i", client, "/bin/sh", "-c",
                                    "while read a b c d; do /load $a $b $c $d; done"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            shells.append(sh_)
            return sh_

        def in_container(*args: str) -> Callable[[], tuple[float, float]]:
            def go() -> tuple[float, float]:
                for attempt in range(3):
                    if not shells or shells[-1].poll() is not None:
                        open_shell()
                    shell = shells[-1]
                    assert shell.stdin is not None and shell.stdout is not None
                    try:
                        shell.stdin.write(" ".join(args) + "\n")
                        shell.stdin.flush()
                        out = shell.stdout.readline().split()
                    except OSError:
                        out = []
                    if len(out) >= 3:
                        break
                    # The shell went away (seen once in a learning-mode run): a new one, same run.
                    print(f"  (the workload shell ended: {shell.poll()}; a new one)", flush=True)
                    shell.kill()
                    open_shell()
                else:
                    raise RuntimeError(f"workload {args[0]} gave no result three times")
                if len(out) > 3 and int(out[3]):
                    failures.append(f"{args[0]}: {out[3]} of {out[0]} ops failed")
                return int(out[0]) / float(out[1]), int(out[0]) / float(out[2])
            return go

        def dd() -> tuple[float, float]:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(["taskset", "-c", WORKLOAD_CPU, "dd", "if=/dev/zero", "of=/dev/null", "bs=1",
                            f"count={DD_BLOCKS}"], capture_output=True, check=True)
            wall = time.perf_counter() - t
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
            return DD_BLOCKS / wall, DD_BLOCKS / cpu

        s = f"{SECONDS:g}"
        workloads = {"exec": in_container("exec", s), "open/write": in_container("write", s),
                     "connect": in_container("connect", s, ip, "8080"), "host dd": dd}
        if ONLY:
            workloads = {n: w for n, w in workloads.items() if n in ONLY}

        t0 = time.monotonic()
        e.start()
        wait_for(lambda: sensors_loaded(e), timeout=300, interval=0.5, what="sensors loaded")
        loaded_in = time.monotonic() - t0
        # The enforcer (every thread) on its own CPU, the workload on the other.
        subprocess.run(["taskset", "-a", "-p", "-c", ENFORCER_CPU, str(e.proc.pid)],  # type: ignore[union-attr]
                       capture_output=True, check=True)
        wait_for(lambda: any(c["name"] == client and c["cgroup_id"] for c in e.call("containers")), timeout=30)
        # Learn: every workload runs while the profile learns; then it is active (alert).
        for _ in range(2):
            for args in (["exec", "1"], ["write", "1"], ["connect", "1", ip, "8080"]):
                docker("exec", client, "/load", *args, timeout=60)
        wait_active(e, client, timeout=LEARN_SECONDS + 90)
        pin_root = f"/sys/fs/bpf/stockade/{e.nft_table}"
        wait_for(lambda: len(os.listdir(os.path.join(pin_root, "links"))) == 1, timeout=60,
                 what="one pinned generation")
        progs = Programs(pin_root)
        print(f"bench_overhead: enforcer loaded its sensors in {loaded_in:.0f} s; {len(progs.progs)} programs; "
              f"workload on CPU {WORKLOAD_CPU}, enforcer on CPU {ENFORCER_CPU}; load average "
              f"{os.getloadavg()[0]:.1f}; kernel {os.uname().release}", flush=True)
        b = Bench(e, progs, workloads)
        b.mine = pin_root
        for name in workloads:  # warm-up (page cache, ARP, the container's first execs)
            b.run(name, True)
            b.run(name, False)

        names = list(workloads)
        open_shell()
        if os.environ.get("BENCH_ABLATE"):  # profiling only: which sensor costs what
            ablation(progs, b, [n.strip() for n in os.environ["BENCH_ABLATE"].split(",")], PAIRS)
            return 0
        alert = b.pairs(names, "alert")
        med, cpu_med = report("alert mode (profile active)", alert)
        for n in ("exec", "open/write", "connect", "host dd"):
            med.setdefault(n, float("nan"))
            cpu_med.setdefault(n, float("nan"))
        if b.broken:
            print(f"overhead ratios: exec={med['exec']:.3f} open={med['open/write']:.3f} connect={med['connect']:.3f}")
            return 1
        bpf_cost(progs, b, names, alert)
        e.cli("mode", client, "learn")
        time.sleep(0.5)
        in_learn = [n for n in names if n != "host dd"]
        learning = b.pairs(in_learn, "learn")
        learn_med, learn_cpu = report("learning mode", learning)
        bpf_cost(progs, b, in_learn, learning, " learning mode:")
        for n in ("exec", "open/write", "connect"):
            learn_med.setdefault(n, float("nan"))
            learn_cpu.setdefault(n, float("nan"))
        if ONLY:
            print(f"(BENCH_WORKLOADS: {', '.join(names)} only)")
            print("learning ratios (cpu): " + " ".join(f"{n}={learn_cpu[n]:.3f}" for n in in_learn))
            print("cpu-time ratios (alert): " + " ".join(f"{n}={cpu_med[n]:.3f}" for n in names))
            return 0

        event_capacity(e, progs, client, pin_root)
        for key, kind in (("rate", "wall"), ("cpu_rate", "cpu")):
            dd_off = statistics.median(1e9 / x[key] / 2 for x in alert["host dd"]["off"])
            dd_on = statistics.median(1e9 / x[key] / 2 for x in alert["host dd"]["on"])
            print(f"host process (unwatched), {kind}: {dd_off:.0f} ns per syscall off, {dd_on:.0f} ns on (medians): "
                  f"{dd_on - dd_off:+.0f} ns per syscall")
        st = e.call("stats")
        print("sensor counters at the end:", ", ".join(
            f"{x['name']}: {x['events']} delivered, {x['deduped']} repeats dropped in the kernel, "
            f"{x['suppressed']} over the rate cap, {x['lost']} lost" for x in st["sensors"]))
        print("workload ops that failed (would inflate a ratio): "
              + ("; ".join(failures[:5]) + (f" and {len(failures) - 5} more runs" if len(failures) > 5 else "")
                 if failures else "none"))
        print(f"bench time {time.monotonic() - started:.0f} s; per run outside the workload (attach, "
              f"counters, detach): median {statistics.median(b.overhead) * 1000:.0f} ms")
        print(f"learning ratios (wall): exec={learn_med['exec']:.3f} open={learn_med['open/write']:.3f} "
              f"connect={learn_med['connect']:.3f}; (cpu): exec={learn_cpu['exec']:.3f} "
              f"open={learn_cpu['open/write']:.3f} connect={learn_cpu['connect']:.3f}")
        print(f"cpu-time ratios (alert): exec={cpu_med['exec']:.3f} open={cpu_med['open/write']:.3f} "
              f"connect={cpu_med['connect']:.3f} host={cpu_med['host dd']:.3f}")
        print(f"overhead ratios: exec={med['exec']:.3f} open={med['open/write']:.3f} connect={med['connect']:.3f}")
    finally:
        for sh_ in shells:
            sh_.kill()
        if progs is not None:
            progs.detach()
        e.stop()
        subprocess.run([sys.executable, "-m", "enforcer.main", "--uninstall"], env=e.env, cwd=str(REPO),
                       capture_output=True, timeout=60)
        e.remove_nft_table()
        res.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
