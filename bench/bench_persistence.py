#!/usr/bin/env python3
"""Protect across the enforcer's death (prints figures, asserts nothing; docs/failsafe.md).

A busybox container in protect mode runs a prober: every ~10 ms it execs /bin/true (never
seen while learning, so disallowed) and appends "<uptime> <exit status>" to a file; 137 is
killed, anything else an escape. Then, on the real enforcer, kernel and Docker:

1. Cold start: the enforcer stopped and `--uninstall`ed (no pins, nothing in the kernel),
   then `stockade-enforcer` started: time from its start to the first probe killed.
2. kill -9 and restart, ROUNDS times (a cold start with pins present): escapes / probes
   across each kill and restart, the first probe killed after each start, the longest
   interval between two probes (the resolution of the measure), the time the restarted
   enforcer took to adopt the pins and re-attach.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from support.enforce import sensors_loaded, wait_active, wait_known  # noqa: E402
from support.harness import (DockerResources, EnforcerProcess, container_info, ensure_busybox_image,  # noqa: E402
                             exec_in, wait_for)

ROUNDS = 3
LEARN_SECONDS = 8
PROBER = ["sh", "-c", "mkdir -p /tmp; while true; do if [ -e /tmp/probe ]; then /bin/true; rc=$?; "
                      "read up _ < /proc/uptime; echo \"$up $rc\" >> /tmp/results; fi; /bin/sleep 0.01; done"]


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def results(name: str) -> list[tuple[float, int]]:
    root = Path(f"/proc/{container_info(name)['State']['Pid']}/root")
    try:
        lines = (root / "tmp/results").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(float(a), int(b)) for a, b in (ln.split() for ln in lines if len(ln.split()) == 2)]


def probing(name: str, on: bool) -> None:
    p = Path(f"/proc/{container_info(name)['State']['Pid']}/root/tmp/probe")
    p.write_text("") if on else p.unlink(missing_ok=True)


def window(name: str, start: float, end: float) -> tuple[int, int, float]:
    w = [(t, rc) for t, rc in results(name) if start <= t <= end]
    times = [t for t, _ in w]
    gaps = [b - a for a, b in zip(times, times[1:])] or [0.0]
    return len(w), sum(1 for _, rc in w if rc != 137), max(gaps)


def uninstall(e: EnforcerProcess) -> None:
    subprocess.run([sys.executable, "-m", "enforcer.main", "--uninstall"], env=e.env, cwd=str(REPO),
                   capture_output=True, timeout=60, check=True)


def main() -> None:
    ensure_busybox_image()
    dockerx = DockerResources()
    e = EnforcerProcess(Path(tempfile.mkdtemp(prefix="bench-persist-")) / "enforcer",
                        "--learn-seconds", str(LEARN_SECONDS))
    try:
        e.start()
        wait_for(lambda: sensors_loaded(e), timeout=180, interval=0.5, what="sensors")
        app = dockerx.run(command=PROBER)
        wait_known(e, app)
        wait_active(e, app, timeout=LEARN_SECONDS + 60)
        e.cli("mode", app, "protect")
        wait_for(lambda: exec_in(app, "/bin/true").returncode == 137, timeout=20, what="protect")
        probing(app, True)

        # 1. Cold start: nothing pinned, the database says protect.
        e.stop()
        uninstall(e)
        time.sleep(1.0)
        down = uptime()
        e.start()
        started = uptime()
        first = wait_for(lambda: next((t for t, rc in results(app) if t > started and rc == 137), None),
                         timeout=180, interval=0.2, what="the first kill after a cold start")
        n, esc, _ = window(app, down, first)
        print(f"cold start (nothing pinned): kill-on-exec in force {first - started:.1f} s after "
              f"stockade-enforcer started ({esc} of {n} probes ran meanwhile: no enforcer, no pins)")
        wait_for(lambda: sensors_loaded(e), timeout=60, interval=0.5, what="sensors")

        # 2. kill -9 and restart.
        adopts, escapes_all, probes_all, longest, first_kills = [], 0, 0, 0.0, []
        for _ in range(ROUNDS):
            time.sleep(1.0)
            killed = uptime()
            e.kill9()
            time.sleep(1.0)
            t0 = time.monotonic()
            restarted = uptime()
            e.start()
            wait_for(lambda: sensors_loaded(e), timeout=180, interval=0.2, what="sensors again")
            adopts.append(time.monotonic() - t0)
            first_kills.append(next((t for t, rc in results(app) if t > restarted and rc == 137), restarted + 1e9)
                               - restarted)
            time.sleep(1.0)
            n, esc, gap = window(app, killed - 0.5, uptime())
            probes_all += n
            escapes_all += esc
            longest = max(longest, gap)
        print(f"kill -9 + restart x{ROUNDS}: escapes {escapes_all} / {probes_all} probe execs; "
              f"longest interval between probes {longest * 1000:.0f} ms; gap in kill-on-exec "
              f"{'0 ms' if escapes_all == 0 else 'OPEN'}")
        print(f"cold start with pins present: kill-on-exec in force 0 s after stockade-enforcer started "
              f"(held by the pinned generation: {escapes_all} escapes); first probe killed after each start: "
              + ", ".join(f"{k * 1000:.0f} ms" for k in first_kills) + " (the probe interval, not a gap)")
        print(f"restart to new generation attached and old retired: median {statistics.median(adopts):.1f} s, "
              f"max {max(adopts):.1f} s (kill-on-exec held by the pinned generation meanwhile)")
        probing(app, False)
    finally:
        e.stop()
        e.remove_nft_table()
        dockerx.cleanup()


if __name__ == "__main__":
    main()
