#!/usr/bin/env python3
"""Protect-mode network benchmark (prints figures, asserts nothing). Real nftables (a
scratch Stockade table written by the same code the enforcer uses: ruleset.py and
netpolicy.py), real containers on an internal Docker bridge; no enforcer, no sensors.

1. Allowed traffic with the default-deny policy on vs off: TCP connect latency from a
   client container to a server container (a host thread in each network namespace, no
   fork per connection), interleaved rounds of: the policy off (Stockade's table hooked,
   its sets empty), on with 10 allowed flows per container, on with 1,000 (and as many
   known-container addresses, the bench network guarded: the fail-closed rules and the
   published-port exclusion are looked up on every new connection). Ratio =
   latency off / latency on (goal >= 0.95: the policy costs under 5 %).
2. No escape by repetition: 1,000 disallowed connects from 20 processes at once, from the
   protected client to a third container and from that container into the protected
   server; escapes = connects that succeeded, and bytes that came back.
3. The restart window: a real enforcer (--no-sensors, profiles active at once) with a
   container in protect mode that comes back on a new address; from `docker start`
   returning (its network is up) until the new address is in the kernel's prot4 set.
   Until then its new connections are not checked (docs/enforcement.md, limits).
4. The restart window seen from inside: the protected container's own command is a probe
   (bench/restart_probe.c, built here with gcc -static) that connects every millisecond
   from its first instruction to a container its profile does not allow; after each
   restart on a new address it prints how many connects got through and when the last
   one did (ms since the probe started). 0 means the window is closed.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench_enforce import Listener, connect_latencies  # noqa: E402
from enforcer.enforce import ruleset as R  # noqa: E402
from enforcer.enforce.netpolicy import PeerRule, policy_elements  # noqa: E402
from enforcer.enforce.nft import Nft  # noqa: E402
from support.enforce import WEB_COMMAND, ip_of  # noqa: E402
from support.harness import (DockerResources, EnforcerProcess, container_info, docker,  # noqa: E402
                             ensure_busybox_image, sh, wait_for)

PORT = 9912
ROUNDS = 5
CONNECTS = 1000
STORM = REPO / "tests" / "support" / "storm.py"


def policy_state(client: str, server: str, ip_c: str, ip_s: str, n: int, known: list[str] = (),
                 guarded: list[tuple[str, str]] = ()) -> R.Ruleset:
    """client may reach server:PORT (and n-1 other flows); server accepts client on PORT.
    `known`: the other containers' addresses (ctr4, with n-1 made-up ones); `guarded`: the
    bench network (subnet, gateway), so the fail-closed rules have something to look up."""
    rng = random.Random(n)
    filler = [PeerRule("out", "tcp", f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                       rng.randrange(1, 65536)) for _ in range(n - 1)]
    policies = {client: [PeerRule("out", "tcp", "b/server", PORT), *filler],
                server: [PeerRule("in", "tcp", "a/client", PORT), PeerRule("in", "tcp", "b/server", 8080),
                         *[PeerRule("in", r.proto, r.peer, r.port) for r in filler]]}
    addrs = {client: [ip_c], server: [ip_s]}
    services = {"a/client": [ip_c], "b/server": [ip_s]}
    containers = [ip_c, ip_s, *known, *(f"10.250.{i // 250}.{i % 250 + 1}" for i in range(n - 1))]
    el = policy_elements(policies, lambda name: addrs.get(name, []), lambda s: services.get(s, []),
                         containers, guarded)
    return {**R.empty_ruleset(), **{k: frozenset(v) for k, v in el.items()}}


def main() -> int:
    ensure_busybox_image()
    d = DockerResources()
    table = f"stbenchp_{os.getpid()}"
    nft = Nft()
    try:
        net = d.network()
        server = d.run(network=net, command=WEB_COMMAND)
        client = d.run(network=net)
        other = d.run(network=net, command=WEB_COMMAND)
        time.sleep(1)
        ip_c, ip_s = ip_of(client), ip_of(server)
        pid_c, pid_s, pid_o = (container_info(x)["State"]["Pid"] for x in (client, server, other))
        listener = Listener(pid_s, PORT)
        listener.start()
        listener.ready.wait(5)
        layout = R.layout_commands(table)
        ipam = docker("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
                      net).stdout.split()
        guarded = [(ipam[0], ipam[1])] if len(ipam) >= 2 else []
        known = [ip_of(other)]
        states = {
            "policy off (table hooked, sets empty)": R.empty_ruleset(),
            "policy on, 10 flows per container": policy_state(client, server, ip_c, ip_s, 10, known, guarded),
            "policy on, 1,000 flows per container": policy_state(client, server, ip_c, ip_s, 1000, known, guarded),
        }
        medians: dict[str, list[float]] = {k: [] for k in states}
        nft.run(layout + R.replace_commands(table, R.empty_ruleset()))
        connect_latencies(pid_c, ip_s, PORT, 300)  # warm up
        for _ in range(ROUNDS):
            for name, state in states.items():
                nft.run(layout + R.replace_commands(table, state))
                lat = sorted(connect_latencies(pid_c, ip_s, PORT, CONNECTS))
                medians[name].append(statistics.median(lat) * 1e6)
        off = statistics.median(medians["policy off (table hooked, sets empty)"])
        print(f"1. TCP connect client->server (allowed), {ROUNDS} interleaved rounds x {CONNECTS} connects, "
              f"median of round medians (us):")
        for name, state in states.items():
            m = statistics.median(medians[name])
            elements = sum(len(v) for k, v in state.items() if k in R.POLICY_SETS)
            print(f"   {name:40s} {m:7.1f} us   ratio off/on {off / m:.3f}   ({elements} policy elements)")

        nft.run(layout + R.replace_commands(table, states["policy on, 1,000 flows per container"]))
        print("2. 1,000 disallowed connects, 20 processes at once (policy on, 1,000 flows):")
        for label, pid, ip in (("client -> other (egress)", pid_c, ip_of(other)),
                               ("other -> server (ingress)", pid_o, ip_s)):
            t = time.perf_counter()
            out = sh("nsenter", "-t", str(pid), "-n", sys.executable, str(STORM), ip, "8080", "1000", "20", "1",
                     timeout=600).stdout.split()
            ok, got, refused, timeouts = (int(x) for x in out)
            print(f"   {label:28s} escapes {ok} / 1000, bytes back {got}, refused {refused}, timed out {timeouts}"
                  f"  ({time.perf_counter() - t:.1f} s)")
    finally:
        nft.run(R.delete_table_commands(table))
        nft.close()
        d.cleanup()
    restart_window()
    restart_probe()
    return 0


def restart_probe(rounds: int = 10, duration_ms: int = 1500) -> None:
    d = DockerResources()
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        sh("gcc", "-O2", "-static", "-o", str(probe), str(REPO / "bench" / "restart_probe.c"), timeout=120)
        e = EnforcerProcess(Path(tmp) / "enforcer", "--no-sensors", "--learn-seconds", "0").start()
        try:
            ensure_busybox_image()
            for _ in range(20):  # a /24 no other network uses
                n = random.randrange(1, 250)
                net = f"stnpr{random.randrange(1 << 30):x}"
                if docker("network", "create", "--internal", "--subnet", f"10.232.{n}.0/24", "--label",
                          "stockade-test=1", net, check=False).returncode == 0:
                    break
            d.networks.append(net)
            stranger = d.run(network=net, command=WEB_COMMAND)
            target = ip_of(stranger)
            web = d.run("-v", f"{probe}:/probe:ro", network=net, command=["/probe", target, "8080", str(duration_ms)])

            def lines() -> list[str]:
                return [ln for ln in docker("logs", web).stdout.splitlines() if ln.startswith("attempts=")]

            def parse(line: str) -> dict[str, float]:
                return {k: float(v) for k, v in (kv.split("=") for kv in line.split())}

            wait_for(lambda: len(lines()) >= 1, timeout=30)
            baseline = parse(lines()[-1])
            wait_for(lambda: e.call("container", target=web).get("profile_state") == "active", timeout=30)
            e.cli("mode", web, "protect")
            wait_for(lambda: f'"{ip_of(web)}"' in sh("nft", "-j", "list", "set", "inet", e.nft_table, "prot4",
                                                      check=False).stdout, timeout=10)
            results = []
            for i in range(rounds):
                new = f"10.232.{n}.{100 + i % 2 * 100 + i}"
                seen = len(lines())
                docker("stop", "-t", "1", web)
                docker("network", "disconnect", net, web)
                docker("network", "connect", "--ip", new, net, web)
                docker("start", web)
                wait_for(lambda: len(lines()) > seen, timeout=30, interval=0.1)
                results.append(parse(lines()[-1]))
            through = sorted(int(r["allowed"]) for r in results)
            last = sorted(r["last_allowed_ms"] for r in results)
            print(f"4. restart probe (a connect every ms from the container's first instruction to a peer its "
                  f"profile lacks), {rounds} restarts on a new address: connects that got through per restart: "
                  f"median {statistics.median(through):g}, max {through[-1]} (of ~{int(results[0]['attempts'])}); "
                  f"last one through at median {statistics.median(last):.0f} ms, max {last[-1]:.0f} ms "
                  f"(-1: none); unprotected baseline: {int(baseline['allowed'])} of {int(baseline['attempts'])}")
        finally:
            e.stop()
            e.remove_nft_table()
            d.cleanup()


def restart_window(rounds: int = 10) -> None:
    d = DockerResources()
    with tempfile.TemporaryDirectory() as tmp:
        e = EnforcerProcess(Path(tmp) / "enforcer", "--no-sensors", "--learn-seconds", "0").start()
        try:
            for _ in range(20):  # a /24 no other network uses
                n = random.randrange(1, 250)
                net = f"stnpb{random.randrange(1 << 30):x}"
                if docker("network", "create", "--internal", "--subnet", f"10.231.{n}.0/24", "--label",
                          "stockade-test=1", net, check=False).returncode == 0:
                    break
            d.networks.append(net)
            web = d.run(network=net, command=WEB_COMMAND)
            wait_for(lambda: e.call("container", target=web).get("profile_state") == "active", timeout=30)
            e.cli("mode", web, "protect")

            def prot() -> str:
                return sh("nft", "-j", "list", "set", "inet", e.nft_table, "prot4", check=False).stdout

            wait_for(lambda: ip_of(web) in prot(), timeout=10)
            windows = []
            for i in range(rounds):
                new = f"10.231.{n}.{100 + i % 2 * 100 + i}"
                docker("stop", "-t", "1", web)
                docker("network", "disconnect", net, web)
                docker("network", "connect", "--ip", new, net, web)
                docker("start", web)
                t0 = time.perf_counter()
                wait_for(lambda: f'"{new}"' in prot(), timeout=20, interval=0.002)
                windows.append((time.perf_counter() - t0) * 1000)
            windows.sort()
            print(f"3. restart on a new address, {rounds} rounds: `docker start` returned -> address in prot4: "
                  f"median {statistics.median(windows):.0f} ms, max {windows[-1]:.0f} ms")
        finally:
            e.stop()
            e.remove_nft_table()
            d.cleanup()


if __name__ == "__main__":
    sys.exit(main())
