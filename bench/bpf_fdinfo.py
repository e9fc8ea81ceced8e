"""Kernel run-time statistics of BPF programs, read from their file descriptors' fdinfo
(filled while BPF_ENABLE_STATS is on): shared by bench_overhead.py and bench_programs.py."""

from __future__ import annotations

import re
from pathlib import Path


def run_stats(fds: dict[str, int]) -> dict[str, tuple[int, int]]:
    """program name -> (run_time_ns, run_cnt) of each program fd of this process."""
    out = {}
    for name, fd in fds.items():
        info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        t = re.search(r"^run_time_ns:\s+(\d+)", info, re.M)
        n = re.search(r"^run_cnt:\s+(\d+)", info, re.M)
        out[name] = (int(t.group(1)) if t else 0, int(n.group(1)) if n else 0)
    return out
