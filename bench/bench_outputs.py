"""Alert outputs benchmark (prints figures, asserts nothing).

1. Throughput: alerts delivered per second to a local HTTP receiver (a separate process on
   127.0.0.1), one JSON object per POST, through the durable outbox: N incidents are raised
   through the real detector and alert book, and the clock stops when the receiver holds all.
2. Detection latency with outputs on vs off: an anomaly put on the event queue until its
   alert is read on the socket, one at a time (p50, p99), first with no output, then with
   three (HTTP falco, file ocsf, syslog UDP json); the ratio on/off.

BENCH_OUTPUTS=http|file|syslog (comma-separated) picks the outputs of the "on" run;
BENCH_THROUGHPUT=0 skips part 1.

The enforcer is the in-process rig of the unit tests (real daemon, detector, alert book,
SQLite store and unix socket; no Docker, no eBPF). Run: .venv/bin/python bench/bench_outputs.py
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from support.receivers import free_port
from support.rig import Rig

from enforcer.sensors.events import ExecEvent

SHA = "c" * 64
THROUGHPUT_ALERTS = 2000
LATENCY_SAMPLES = 300

RECEIVER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from support.receivers import HttpReceiver
r = HttpReceiver(int(sys.argv[1])).up()
print("ready", flush=True)
for line in sys.stdin:
    print(len(r.bodies), flush=True)
"""


class Receiver:
    """The HTTP receiver in its own process (its threads do not share our interpreter)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(self.port), str(REPO / "tests")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def count(self) -> int:
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


async def make_rig(workdir: Path, containers: int) -> Rig:
    r = Rig(workdir, learn_seconds=0.0)
    r.compose("bench", {"web": {}})
    await r.start()
    r.cs = [r.container(f"bench_web_{i}", "bench", "web") for i in range(containers)]
    for c in r.cs:
        r.profiles.activate(r.profiles.for_container(c.id).profile)
    return r


async def throughput(tmp: Path, receiver: Receiver) -> None:
    r = await make_rig(tmp / "throughput", containers=THROUGHPUT_ALERTS // 10)
    try:
        await r.call("outputs.add", name="hook", url=receiver.url, format="falco")
        # Ten programs per container: under the alert book's burst threshold, one incident each.
        events = [ExecEvent(container_id=c.id, path=f"/bin/p{i}", sha256=SHA) for i in range(10) for c in r.cs]
        t0 = time.monotonic()
        await r.feed(*events)
        raised = time.monotonic() - t0
        while receiver.count() < THROUGHPUT_ALERTS:
            await asyncio.sleep(0.05)
        took = time.monotonic() - t0
        print(f"outputs: {THROUGHPUT_ALERTS} alerts raised in {raised:.2f} s, all delivered to a local HTTP "
              f"receiver (falco, one POST each) in {took:.2f} s: {THROUGHPUT_ALERTS / took:,.0f} alerts/s")
    finally:
        await r.stop()


async def latency(tmp: Path, receiver: Receiver, outputs: bool) -> list[float]:
    r = await make_rig(tmp / f"latency-{outputs}", containers=LATENCY_SAMPLES // 10)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))  # a syslog sink that reads nothing: the kernel keeps (or drops) datagrams
    try:
        which = os.environ.get("BENCH_OUTPUTS", "http,file,syslog").split(",")
        if outputs and "http" in which:
            await r.call("outputs.add", name="hook", url=receiver.url, format="falco")
        if outputs and "file" in which:
            await r.call("outputs.add", name="file", url=f"file://{tmp}/alerts-{outputs}.jsonl", format="ocsf")
        if outputs and "syslog" in which:
            await r.call("outputs.add", name="syslog", url=f"syslog://127.0.0.1:{udp.getsockname()[1]}", format="json")
        await r.client.subscribe(["alert"])
        samples = []
        for i in range(LATENCY_SAMPLES):
            c = r.cs[i % len(r.cs)]
            subject = f"/bin/l{i}"
            t0 = time.perf_counter()
            r.e.events.put_nowait(ExecEvent(container_id=c.id, path=subject, sha256=SHA))
            while True:
                ev = await r.client._events.get()
                if ev.get("event") == "alert" and ev["data"]["subject"] == subject:
                    break
            samples.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.002)  # let the workers deliver between anomalies, as on a real host
        if outputs:
            pending = sum(o["pending"] for o in await r.call("outputs"))
            print(f"outputs: (outbox rows still pending at the end of the latency run: {pending})")
        return samples
    finally:
        await r.stop()
        udp.close()


async def main() -> None:
    receiver = Receiver()
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            if os.environ.get("BENCH_THROUGHPUT", "1") == "1":
                await throughput(tmp, receiver)
            off = await latency(tmp, receiver, outputs=False)
            on = await latency(tmp, receiver, outputs=True)
        p50_off, p99_off = statistics.median(off), percentile(off, 99)
        p50_on, p99_on = statistics.median(on), percentile(on, 99)
        print(f"outputs: detection latency (event queued -> alert on the socket), {LATENCY_SAMPLES} anomalies: "
              f"off p50 {p50_off:.2f} ms p99 {p99_off:.2f} ms; on ({os.environ.get('BENCH_OUTPUTS', 'http,file,syslog')}) p50 {p50_on:.2f} ms "
              f"p99 {p99_on:.2f} ms; ratio on/off p50 {p50_on / p50_off:.2f}, p99 {p99_on / p99_off:.2f}")
    finally:
        receiver.stop()


if __name__ == "__main__":
    asyncio.run(main())
