"""Detection benchmark (prints figures, asserts nothing).

1. Latency from an exec in a container to its alert being readable on the socket: p50 and
   p99 over 1,000 anomalies (each a program the profile does not know), first on a quiet
   host, then under a background of 10,000 allowed events per second put on the
   enforcer's event queue (as the sensors' hub would). The enforcer runs in this process
   with its real eBPF sensors, store and socket; the alerts are read by a separate
   process subscribed to the `alert` topic. The exec time is the kernel's timestamp of
   the exec (the incident's first_seen, millisecond resolution).
2. Memory of an enforcer holding 200 containers' profiles (synthetic profiles of a
   realistic size, built through the real detector, in a process of its own).

Run as root with Docker: .venv/bin/python bench/bench_detect.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from enforcer.config import Settings  # noqa: E402
from enforcer.daemon import Daemon  # noqa: E402
from enforcer.models import parse_iso_time  # noqa: E402
from enforcer.sensors.events import ExecEvent, FileEvent, NetworkEvent, SyscallEvent  # noqa: E402
from support.harness import docker, ensure_busybox_image, unique  # noqa: E402

ANOMALIES = 1000
BACKGROUND_RATE = 10_000  # allowed events per second
LEARN_SECONDS = 4.0

READER = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'{"id": 1, "op": "subscribe", "topics": ["alert"]}\n')
f = s.makefile("rb")
for line in f:
    now = time.time()
    msg = json.loads(line)
    if msg.get("event") == "alert":
        d = msg["data"]
        sys.stdout.write(json.dumps([now, d["subject"], d["first_seen"], d["count"]]) + "\n")
        sys.stdout.flush()
    elif msg.get("id") == 1:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
"""


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def rss_mb(pid: int | None = None) -> float:
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


async def background(e: Daemon, container_id: str, stop: asyncio.Event, counter: list[int]) -> None:
    """BACKGROUND_RATE allowed events per second, in 10 ms slices."""
    loop = asyncio.get_running_loop()
    per_slice = BACKGROUND_RATE // 100
    start = loop.time()
    n = 0
    while not stop.is_set():
        for i in range(per_slice):
            k = n + i
            kind = k % 4
            if kind == 0:
                ev: Any = FileEvent(time=time.time(), container_id=container_id, op="write", path=f"/tmp/bg/{k % 5000}")
            elif kind == 1:
                ev = SyscallEvent(time=time.time(), container_id=container_id, nr=0, name="read", first=True)
            elif kind == 2:
                ev = NetworkEvent(time=time.time(), container_id=container_id, direction="out", proto="tcp",
                                  remote_ip="127.0.0.1", remote_port=9000)  # learned (see latency_bench)
            else:
                ev = ExecEvent(time=time.time(), container_id=container_id, path="/bin/sh", sha256="")
            try:
                e.events.put_nowait(ev)
            except asyncio.QueueFull:
                pass
        n += per_slice
        counter[0] = n
        target = start + n / BACKGROUND_RATE
        await asyncio.sleep(max(0.0, target - loop.time()))


async def anomaly_round(e: Daemon, container: str, tag: str, received: dict[str, float]) -> list[float]:
    """Run ANOMALIES unknown programs in the container; latencies (ms) of their alerts."""
    script = (f"mkdir -p /tmp/{tag} && i=0; while [ $i -lt {ANOMALIES} ]; do i=$((i+1)); "
              f"ln -s /bin/busybox /tmp/{tag}/p$i; done; "
              f"i=0; while [ $i -lt {ANOMALIES} ]; do i=$((i+1)); /tmp/{tag}/p$i 2>/dev/null; sleep 0.01; done")
    proc = await asyncio.create_subprocess_exec("docker", "exec", container, "sh", "-c", script,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()
    prefix = f"/tmp/{tag}/"
    await wait_until(lambda: sum(1 for s in received if s.startswith(prefix)) >= ANOMALIES or None, 60,
                     f"{ANOMALIES} alerts ({tag})")
    return [received[s] for s in received if s.startswith(prefix)]


async def latency_bench() -> None:
    image = ensure_busybox_image()
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-"))
    settings = Settings(socket=str(work / "enforcer.sock"), db=str(work / "stockade.db"),
                        forensics_dir=str(work / "forensics"), learn_seconds=LEARN_SECONDS, host="bench")
    e = Daemon(settings)
    name = unique("stbench")
    stop = asyncio.Event()
    await e.start()
    reader: asyncio.subprocess.Process | None = None
    consumer: asyncio.Task[None] | None = None
    try:
        await wait_until(lambda: e.sensors is not None and e.sensors.ready.is_set(), 120, "the sensors")
        if not e.sensors.loaded:
            raise RuntimeError(f"sensors not loaded: {e.sensors.error}")
        docker("run", "-d", "--name", name, "--label", "stockade.test=1", "--network", "none", image,
               "sh", "-c", "mkdir -p /tmp && exec sleep 3600")
        cid = json.loads(docker("inspect", name).stdout)[0]["Id"]
        await wait_until(lambda: (c := e.inventory.containers.get(cid)) is not None and c.cgroup_id, 30, "the container")
        # While learning: what the benchmark's own driver does (docker exec, sh, ln, sleep, /tmp writes).
        for chore in (["sh", "-c", "true"], ["sh", "-c", "mkdir -p /tmp/chore && ln -s /bin/busybox /tmp/chore/x; sleep 0.01"]):
            docker("exec", name, *chore)
        # The container has no network: teach it one loopback peer the background then uses.
        e.events.put_nowait(NetworkEvent(time=time.time(), container_id=cid, direction="out", proto="tcp",
                                         remote_ip="127.0.0.1", remote_port=9000))
        att = e.profiles.for_container(cid)
        await wait_until(lambda: att.profile.state == "active", LEARN_SECONDS + 30, "the profile to activate")
        await asyncio.sleep(1.0)

        received: dict[str, float] = {}
        reader = await asyncio.create_subprocess_exec(sys.executable, "-c", READER, settings.socket,
                                                      stdout=asyncio.subprocess.PIPE)
        assert reader.stdout is not None
        assert (await reader.stdout.readline()).decode().strip() == "ready"

        async def consume() -> None:
            while line := await reader.stdout.readline():  # type: ignore[union-attr]
                now, subject, first_seen, count = json.loads(line)
                if count == 1 and subject not in received:
                    received[subject] = (now - parse_iso_time(first_seen)) * 1000

        consumer = asyncio.create_task(consume())

        quiet = await anomaly_round(e, name, "quiet", received)
        counter = [0]
        t0 = time.monotonic()
        handled0 = sum(e.detector.counts.values())
        cpu0 = time.process_time()
        bg = asyncio.create_task(background(e, cid, stop, counter))
        busy = await anomaly_round(e, name, "busy", received)
        stop.set()
        await bg
        elapsed = time.monotonic() - t0
        handled = sum(e.detector.counts.values()) - handled0
        cpu = time.process_time() - cpu0

        print(f"detection latency, exec in the container -> alert read on the socket ({ANOMALIES} anomalies each)")
        for label, values in (("quiet host", quiet), (f"{BACKGROUND_RATE:,} allowed events/s", busy)):
            print(f"  {label:28s} p50 {percentile(values, 50):6.1f} ms   p99 {percentile(values, 99):6.1f} ms   "
                  f"max {max(values):6.1f} ms   mean {statistics.mean(values):6.1f} ms   (n={len(values)})")
        print(f"  background actually offered: {counter[0] / elapsed:,.0f} events/s; detector handled "
              f"{handled / elapsed:,.0f} events/s; enforcer process CPU {100 * cpu / elapsed:.0f}% of one core")
        print(f"  (sensor poll interval {e.sensors.poll_interval * 1000:.0f} ms; first_seen has 1 ms resolution)")
        print(f"  alerts raised: {e.alerts.raised}, incidents stored: {e.alerts._next_id - 1}, "
              f"events lost: {sum(s.lost for s in e.sensors.stats())}")
    finally:
        stop.set()
        if reader is not None:
            reader.kill()
            await reader.wait()
        if consumer is not None:
            consumer.cancel()
        docker("rm", "-f", name, check=False)
        await e.stop()


async def memory_bench() -> None:
    """200 containers, each with its own profile (no replicas sharing), of a realistic size."""
    from support.rig import Rig

    work = Path(tempfile.mkdtemp(prefix="stockade-bench-mem-"))
    rig = Rig(work / "rig", learn_seconds=3600.0)
    await rig.start()
    started_rss = rss_mb()
    containers = [rig.container(f"app{i // 4}_svc{i % 4}_1", f"app{i // 4}", f"svc{i % 4}", image_id=f"sha256:{i:064x}",
                                ip=f"10.{i // 200}.{i % 200}.2") for i in range(200)]
    for i, c in enumerate(containers):
        events: list[Any] = []
        events += [ExecEvent(container_id=c.id, path=f"/usr/bin/prog{j}", sha256=f"{j:064x}") for j in range(40)]
        events += [NetworkEvent(container_id=c.id, direction="listen", local_port=8000 + j) for j in range(5)]
        events += [NetworkEvent(container_id=c.id, direction="out", remote_ip=f"10.{(i + j) // 200 % 256}.{(i + j) % 200}.2",
                                remote_port=5432) for j in range(20)]
        events += [NetworkEvent(container_id=c.id, direction="out", remote_ip=f"192.0.2.{j}", remote_port=443)
                   for j in range(30)]
        events += [FileEvent(container_id=c.id, op="write", path=f"/var/lib/app{j}/data/file") for j in range(50)]
        events += [SyscallEvent(container_id=c.id, nr=j, name=f"sys{j}") for j in range(120)]
        await rig.feed(*events)
    await asyncio.sleep(3)  # the deferred (unresolved private) peers and the write-behind
    entries = sum(len(v) for p in rig.profiles.profiles.values() for v in p.entries.values())
    grown = rss_mb() - started_rss
    print()
    print("memory with 200 containers' profiles (synthetic, built through the real detector, own process)")
    print(f"  profiles {len(rig.profiles.profiles)}, entries {entries:,} ({entries // len(rig.profiles.profiles)} per profile: "
          "40 programs, 5 listeners, 50 peers, 50 write prefixes, 120 syscalls)")
    print(f"  enforcer RSS {started_rss:.0f} MB started (no sensors), {rss_mb():.0f} MB with the profiles: "
          f"+{grown:.1f} MB, about {grown * 1e6 / entries:.0f} B per entry")
    # How fast the detector decides allowed events (the common case), on this one core.
    c = containers[0]
    allowed: list[Any] = []
    for k in range(200_000):
        kind = k % 4
        if kind == 0:
            allowed.append(ExecEvent(container_id=c.id, path=f"/usr/bin/prog{k % 40}", sha256=f"{k % 40:064x}"))
        elif kind == 1:
            allowed.append(FileEvent(container_id=c.id, op="write", path=f"/var/lib/app{k % 50}/data/f{k}"))
        elif kind == 2:
            allowed.append(SyscallEvent(container_id=c.id, nr=k % 120, name=f"sys{k % 120}"))
        else:
            allowed.append(NetworkEvent(container_id=c.id, direction="out", remote_ip=f"192.0.2.{k % 30}", remote_port=443))
    rig.profiles.activate(rig.profiles.for_container(c.id).profile)
    raised = rig.alerts.raised
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for ev in allowed:
        rig.e.detector.handle(ev)
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(f"  detector on allowed events (active profile): {len(allowed) / dt:,.0f} events/s, "
          f"{cpu * 1e6 / len(allowed):.1f} us CPU each, {rig.alerts.raised - raised} alerts")
    await rig.stop()


def main() -> int:
    if os.geteuid() != 0:
        print("bench_detect: needs root (eBPF)", file=sys.stderr)
        return 1
    if sys.argv[1:] == ["--memory"]:
        asyncio.run(memory_bench())
        return 0
    asyncio.run(latency_bench())
    # In a process of its own, so that the figure is the enforcer's and nothing else's.
    return subprocess.call([sys.executable, __file__, "--memory"])


if __name__ == "__main__":
    sys.exit(main())
