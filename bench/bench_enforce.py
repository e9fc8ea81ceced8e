#!/usr/bin/env python3
"""Enforcement benchmark (prints figures, asserts nothing). Real enforcer (--no-sensors),
real containers on an internal Docker bridge, real nftables and cgroup freezer.

1. Command to effect, 20 rounds each (median, max):
   block / unblock: from sending the op on the socket until a prober running in the
   client container's network namespace (a host thread that joined it with setns: the
   packets are the container's) sees its TCP connects to the peer start failing / pass
   again. The prober connects every ~1 ms with a 20 ms timeout, so a failure is seen
   within ~1 ms of the first dropped SYN and a recovery within ~20 ms (a SYN sent just
   before the unblock is lost and times out).
   freeze / unfreeze: from sending the op until a thread polling the container's
   freezer.state (v1, the file `docker pause` uses) reads FROZEN / THAWED.
   Also the op's own round trip (reply received: the kernel change is committed then).
2. Allowed connections while blocks are in place: TCP connect latency between two
   containers of one bridge (handshake through the bridge and inet hooks), the same
   script with 0 blocks, then with 1,000 blocks on the connecting container (random
   peers in 10/8, half of them one port only), and for comparison 1,000 equivalent
   rules evaluated one by one in a scratch table (what a rule per block would cost).
3. Why libnftables and not pyroute2: 200 set elements via libnftables JSON vs 200 rules
   via pyroute2's nftables API, one transaction each.
"""

from __future__ import annotations

import ctypes
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from support.enforce import WEB_COMMAND, ip_of, wait_known, wait_reconciled  # noqa: E402
from enforcer.enforce.nft import Nft  # noqa: E402
from enforcer.inventory.cgroups import freezer_v1_state_file  # noqa: E402
from support.harness import (DockerResources, EnforcerProcess, container_info, ensure_busybox_image,  # noqa: E402
                     socket_call, wait_for)

ROUNDS = 20
PORT = 9911  # the latency listener's port
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(pid: int) -> None:
    """Move the calling thread (only it) into the network namespace of `pid`."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


class Prober(threading.Thread):
    """TCP connects from a container's netns to ip:port, as fast as it can; keeps (time, ok)."""

    def __init__(self, pid: int, ip: str, port: int, timeout: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.ip, self.port, self.timeout = pid, ip, port, timeout
        self.log: list[tuple[float, bool]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        in_netns(self.pid)
        while not self.stop_flag.is_set():
            t = time.perf_counter()
            s = socket.socket()
            s.settimeout(self.timeout)
            try:
                s.connect((self.ip, self.port))
                ok = True
            except OSError:
                ok = False
            finally:
                s.close()
            self.log.append((t, ok))
            time.sleep(0.001)

    def first_after(self, t0: float, ok: bool, timeout: float = 5.0) -> float:
        """When the first attempt started at or after t0 had outcome `ok` (the effect)."""
        deadline = time.perf_counter() + timeout
        start = max(0, len(self.log) - 200)
        while time.perf_counter() < deadline:
            for t, result in self.log[start:]:
                if t >= t0 and result == ok:
                    return t
            time.sleep(0.001)
        raise TimeoutError("no effect seen")


class Listener(threading.Thread):
    """A TCP server inside a container's netns (a host thread, like the prober): accepts and
    closes, no fork per connection, so the latency measured is the network path's."""

    def __init__(self, pid: int, port: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.port = pid, port
        self.ready = threading.Event()

    def run(self) -> None:
        in_netns(self.pid)
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", self.port))
        srv.listen(4096)
        self.ready.set()
        while True:
            conn, _ = srv.accept()
            conn.close()


def connect_latencies(pid: int, ip: str, port: int, n: int) -> list[float]:
    """n TCP handshakes from a container's netns; timeouts (1 s) are counted, not timed."""
    out: list[float] = []

    def run() -> None:
        in_netns(pid)
        for _ in range(n):
            s = socket.socket()
            s.settimeout(1.0)
            # Closing first on the server side keeps our ephemeral ports out of TIME_WAIT.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            t = time.perf_counter()
            try:
                s.connect((ip, port))
                out.append(time.perf_counter() - t)
            except OSError:
                failures.append(1)
            finally:
                s.close()

    failures: list[int] = []

    th = threading.Thread(target=run)
    th.start()
    th.join()
    if failures:
        print(f"    ({len(failures)} of {n} connects failed)")
    return out


def fmt(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"median {statistics.median(ms):7.2f} ms   max {max(ms):7.2f} ms"


def timed(call: Callable[[], Any]) -> tuple[float, float]:
    t0 = time.perf_counter()
    call()
    return t0, time.perf_counter()


def bench_command_to_effect(e: EnforcerProcess, a: str, b: str) -> None:
    pid_a, ip_b = container_info(a)["State"]["Pid"], ip_of(b)
    prober = Prober(pid_a, ip_b, 8081)
    prober.start()
    wait_for(lambda: prober.log and prober.log[-1][1], what="the prober to connect")
    effect: dict[str, list[float]] = {"block": [], "unblock": []}
    reply: dict[str, list[float]] = {"block": [], "unblock": []}
    for _ in range(ROUNDS):
        t0, t1 = timed(lambda: socket_call(e.socket, "block", target=a, peer=b))
        effect["block"].append(prober.first_after(t0, False) - t0)
        reply["block"].append(t1 - t0)
        time.sleep(0.05)
        t0, t1 = timed(lambda: socket_call(e.socket, "unblock", target=a, peer=b))
        effect["unblock"].append(prober.first_after(t0, True) - t0)
        reply["unblock"].append(t1 - t0)
        time.sleep(0.05)
    prober.stop_flag.set()
    prober.join()
    for op in ("block", "unblock"):
        print(f"  {op:9s} effect  {fmt(effect[op])}   (op reply {fmt(reply[op])})")

    info = container_info(a)
    state_file = freezer_v1_state_file(info["Id"], info["State"]["Pid"]) or ""
    effect = {"freeze": [], "unfreeze": []}
    reply = {"freeze": [], "unfreeze": []}
    for _ in range(ROUNDS):
        for op, want in (("freeze", "FROZEN"), ("unfreeze", "THAWED")):
            seen: list[float] = []
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    with open(state_file) as f:
                        if f.read().strip() == want:
                            seen.append(time.perf_counter())
                            return

            th = threading.Thread(target=poll)
            t0 = time.perf_counter()
            th.start()
            socket_call(e.socket, op, target=a)
            t1 = time.perf_counter()
            th.join(5)
            stop.set()
            effect[op].append(seen[0] - t0)
            reply[op].append(t1 - t0)
            time.sleep(0.02)
    for op in ("freeze", "unfreeze"):
        print(f"  {op:9s} effect  {fmt(effect[op])}   (op reply {fmt(reply[op])})")


def _linear_rules(table: str, ip_a: str, peers: list[str]) -> list[dict[str, Any]]:
    """One rule per block, evaluated in order: what a rule-per-block design would do."""
    cmds: list[dict[str, Any]] = [
        {"add": {"table": {"family": "bridge", "name": table}}},
        {"add": {"chain": {"family": "bridge", "table": table, "name": "forward", "type": "filter",
                           "hook": "forward", "prio": -5, "policy": "accept"}}}]
    for peer in peers:
        m = [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": ip_a}},
             {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": peer}}]
        cmds.append({"add": {"rule": {"family": "bridge", "table": table, "chain": "forward",
                                      "expr": m + [{"drop": None}]}}})
    return cmds


def bench_allowed_latency(e: EnforcerProcess, a: str, b: str, rounds: int = 5, n: int = 1000) -> None:
    from enforcer.enforce import ruleset as R

    pid_a, ip_a, ip_b = container_info(a)["State"]["Pid"], ip_of(a), ip_of(b)
    listener = Listener(container_info(b)["State"]["Pid"], PORT)
    listener.start()
    listener.ready.wait(5)
    rng = random.Random(7)
    peers = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(1000)]
    t0 = time.perf_counter()
    for i, peer in enumerate(peers):
        args: dict[str, Any] = {"target": a, "peer": peer}
        if i % 2:
            args["port"] = rng.randrange(1, 65536)
        socket_call(e.socket, "block", timeout=30, **args)
    added = time.perf_counter() - t0
    nft_status = e.call("status")["enforcement"]["nftables"]
    # The enforcer stops (its table stays): from here the bench switches the kernel between
    # states itself, round after round, so that load drift on the host hits every state alike.
    table = e.nft_table
    e.stop()
    nft = Nft()
    full = R.parse_listing(nft.run([{"list": {"table": {"family": "inet", "name": table}}}]))[0]
    scratch = f"stbench_{os.getpid()}"
    layout = R.layout_commands(table)
    unhooked = [{"flush": {"chain": {"family": fam, "table": table, "name": hook}}}
                for fam in R.FAMILIES for hook in R.BASE_CHAINS[fam]]
    states: dict[str, list[dict[str, Any]]] = {
        "no Stockade rules (unhooked)": layout + R.replace_commands(table, R.empty_ruleset()) + unhooked,
        "0 blocks": layout + R.replace_commands(table, R.empty_ruleset()),
        "1,000 blocks as set elements": layout + R.replace_commands(table, full),
        "1,000 blocks as rules (scratch)": layout + R.replace_commands(table, R.empty_ruleset())
        + _linear_rules(scratch, ip_a, peers),
    }
    medians: dict[str, list[float]] = {k: [] for k in states}
    p99: dict[str, list[float]] = {k: [] for k in states}
    try:
        connect_latencies(pid_a, ip_b, PORT, 300)  # warm up
        for _ in range(rounds):
            for name, cmds in states.items():
                nft.run(cmds)
                lat = sorted(connect_latencies(pid_a, ip_b, PORT, n))
                medians[name].append(statistics.median(lat) * 1e6)
                p99[name].append(lat[int(len(lat) * 0.99)] * 1e6)
                if "scratch" in name:
                    nft.run([{"delete": {"table": {"family": "bridge", "name": scratch}}}])
    finally:
        nft.run(layout + R.replace_commands(table, full))
        nft.close()
        e.start()
    base = statistics.median(medians["0 blocks"])
    print(f"  TCP connect A->B through the bridge, {rounds} interleaved rounds x {n} connects "
          f"(median of round medians / median p99, microseconds):")
    for name in states:
        m = statistics.median(medians[name])
        extra = "" if name == "0 blocks" else f"   extra {m - base:+7.1f} us ({m / base:.3f}x)"
        print(f"    {name:34s} {m:7.1f} / {statistics.median(p99[name]):7.1f}{extra}")
    print("  (extra = against 0 blocks: Stockade's table hooked, its sets empty)")
    print(f"  ({nft_status['elements']} set elements in each family for the 1,000 blocks)")
    print(f"  adding the 1,000 blocks through the socket: {added:.1f} s, {added:.1f} ms per block op on average "
          f"(one transaction each; the last kernel change took {nft_status['last_apply_ms']:.1f} ms)")


def bench_library_choice(rounds: int = 3, n: int = 200) -> None:
    try:
        from pyroute2.nftables.expressions import ipv4addr, verdict
        from pyroute2.nftables.main import NFTables
    except ImportError as e:
        print(f"  pyroute2 unavailable ({e})")
        return
    lib: list[float] = []
    pr: list[float] = []
    for r in range(rounds):
        table = f"stbenchlib_{os.getpid()}_{r}"
        nft = Nft()
        nft.run([{"add": {"table": {"family": "inet", "name": table}}},
                 {"add": {"set": {"family": "inet", "table": table, "name": "s",
                                  "type": ["ipv4_addr", "ipv4_addr"], "flags": ["interval"]}}}])
        t0 = time.perf_counter()
        for i in range(n):
            nft.run([{"add": {"element": {"family": "inet", "table": table, "name": "s",
                                          "elem": [{"concat": [f"172.31.{i // 250}.{i % 250 + 1}",
                                                               {"prefix": {"addr": "10.0.0.0", "len": 8}}]}]}}}])
        lib.append((time.perf_counter() - t0) / n * 1000)
        nft.run([{"delete": {"table": {"family": "inet", "name": table}}}])
        nft.close()
        p = NFTables(nfgen_family=1)
        p.table("add", name=table)
        p.chain("add", table=table, name="c")
        t0 = time.perf_counter()
        for i in range(n):
            p.rule("add", table=table, chain="c",
                   expressions=(ipv4addr(src=f"172.31.{i // 250}.{i % 250 + 1}", dst="10.0.0.0/8"), verdict(code=0)))
        pr.append((time.perf_counter() - t0) / n * 1000)
        p.table("del", name=table)
    print(f"  one change, one transaction ({n} x {rounds} rounds, median ms): libnftables JSON set element "
          f"{statistics.median(lib):.2f}, pyroute2 rule {statistics.median(pr):.2f}")
    print("  (pyroute2 0.9.7 cannot make interval or concatenated sets at all: with it a block is a rule,"
          " and section 2 shows what 1,000 rules cost every packet)")


def main() -> int:
    ensure_busybox_image()
    resources = DockerResources()
    workdir = Path(tempfile.mkdtemp(prefix="stbench-enforce-"))
    e = EnforcerProcess(workdir / "enforcer", "--no-sensors")
    try:
        e.start()
        net = resources.network()
        a = resources.run(network=net, command=WEB_COMMAND)
        b = resources.run(network=net, command=WEB_COMMAND)
        wait_known(e, a, b)
        wait_reconciled(e)
        print(f"enforcement benchmark: table {e.nft_table}, kernel {os.uname().release}, "
              f"bridge-nf-call-iptables {e.call('status')['enforcement']['bridge_nf_call_iptables']}")
        print(f"1. command to effect ({ROUNDS} rounds)")
        bench_command_to_effect(e, a, b)
        print("2. allowed connections while blocks are in place")
        bench_allowed_latency(e, a, b)
        print("3. library choice")
        bench_library_choice()
    finally:
        try:
            e.stop()
        finally:
            e.remove_nft_table()
            resources.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
