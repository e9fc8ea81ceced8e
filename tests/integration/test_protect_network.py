"""Default-deny in protect mode, real kernel end to end (sensors, profiles, nftables): what a
container's profile allows is its network policy before the first packet; everything else
is refused at the first SYN, both directions, IPv4 and IPv6, and not one byte moves.

One dual-stack internal network: `db` serves a page, `app` fetches it (learned), and
`stranger` (also a web server) is in no profile. Fetches are made by host processes inside
a container's network namespace (nsenter -n): the packets are the container's own, and
nothing is exec'd in a container whose protect mode would kill an unknown program.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.enforce import WEB_COMMAND, drop_counters, nft_elements, sensing, wait_active, wait_known
from support.harness import EnforcerProcess, container_info, docker, sh, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

LEARN_SECONDS = 15
STORM = Path(__file__).resolve().parents[1] / "support" / "storm.py"
# Fetches the page of whatever address /tmp/target names, twice a second, and appends what
# came back to /tmp/got_<address> (shell redirection: no program but wget and sleep runs).
CLIENT = ["sh", "-c", "mkdir -p /tmp; echo $T > /tmp/target; while true; do read t < /tmp/target; "
                      "/bin/wget -q -O - http://$t:8080/ >> /tmp/got_$t; /bin/sleep 0.5; done"]


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    with sensing(tmp_path_factory.mktemp("netpolicy") / "enforcer", LEARN_SECONDS) as e:
        yield e


def _dual_stack_network(dockerx) -> tuple[str, str, str]:
    """An internal network with IPv4 and IPv6 (no daemon config needed here); (name, v4 /24
    prefix, v6 /64 prefix)."""
    for _ in range(10):
        n = random.randrange(1, 250)
        name = f"stnp{random.randrange(1 << 30):x}"
        v4, v6 = f"172.28.{n}.", f"fd00:5b:{n:x}::"
        proc = docker("network", "create", "--internal", "--ipv6", "--subnet", f"{v4}0/24", "--subnet", f"{v6}/64",
                      "--label", "stockade-test=1", name, check=False)
        if proc.returncode == 0:
            dockerx.networks.append(name)
            return name, v4, v6
    pytest.skip("no free subnet for a dual-stack test network")


def _addrs(name: str) -> tuple[str, str]:
    n = next(iter(container_info(name)["NetworkSettings"]["Networks"].values()))
    return n["IPAddress"], n["GlobalIPv6Address"]


def fetch(container: str, ip: str, port: int = 8080, timeout: int = 3) -> tuple[bool, int, float]:
    """(page fetched, bytes received, seconds) for one fetch from `container`'s namespace."""
    pid = container_info(container)["State"]["Pid"]
    url = f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"
    started = time.monotonic()
    proc = subprocess.run(["nsenter", "-t", str(pid), "-n", "timeout", str(timeout), "busybox", "wget", "-q",
                           "-O", "-", url], capture_output=True, timeout=timeout + 20)
    return proc.returncode == 0 and b"hello" in proc.stdout, len(proc.stdout), time.monotonic() - started


def storm(container: str, ip: str, attempts: int = 1000, processes: int = 20) -> tuple[int, ...]:
    """(successes, bytes, refused, timeouts) of `attempts` connects from `container`'s namespace."""
    pid = container_info(container)["State"]["Pid"]
    out = sh("nsenter", "-t", str(pid), "-n", sys.executable, str(STORM), ip, "8080", str(attempts),
             str(processes), "1", timeout=300).stdout
    return tuple(int(x) for x in out.split())


def _prot(e: EnforcerProcess) -> set[str]:
    """The addresses under default-deny, as the kernel holds them."""
    return {str(x) for s in ("prot4", "prot6") for x in nft_elements("inet", e.nft_table, s)}


def _entries(e: EnforcerProcess, name: str, kind: str) -> list[dict]:
    return e.call("profile", target=name)["profile"]["entries"][kind]


def _peer_keys(e: EnforcerProcess, name: str) -> list[str]:
    return [x["key"] for x in _entries(e, name, "peer")]


def _got(container: str, ip: str) -> int:
    pid = container_info(container)["State"]["Pid"]
    path = Path(f"/proc/{pid}/root/tmp/got_{ip}")
    return path.stat().st_size if path.exists() else 0


def test_default_deny_refuses_the_first_packet_both_ways_and_follows_the_container(enforcer, dockerx):
    e = enforcer
    net, v4, v6 = _dual_stack_network(dockerx)
    db = dockerx.run(network=net, command=WEB_COMMAND)
    stranger = dockerx.run(network=net, command=WEB_COMMAND)
    db4, db6 = _addrs(db)
    st4, st6 = _addrs(stranger)
    app = dockerx.run("-e", f"T={db4}", network=net, command=CLIENT)
    wait_known(e, db, stranger, app)
    # Learning: app fetches from db; both profiles learn the flow (app out, db in).
    # (wget too: if the sensors missed its exec while learning, protect would kill it.)
    wait_for(lambda: any(k.startswith(f"out tcp {db}/{db} 8080") for k in _peer_keys(e, app))
             and any(k.startswith(f"in tcp {app}/{app} 8080") for k in _peer_keys(e, db))
             and any(x["data"]["path"] == "/bin/wget" for x in _entries(e, app, "process")),
             timeout=30, interval=0.5, what="the app->db flow in both profiles and wget in app's")
    # Before protect the path is open (a fetch *into* db now would teach db's profile that
    # peer: the stranger's reach into db is shown when db leaves protect, at the end).
    assert fetch(app, st4)[0]
    wait_active(e, app)
    wait_active(e, db)
    e.cli("mode", app, "protect")
    e.cli("mode", db, "protect")
    wait_for(lambda: all(a in _prot(e) for a in (db4, db6, _addrs(app)[0])), timeout=10,
             what="app and db under default-deny")

    # Allowed traffic is untouched, IPv4 and IPv6 (db's v6 address comes from app/db).
    assert fetch(app, db4)[0]
    assert fetch(app, db6)[0]

    # Outbound, first try: refused at the SYN (a reset: at once), not one byte of the page.
    for ip in (st4, st6):
        ok, got, seconds = fetch(app, ip)
        assert not ok and got == 0, (ip, got)
        assert seconds < 1.5, seconds  # refused, not a timeout
    # Inbound from a container in no profile: refused at the first attempt, both versions.
    for ip in (db4, db6):
        ok, got, _ = fetch(stranger, ip)
        assert not ok and got == 0, (ip, got)
    counters = drop_counters("inet", e.nft_table)
    assert counters.get("deny-out4-tcp", 0) >= 1 and counters.get("deny-out6-tcp", 0) >= 1, counters
    assert counters.get("deny-in4-tcp", 0) >= 1 and counters.get("deny-in6-tcp", 0) >= 1, counters

    # The app's own process tries the stranger: the sensors report the connect, the alert
    # says blocked (the kernel refused it), no reactive block was needed, nothing arrived.
    (Path(f"/proc/{container_info(app)['State']['Pid']}/root/tmp/target")).write_text(st4)
    alert = wait_for(lambda: next((a for a in e.call("alerts", container=app)
                                   if a["kind"] == "network" and a["detail"].get("peer_container") == stranger), None),
                     timeout=20, what="the alert on app's connect to the stranger")
    wait_for(lambda: e.call("alert", alert_id=alert["id"])["action"] == "blocked", timeout=10, what="action blocked")
    assert _got(app, st4) == 0
    assert not [b for b in e.call("blocks", target=app) if b["source"] == "protect"]
    (Path(f"/proc/{container_info(app)['State']['Pid']}/root/tmp/target")).write_text(db4)

    # No escape by repetition: 1,000 connects from 20 processes at once, each way.
    ok, got, refused, timeouts = storm(app, st4)
    assert (ok, got) == (0, 0) and refused + timeouts == 1000, (ok, got, refused, timeouts)
    ok, got, refused, timeouts = storm(stranger, db4)
    assert (ok, got) == (0, 0) and refused + timeouts == 1000, (ok, got, refused, timeouts)

    # db comes back with a new address: its policy follows it, and app's allow names it.
    docker("stop", "-t", "1", db)
    docker("network", "disconnect", net, db)
    new4, new6 = f"{v4}200", f"{v6}c8"
    docker("network", "connect", "--ip", new4, "--ip6", new6, net, db)
    docker("start", db)
    wait_for(lambda: new4 in _prot(e) and new6 in _prot(e) and db4 not in _prot(e), timeout=15,
             what="db's new addresses under its policy")
    wait_for(lambda: fetch(app, new4)[0], timeout=10, what="app to reach db's new address")
    assert fetch(app, new6)[0]
    ok, got, _ = fetch(stranger, new4)
    assert not ok and got == 0

    # Leaving protect removes the policy: the stranger reaches db again.
    e.cli("mode", db, "alert")
    wait_for(lambda: new4 not in _prot(e), timeout=10, what="db's policy to be removed")
    assert fetch(stranger, new4)[0]


def _host_fetch(url: str, timeout: int = 3) -> tuple[bool, int]:
    proc = subprocess.run(["timeout", str(timeout), "busybox", "wget", "-q", "-O", "-", url],
                          capture_output=True, timeout=timeout + 20)
    return proc.returncode == 0 and b"hello" in proc.stdout, len(proc.stdout)


def test_a_published_port_passes_the_policy_and_nothing_else_does(enforcer, dockerx):
    """Docker publishes no port of an --internal network, so this one network is not
    internal; its one container is a web server that connects nowhere, and under
    default-deny its outbound connections are refused anyway. Published on 127.0.0.1 only."""
    e = enforcer
    net = dockerx.network(internal=False)
    port = random.randrange(20000, 30000)
    db = dockerx.run("-p", f"127.0.0.1:{port}:8080", network=net, command=WEB_COMMAND)
    wait_known(e, db)
    db4 = _addrs(db)[0]
    assert ("in", "tcp", "*", 8080) in {tuple(x["data"][k] for k in ("direction", "proto", "peer", "port"))
                                        for x in _entries(e, db, "peer")}  # seeded: published
    wait_active(e, db)
    e.cli("mode", db, "protect")
    wait_for(lambda: db4 in _prot(e), timeout=10, what="db under default-deny")
    # Through the published port (docker-proxy or DNAT: the container's address is the
    # destination the hooks see): allowed, as the profile says.
    assert _host_fetch(f"http://127.0.0.1:{port}/")[0]
    # The host straight to the container: the published container port is open to anyone...
    assert _host_fetch(f"http://{db4}:8080/")[0]
    # ...its other listener is in no profile entry: refused at the first attempt, no byte.
    assert _host_fetch(f"http://{db4}:8081/") == (False, 0)
    assert drop_counters("inet", e.nft_table).get("deny-in4-tcp", 0) >= 1


def test_a_published_port_is_for_outside_not_for_sibling_containers_unless_linked(enforcer, dockerx):
    """Publishing means reachable from outside the host: a sibling container on the same
    network is refused at its first SYN (and the refusal is an alert); a container the
    profile links (learned here) still reaches it; the host through the published port too."""
    e = enforcer
    net = dockerx.network(internal=False)
    port = random.randrange(30000, 40000)
    db = dockerx.run("-p", f"127.0.0.1:{port}:8080", network=net, command=WEB_COMMAND)
    db4 = _addrs(db)[0]
    linked = dockerx.run("-e", f"T={db4}", network=net, command=CLIENT)
    sibling = dockerx.run(network=net, command=WEB_COMMAND)
    wait_known(e, db, linked, sibling)
    wait_for(lambda: any(k.startswith(f"in tcp {linked}/{linked} 8080") for k in _peer_keys(e, db)),
             timeout=30, interval=0.5, what="the linked flow in db profile")
    wait_active(e, db)
    e.cli("mode", db, "protect")
    wait_for(lambda: db4 in _prot(e), timeout=10, what="db under default-deny")

    assert _host_fetch(f"http://127.0.0.1:{port}/")[0]  # outside (the host) through the published port
    assert fetch(linked, db4)[0]  # the profile names it
    before = drop_counters("inet", e.nft_table).get("deny-in4-tcp", 0)
    ok, got, _ = fetch(sibling, db4)  # the published container port, from a sibling: refused
    assert not ok and got == 0, (ok, got)
    assert drop_counters("inet", e.nft_table).get("deny-in4-tcp", 0) > before  # by the policy's reset
    alert = wait_for(lambda: next((a for a in e.call("alerts", container=db)
                                   if a["kind"] == "network" and a["detail"].get("peer_container") == sibling), None),
                     timeout=10, what="the alert on the sibling's refused connection")
    assert alert["action"] == "blocked" and alert["detail"]["direction"] == "in"
    assert alert["detail"]["local_port"] == 8080


def _refusals(e: EnforcerProcess) -> dict:
    return e.call("status")["enforcement"]["refusals"]


def test_a_refused_inbound_connection_is_told_by_the_kernel_and_a_flood_is_folded(enforcer, dockerx):
    """No sensor sees a refused inbound connection (no accept happens): the deny-in rules
    log it to NFLOG, the enforcer reads it and raises the alert. A flood is refused whole;
    over the log limit it is only counted (status), with one alert saying so."""
    e = enforcer
    net, _, _ = _dual_stack_network(dockerx)
    db = dockerx.run(network=net, command=WEB_COMMAND)
    stranger = dockerx.run(network=net, command=WEB_COMMAND)
    db4, db6 = _addrs(db)
    wait_known(e, db, stranger)
    assert _refusals(e)["available"], _refusals(e)
    wait_active(e, db)
    e.cli("mode", db, "protect")
    wait_for(lambda: db4 in _prot(e), timeout=10, what="db under default-deny")

    for ip in (db4, db6):
        ok, got, _ = fetch(stranger, ip)
        assert not ok and got == 0, (ip, got)

    def inbound() -> dict | None:
        return next((a for a in e.call("alerts", container=db) if a["kind"] == "network"
                     and a["detail"].get("direction") == "in" and a["detail"].get("peer_container") == stranger),
                    None)
    # Both refusals (v4, v6) are one flow of one peer to one port: one incident, counted twice.
    alert = wait_for(lambda: (a := inbound()) and a["count"] >= 2 and a, timeout=10,
                     what="db's inbound refusal alert")
    assert alert["action"] == "blocked" and alert["detail"]["local_port"] == 8080, alert
    assert alert["detail"]["remote_ip"] in _addrs(stranger)

    # A flood: 5,000 SYNs from 20 processes. All refused; the alerts fold; what was not
    # logged one by one is counted.
    before = drop_counters("inet", e.nft_table)
    incidents_before = len(e.call("alerts", container=db))
    ok, got, refused, timeouts = storm(stranger, db4, attempts=5000)
    assert (ok, got) == (0, 0) and refused + timeouts == 5000, (ok, got, refused, timeouts)
    after = drop_counters("inet", e.nft_table)
    logged = after["deny-in4-tcp"] - before.get("deny-in4-tcp", 0)
    unlogged = after["deny-in4-tcp-unlogged"] - before.get("deny-in4-tcp-unlogged", 0)
    assert logged + unlogged >= 5000 and unlogged > 0, (logged, unlogged)
    status = wait_for(lambda: (s := _refusals(e))["unlogged"] >= unlogged and s, timeout=15,
                      what="status to count the unlogged refusals")
    limit = wait_for(lambda: next((a for a in e.call("alerts", container=db)
                                   if a["subject"] == "in refused over log limit"), None),
                     timeout=10, what="the alert that the log limit was hit")
    assert limit["action"] == "blocked"
    # Folded: the flood's refusals went into the stranger's incident (its count grew); the
    # only new incident is the limit's.
    incidents = e.call("alerts", container=db)
    assert len(incidents) - incidents_before <= 1, [(a["subject"], a["count"]) for a in incidents]
    flow = e.call("alert", alert_id=alert["id"])
    assert flow["count"] >= logged, (flow["count"], logged)
    assert status["logged"] >= logged
    assert "over the log limit (refused, not alerted)" in e.cli("status").stdout
    print(f"flood of 5,000 SYNs: logged {logged}, unlogged {unlogged}, the incident's count {flow['count']}, "
          f"status {status}")
