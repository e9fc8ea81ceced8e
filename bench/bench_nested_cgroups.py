#!/usr/bin/env python3
"""Cost of watching nested cgroups for an unwatched host process (prints figures, asserts nothing).

The raw syscall programs (sensors/bpf/syscall.c) run for every syscall on the host; when a
process's cgroup is not watched they also look up its ancestors at the levels where watched
cgroups sit (config[CFG_WATCH_LEVELS], bpf/common.h watched_policy_walk). This loads the
real sensors and times a loop of getppid() calls by a host process at the root cgroup with
no watched level, one level (the usual case: every container at /docker/<id>) and four
levels (the bound), interleaved A/B so that load from other processes on the machine
falls on both sides alike. Run as root: `.venv/bin/python bench/bench_nested_cgroups.py`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from enforcer.sensors import layout as L  # noqa: E402
from enforcer.sensors.program import load_program  # noqa: E402

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""
CALLS = 200_000
ROUNDS = 15
SETTINGS = {"no level": 0, "1 level": 2, "4 levels": 2 | 3 << 8 | 4 << 16 | 5 << 24}


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        src, exe = Path(d, "loop.c"), Path(d, "loop")
        src.write_text(LOOP_C)
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
        bpf = load_program()
        cfg = bpf[b"config"]
        times: dict[str, list[float]] = {k: [] for k in SETTINGS}
        for _ in range(ROUNDS):
            for name, levels in SETTINGS.items():
                cfg[cfg.Key(L.CFG_WATCH_LEVELS)] = cfg.Leaf(levels)
                out = subprocess.run([str(exe), str(CALLS)], capture_output=True, text=True, check=True).stdout
                times[name].append(float(out))
        base = statistics.median(times["no level"])
        for name, t in times.items():
            med = statistics.median(t)
            diffs = [x - y for x, y in zip(t, times["no level"])]
            print(f"{name:9s}: median {med:8.1f} ns per host syscall (min {min(t):.1f}); "
                  f"paired difference to no level: median {statistics.median(diffs):+.1f} ns "
                  f"({(med - base) / base * 100:+.1f} %)")


if __name__ == "__main__":
    main()
