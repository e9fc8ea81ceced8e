"""Threat feeds at scale: 1,000,000 IP/CIDR indicators and 1,000,000 SHA-256 hashes.

Prints parse and load time, memory, lookups per second, and the time from the end of a
sync's download to the new set being matched (through a real FeedManager, a real SQLite
store and a feed served over HTTP from 127.0.0.1). Prints figures only: nothing asserts.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from enforcer.config import Settings  # noqa: E402
from enforcer.feeds import FeedManager  # noqa: E402
from enforcer.feeds.index import build_index  # noqa: E402
from enforcer.feeds.matcher import Matcher  # noqa: E402
from enforcer.feeds.models import Feed  # noqa: E402
from enforcer.feeds.parsers import parse  # noqa: E402
from enforcer.feeds.ranges import ProtectedRanges  # noqa: E402
from enforcer.store import Store  # noqa: E402
from support.feed_server import FeedServer  # noqa: E402

N = 1_000_000
LOOKUPS = 300_000
rng = random.Random(7)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def ip_body(n: int) -> bytes:
    """95% single addresses, 5% CIDRs from /20 to /30 (the shape of big public lists)."""
    lines = ["# generated: bench_feeds", "# ipv4 hash:net ipset"]
    for i in range(n):
        a = rng.getrandbits(32)
        if i % 20 == 0:
            plen = rng.randint(20, 30)
            a &= ~((1 << (32 - plen)) - 1)
            lines.append(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/{plen}")
        else:
            lines.append(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}")
    return ("\n".join(lines) + "\n").encode()


def hash_body(n: int) -> tuple[bytes, list[str]]:
    digests = [rng.getrandbits(256).to_bytes(32, "big").hex() for _ in range(n)]
    return ("# MalwareBazaar-style sha256 list\n" + "\n".join(digests) + "\n").encode(), digests


def rate(fn, values: list[str]) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    hits = 0
    start = time.perf_counter()
    for v in values:
        if fn(v) is not None:
            hits += 1
    return len(values) / (time.perf_counter() - start), hits


def offline() -> None:
    protected = ProtectedRanges.build()
    print(f"== {N:,} IP/CIDR indicators")
    body = ip_body(N)
    gc.collect()
    base = rss_mb()
    t0 = time.perf_counter()
    parsed = parse("ip-list", body)
    t1 = time.perf_counter()
    index = build_index("ips", parsed, protected)
    t2 = time.perf_counter()
    del parsed
    gc.collect()
    size = len(index.v4.starts) * 4 * 2 + len(index.v4.plens)
    print(f"body {len(body) / 1e6:.1f} MB; parse {t1 - t0:.2f} s, index {t2 - t1:.2f} s "
          f"({N / (t2 - t0):,.0f} indicators/s)")
    print(f"loaded {index.entries:,} ranges ({index.dropped:,} dropped as private/reserved, "
          f"{index.rejected} bad); index {size / 1e6:.1f} MB ({size / max(index.entries, 1):.1f} B/entry); "
          f"RSS +{rss_mb() - base:.0f} MB after load")
    m = Matcher()
    m.install({"ips": index})
    listed = [line for line in body.decode().splitlines()[2:] if "/" not in line]
    probe = [rng.choice(listed) if i % 2 else
             f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}"
             for i in range(LOOKUPS)]
    per_s, hits = rate(m.match_ip, probe)
    print(f"match_ip: {per_s:,.0f} lookups/s ({per_s and 1e6 / per_s:.2f} us each; {hits:,} of {LOOKUPS:,} hit)")
    t = time.perf_counter()
    nets = m.ip_networks()
    print(f"ip_networks() for enforcement: {len(nets):,} disjoint networks in {time.perf_counter() - t:.2f} s")

    print(f"\n== {N:,} SHA-256 hashes")
    hbody, digests = hash_body(N)
    gc.collect()
    base = rss_mb()
    t0 = time.perf_counter()
    hparsed = parse("sha256-list", hbody)
    t1 = time.perf_counter()
    hindex = build_index("hashes", hparsed, protected)
    t2 = time.perf_counter()
    del hparsed
    gc.collect()
    dset = hindex.digests[32]
    hsize = len(dset.prefixes) * 8 + len(dset.blob)
    print(f"body {len(hbody) / 1e6:.1f} MB; parse {t1 - t0:.2f} s, index {t2 - t1:.2f} s "
          f"({N / (t2 - t0):,.0f} hashes/s)")
    print(f"loaded {hindex.entries:,} digests; index {hsize / 1e6:.1f} MB ({hsize / hindex.entries:.0f} B/entry); "
          f"RSS +{rss_mb() - base:.0f} MB after load")
    m.install({"ips": index, "hashes": hindex})
    hprobe = [rng.choice(digests) if i % 2 else rng.getrandbits(256).to_bytes(32, "big").hex() for i in range(LOOKUPS)]
    per_s, hits = rate(m.match_hash, hprobe)
    print(f"match_hash: {per_s:,.0f} lookups/s ({1e6 / per_s:.2f} us each; {hits:,} of {LOOKUPS:,} hit)")

    names = [f"h{i}.example{i % 5000}.test" for i in range(100_000)]
    dindex = build_index("names", parse("domain-list", ("\n".join(names) + "\n").encode()), protected)
    m.install({"ips": index, "hashes": hindex, "names": dindex})
    dprobe = [f"a.b.{rng.choice(names)}" if i % 2 else f"x{i}.clean{i}.test" for i in range(LOOKUPS)]
    per_s, hits = rate(m.match_domain, dprobe)
    print(f"match_domain (100,000 names, 4-label queries): {per_s:,.0f} lookups/s ({hits:,} of {LOOKUPS:,} hit)")
    t = time.perf_counter()
    for _ in range(1000):
        m.install({"ips": index, "hashes": hindex, "names": dindex})
    print(f"swap (Matcher.install of 3 loaded indexes): {(time.perf_counter() - t) / 1000 * 1e6:.1f} us")


async def through_a_sync() -> None:
    print(f"\n== sync of a {N:,}-entry feed over HTTP on 127.0.0.1 (real FeedManager and SQLite)")
    server = FeedServer()
    body = ip_body(N)
    url = server.serve("/big.netset", body, etag='"1"')
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.db")
        store = Store(db)
        await store.open()
        events: list[object] = []
        settings = Settings(db=db)

        def publish(topic: str, data: object) -> None:
            events.append(data)

        manager = FeedManager(settings, store.feeds, publish)
        await manager.start()
        await manager.booted.wait()
        await manager.add(Feed(name="big", url=url, format="ip-list", interval=86400))
        stalls: list[float] = []

        async def ticker() -> None:  # how long does the loop stall while a sync runs?
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                stalls.append(time.perf_counter() - t - 0.005)

        tick = asyncio.create_task(ticker())
        result = await manager.sync("big")
        tick.cancel()
        print(f"first sync: {result.status}, {result.entries:,} entries, {result.bytes / 1e6:.1f} MB in "
              f"{result.seconds:.2f} s; end of download -> new set matched: {result.swap_seconds:.2f} s")
        print(f"event loop during the sync: worst stall {max(stalls) * 1000:.0f} ms, "
              f"median {sorted(stalls)[len(stalls) // 2] * 1000:.1f} ms (parse runs on a worker thread)")
        result = await manager.sync("big")
        print(f"second sync: {result.status} (ETag, 304) in {result.seconds * 1000:.0f} ms")
        server.serve("/big.netset", ip_body(N), etag='"2"')
        result = await manager.sync("big")
        print(f"changed feed: {result.status}; end of download -> new set matched: {result.swap_seconds:.2f} s")
        await manager.stop()
        t = time.perf_counter()
        manager = FeedManager(settings, store.feeds, publish)
        await manager.start()
        await manager.booted.wait()
        print(f"restart: last good body loaded from SQLite and matched in {time.perf_counter() - t:.2f} s "
              f"({manager.indexes['big'].entries:,} entries)")
        await manager.stop()
        await store.close()
    server.close()


if __name__ == "__main__":
    offline()
    asyncio.run(through_a_sync())
