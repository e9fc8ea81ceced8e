#!/usr/bin/env python3
"""A/B of the sensors' kernel programs: the programs of a git revision (A, default HEAD)
against the working tree's (B), on one workload, in one process, interleaved (prints
figures; asserts nothing; docs/performance.md).

bench_overhead.py measures the whole product (a real enforcer, a container) and on this
shared 2-CPU machine its pairs spread over 0.73-1.18 for the open/write loop: too wide to
see a change of one map lookup. This bench measures one kernel change at a time instead:

- both revisions' programs are compiled and loaded here, unpinned and unattached, each with
  its own maps; the workload's cgroup is written into both (`watched`, `syscalls_seen`,
  `config`: the enforcer's defaults), in alert or learning mode (BENCH_MODE);
- the workload (bench/sensors_workload.c: `write` = open O_CREAT|O_TRUNC + write + close on
  10 files, `exec`, or `getppid`-style syscalls through `dd`) runs as a host process in a
  fresh cgroup of its own on CPU 1, so nothing else is attributed to that cgroup;
- per round, three runs in rotating order: nothing attached, A's programs attached, B's;
  per run the workload's ops per CPU-second (its own user+system time) and, with
  BPF_ENABLE_STATS on, each program's kernel run time and run count (over every process's
  runs: these programs run for every syscall on the host);
- reported: per revision, the median CPU ratio against "off" ([bootstrap 95%]), and the
  median ns per run of each program of A and of B (what the change does to the program
  itself, whatever the neighbours do to the workload's figures).

Run as root: .venv/bin/python bench/bench_programs.py  (BENCH_BASE=<git rev> for A,
BENCH_ROUNDS=N (12), BENCH_SECONDS=S (1.5), BENCH_MODE=alert|learn, BENCH_LOAD=write|exec|dd,
BENCH_PROGRAMS=all|raw (raw: only the two raw syscall programs); BENCH_BASE=empty: A is the
same tracepoints with programs that return at once, the floor any program there pays).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import random
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

from enforcer.inventory.cgroups import cgroup2_mount  # noqa: E402
from enforcer.sensors import layout as L  # noqa: E402
from enforcer.sensors import pins as P  # noqa: E402
from enforcer.sensors import program as prog  # noqa: E402
from bpf_fdinfo import run_stats  # noqa: E402 - bench/, this script's folder

BASE = os.environ.get("BENCH_BASE", "HEAD")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "12"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "1.5"))
MODE = os.environ.get("BENCH_MODE", "alert")
LOAD = os.environ.get("BENCH_LOAD", "write")
WHICH = os.environ.get("BENCH_PROGRAMS", "all")
CPU = "1"
_BPF_ENABLE_STATS = 32
DEFAULT_CAPS = {L.CFG_RATE_EXEC: 1000, L.CFG_RATE_TREE: 200, L.CFG_RATE_NET: 1000, L.CFG_RATE_DNS: 500,
                L.CFG_RATE_FILE: 1000, L.CFG_RATE_SYSCALL: 500}


def empty_text() -> str:
    """Programs that do nothing, on the working tree's tracepoints (and its maps, which the
    bench writes): what the tracepoint machinery alone costs."""
    text = prog.program_text()
    stubs = [f"TRACEPOINT_PROBE({a}, {b})\n{{\n    return 0;\n}}\n"
             for a, b in re.findall(r"^TRACEPOINT_PROBE\((\w+),\s*(\w+)\)", text, re.M)]
    stubs += [f"RAW_TRACEPOINT_PROBE({a})\n{{\n    return 0;\n}}\n"
              for a in re.findall(r"^RAW_TRACEPOINT_PROBE\((\w+)\)", text, re.M)]
    common = (prog._bpf_dir() / "common.h").read_text()
    head = text.split(common, 1)[0]  # the generated defines
    maps = ("BPF_PERCPU_ARRAY(counters, u64, 64);\n"
            "PINNED_TABLE(\"array\", int, u64, config, CFG_SLOTS);\n"
            "PINNED_TABLE(\"hash\", u64, struct policy, watched, 8192);\n"
            "PINNED_TABLE(\"hash\", u64, struct syscall_bits, syscalls_seen, 8192);\n")
    # The map definitions the bench writes, and the types they need, from common.h.
    types = common.split("struct ev_hdr {", 1)[0]
    structs = ("struct policy {\n    u32 profile_id;\n    u32 mode;\n    u32 gen;\n    u32 pad;\n};\n"
               "struct syscall_bits {\n    u64 w[NR_SYSCALL_BITS / 64];\n};\n")
    return head + types + "#define NR_SYSCALLS 512\n#define NR_QUALIFIED 512\n" \
        "#define NR_SYSCALL_BITS (NR_SYSCALLS + NR_QUALIFIED)\n" + structs + maps + "\n".join(stubs)


def text_at(rev: str | None) -> str:
    """The whole program text of a git revision (None: the working tree)."""
    if rev is None:
        return prog.program_text()
    if rev == "empty":
        return empty_text()
    tmp = Path(tempfile.mkdtemp(prefix="stockade-bpf-"))
    for name in ("common.h", *prog.SENSOR_FILES):
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:enforcer/sensors/bpf/{name}"],
                             capture_output=True, text=True, check=True).stdout
        (tmp / name).write_text(src)
    # The constants the C text compares paths with come from that revision's paths.py too.
    paths_py = tmp / "paths_at_rev.py"
    paths_py.write_text(subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:enforcer/sensors/paths.py"],
                                       capture_output=True, text=True, check=True).stdout)
    spec = importlib.util.spec_from_file_location("enforcer.sensors._paths_at_rev", paths_py)
    assert spec and spec.loader
    paths_at_rev = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = paths_at_rev  # its dataclasses look their module up there
    spec.loader.exec_module(paths_at_rev)
    real_dir, real_defines = prog._bpf_dir, prog.bpf_defines
    prog._bpf_dir = lambda: tmp  # type: ignore[assignment]
    prog.bpf_defines = paths_at_rev.bpf_defines  # type: ignore[attr-defined]
    try:
        return prog.program_text()
    finally:
        prog._bpf_dir, prog.bpf_defines = real_dir, real_defines  # type: ignore[assignment]


def program_names(text: str) -> list[str]:
    names = [f"tracepoint__{a}__{b}" for a, b in re.findall(r"^TRACEPOINT_PROBE\((\w+),\s*(\w+)\)", text, re.M)]
    names += [f"raw_tracepoint__{a}" for a in re.findall(r"^RAW_TRACEPOINT_PROBE\((\w+)\)", text, re.M)]
    if "HAVE_FCHMODAT2" not in text.split("/* ---- ", 1)[0]:
        names = [n for n in names if not n.endswith("fchmodat2")]
    return names


class Variant:
    def __init__(self, label: str, text: str, cgroup_id: int) -> None:
        from bcc import BPF  # noqa: PLC0415

        self.label = label
        self.bpf = prog._unattached(BPF)(text=text.encode(), cflags=["-w", "-Wno-macro-redefined"])
        names = program_names(text)
        if WHICH == "raw":
            names = [n for n in names if n.startswith("raw_")]
        self.fds: dict[str, int] = {}
        for n in names:
            kind = BPF.RAW_TRACEPOINT if n.startswith("raw_") else BPF.TRACEPOINT
            self.fds[n] = self.bpf.load_func(n, kind).fd
        prog.fill_tail_calls(self.bpf)  # before attaching: the file programs tail-call
        cfg = self.bpf[b"config"]
        cfg[cfg.Key(L.CFG_TTL_NS)] = cfg.Leaf(int(20e9))
        for slot, cap in DEFAULT_CAPS.items():
            cfg[cfg.Key(slot)] = cfg.Leaf(cap)
        w = self.bpf[b"watched"]
        w[w.Key(cgroup_id)] = w.Leaf(1, L.MODES[MODE], 1, 0)
        seen = self.bpf[b"syscalls_seen"]
        seen[seen.Key(cgroup_id)] = seen.Leaf()
        self.links: list[int] = []

    def attach(self) -> None:
        for n, fd in self.fds.items():
            if n.startswith("raw_tracepoint__"):
                self.links.append(P.attach_raw_tracepoint_link(fd, n[len("raw_tracepoint__"):]))
            else:
                cat, ev = n[len("tracepoint__"):].split("__", 1)
                self.links.append(P.attach_tracepoint_link(fd, cat, ev))

    def detach(self) -> None:
        for fd in self.links:
            os.close(fd)
        self.links = []

    def stats(self) -> dict[str, tuple[int, int]]:
        return run_stats(self.fds)

    def events(self) -> int:
        """Events sent (the counters map: emitted, all sensors)."""
        total = 0
        for k, v in self.bpf[b"counters"].items():
            if k.value % L.C_SLOTS == L.C_EMITTED:
                total += sum(v)
        return total


def median_ci(xs: list[float], n: int = 4000) -> tuple[float, float, float]:
    rnd = random.Random(17)
    meds = sorted(statistics.median(rnd.choices(xs, k=len(xs))) for _ in range(n))
    return statistics.median(xs), meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def main() -> int:
    if os.geteuid() != 0:
        print("bench_programs: run as root", file=sys.stderr)
        return 1
    root = cgroup2_mount()
    if root is None:
        print("bench_programs: no cgroup v2 hierarchy", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="stockade-ab-"))
    load = tmp / "load"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(load), str(REPO / "bench" / "sensors_workload.c")], check=True)
    cg_dir = Path(root) / f"stockade-ab-{os.getpid()}"
    cg_dir.mkdir()
    work = tmp / "work"
    work.mkdir()
    variants: list[Variant] = []
    try:
        cgroup_id = os.stat(cg_dir).st_ino
        t0 = time.monotonic()
        variants = [Variant(f"A ({BASE})", text_at(BASE), cgroup_id), Variant("B (tree)", text_at(None), cgroup_id)]
        print(f"bench_programs: {LOAD} loop, {MODE} mode, {ROUNDS} rounds of {SECONDS:g} s; programs: "
              f"{WHICH} ({len(variants[0].fds)} / {len(variants[1].fds)}); compiled and loaded in "
              f"{time.monotonic() - t0:.0f} s; load average {os.getloadavg()[0]:.1f}; workload on CPU {CPU}",
              flush=True)
        cmd = f"cd {work} && exec {load} {LOAD} {SECONDS:g}"

        def run() -> float:
            if LOAD == "dd":
                r0 = os.times()
                subprocess.run(["taskset", "-c", CPU, "sh", "-c",
                                f"echo $$ > {cg_dir}/cgroup.procs; dd if=/dev/zero of=/dev/null bs=1 count=400000 2>/dev/null"],
                               check=True)
                r1 = os.times()
                return 400000 / ((r1.children_user + r1.children_system) - (r0.children_user + r0.children_system))
            out = subprocess.run(["taskset", "-c", CPU, "sh", "-c", f"echo $$ > {cg_dir}/cgroup.procs; {cmd}"],
                                 capture_output=True, text=True, check=True).stdout.split()
            return int(out[0]) / float(out[2])

        for _ in range(2):  # warm-up: page cache, the novelty maps of both variants
            for v in variants:
                v.attach()
                run()
                v.detach()
        rates: dict[str, list[float]] = {"off": [], **{v.label: [] for v in variants}}
        per_run: dict[str, dict[str, list[float]]] = {v.label: {} for v in variants}
        events: dict[str, int] = {v.label: 0 for v in variants}
        attr = ctypes.create_string_buffer(struct.pack("=I", 0), 8)
        stats_fd = P._bpf(_BPF_ENABLE_STATS, attr, "enable stats")
        try:
            arms: list[Variant | None] = [None, *variants]
            for i in range(ROUNDS):
                order = arms[i % 3:] + arms[:i % 3]
                if i % 2:
                    order.reverse()
                got = {}
                for v in order:
                    if v is None:
                        got["off"] = run()
                        continue
                    s0, e0 = v.stats(), v.events()
                    v.attach()
                    try:
                        got[v.label] = run()
                    finally:
                        v.detach()
                    s1 = v.stats()
                    events[v.label] += v.events() - e0
                    for n in s1:
                        dt, dn = s1[n][0] - s0[n][0], s1[n][1] - s0[n][1]
                        if dn:
                            per_run[v.label].setdefault(n, []).append(dt / dn)
                for k, x in got.items():
                    rates[k].append(x)
                print(f"  round {i + 1}/{ROUNDS}: " + ", ".join(
                    f"{v.label} {got[v.label] / got['off']:.3f}" for v in variants), flush=True)
        finally:
            os.close(stats_fd)
        print(f"== cpu ratio against off (ops per CPU-second of the workload), median [bootstrap 95%] (min-max); "
              f"off: {statistics.median(rates['off']):.0f} ops per CPU-second")
        for v in variants:
            ratios = [on / off for on, off in zip(rates[v.label], rates["off"])]
            med, lo, hi = median_ci(ratios)
            extra = statistics.median(1e9 / on - 1e9 / off for on, off in zip(rates[v.label], rates["off"]))
            print(f"  {v.label:14} {med:.3f} [{lo:.3f}-{hi:.3f}] ({min(ratios):.3f}-{max(ratios):.3f}); "
                  f"{extra:+.0f} ns of CPU per op; {events[v.label]} events sent")
        b_over_a = [b / a for a, b in zip(rates[variants[0].label], rates[variants[1].label])]
        med, lo, hi = median_ci(b_over_a)
        print(f"  B against A (same round): {med:.3f} [{lo:.3f}-{hi:.3f}]")
        print("== ns per program run, median over the rounds (runs of every process on the host), A -> B:")
        names = sorted(set(per_run[variants[0].label]) | set(per_run[variants[1].label]),
                       key=lambda n: -statistics.median(per_run[variants[0].label].get(n, [0])))
        for n in names:
            a = per_run[variants[0].label].get(n)
            b = per_run[variants[1].label].get(n)
            fa = f"{statistics.median(a):6.0f}" if a else "     -"
            fb = f"{statistics.median(b):6.0f}" if b else "     -"
            short = n.replace("raw_tracepoint__", "raw:").replace("tracepoint__syscalls__", "").replace("tracepoint__", "")
            print(f"  {short:28} {fa} -> {fb}")
    finally:
        for v in variants:
            v.detach()
            v.bpf.cleanup()
        for i in range(10):  # the write loop's files (sensors_workload.c: /tmp/bench-N)
            Path(f"/tmp/bench-{i}").unlink(missing_ok=True)
        try:
            cg_dir.rmdir()
        except OSError as e:
            print(f"bench_programs: {cg_dir} not removed: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
