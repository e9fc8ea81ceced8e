#!/usr/bin/env python3
"""Red-team benchmark (prints figures, asserts nothing): verdict latency of a quiet
container while another container attacks the hasher.

A real enforcer with its eBPF sensors, busybox containers on an internal network (one
noisy, quiet ones), all learned then active. Per round, in a quiet container: copy busybox to a new path
and run it; measured from the exec (the kernel's timestamp, carried as the alert's
last_seen) to the process alert reaching a subscriber of the `alert` topic. ROUNDS rounds on a quiet host, then ROUNDS more while
the noisy container writes to /dev/zero (under many names), a FIFO and 10 GiB sparse
files (support/hasher_attack.py HASHER_ATTACK). Prints p50/p99 of each, their ratio (goal: under
1.5), the enforcer's CPU share during each phase and the hasher's counters.

    sudo .venv/bin/python bench/bench_redteam.py [rounds]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from support.enforce import start_with_sensors, wait_active, wait_known  # noqa: E402
from support.harness import DockerResources, ensure_busybox_image, exec_in  # noqa: E402
from support.hasher_attack import AlertWatcher, cpu_seconds, start_attack  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
LEARN_SECONDS = 12
# New incidents of one container and kind beyond 20 a minute fold into a burst, published
# at most every 0.25 s (detect/alerts.py): each quiet container gets fewer, so the figure
# is the verdict's latency, not the folding's.
PER_CONTAINER = 15


def one(watch: AlertWatcher, container: str, path: str) -> float:
    assert exec_in(container, "cp", "/bin/busybox", path).returncode == 0
    exec_in(container, path, "true")
    return watch.latency(path)


def phase(e, watch: AlertWatcher, containers: list[str], tag: str) -> tuple[list[float], float]:
    pid = e.proc.pid
    c0, t0 = cpu_seconds(pid), time.monotonic()
    lat = [one(watch, containers[i // PER_CONTAINER], f"/tmp/{tag}{i}") for i in range(ROUNDS)]
    return lat, (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ensure_busybox_image()
    dockerx = DockerResources()
    with tempfile.TemporaryDirectory(prefix="bench-redteam-") as tmp:
        e = start_with_sensors(Path(tmp) / "enforcer", LEARN_SECONDS)
        try:
            net = dockerx.network()
            n = -(-ROUNDS // PER_CONTAINER)
            quiet = [dockerx.run(network=net) for _ in range(2 * n)]  # n per phase
            noisy = dockerx.run(network=net)
            wait_known(e, *quiet, noisy)
            for c in (*quiet, noisy):
                exec_in(c, "cp", "/bin/busybox", "/tmp/learned")
                exec_in(c, "/tmp/learned", "true")
            for c in (*quiet, noisy):
                wait_active(e, c)
            watch = AlertWatcher(e.socket)
            base, cpu_base = phase(e, watch, quiet[:n], "q")
            start_attack(noisy)
            time.sleep(3)
            loud, cpu_loud = phase(e, watch, quiet[n:], "n")
            watch.close()
            h = e.call("stats")["hasher"]
        finally:
            e.stop()
            e.remove_nft_table()
            dockerx.cleanup()
    b50, b99, l50, l99 = pct(base, 50), pct(base, 99), pct(loud, 50), pct(loud, 99)
    print(f"verdict latency, exec -> alert, {ROUNDS} rounds each (ms):")
    print(f"  quiet host:                    p50 {b50 * 1000:7.1f}  p99 {b99 * 1000:7.1f}  "
          f"mean {statistics.mean(base) * 1000:7.1f}  enforcer CPU {cpu_base:.0%} of a core")
    print(f"  other container on /dev/zero:  p50 {l50 * 1000:7.1f}  p99 {l99 * 1000:7.1f}  "
          f"mean {statistics.mean(loud) * 1000:7.1f}  enforcer CPU {cpu_loud:.0%} of a core")
    print(f"  ratio (goal < 1.5):            p50 {l50 / b50:5.2f}     p99 {l99 / b99:5.2f}")
    print(f"hasher: hashed {h['hashed']}, not hashed {h['skipped']}, stalled reads {h['stalled_reads']}, "
          f"worst queue {h['worst_queue']}")


if __name__ == "__main__":
    main()
