"""The restart window of default-deny, closed (docs/enforcement.md): a protected container
that (re)starts, on a new address or its old one, is refused from its very first
instruction until its policy is in place, never allowed. Real nftables, real containers,
a real enforcer (no sensors: this is the kernel policy alone, profiles active at once).

The protected container's own command is a probe (bench/restart_probe.c, built here with
gcc -static) that connects every millisecond, from the moment it starts, to a container
its profile does not allow, and prints how many connects got through.

Also here (seeds alone, no learning needed): a published port admits the host and the
compose services that depend on it, and refuses a sibling that declares nothing."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from support.enforce import WEB_COMMAND, drop_counters, host_fetch, ip_of, nft_elements
from support.harness import REPO, EnforcerProcess, docker, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.nftables, pytest.mark.slow]

PROBE_MS = 800


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "probe"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(out), str(REPO / "bench" / "restart_probe.c")], check=True,
                   timeout=120)
    return out


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    with EnforcerProcess(tmp_path_factory.mktemp("restart") / "enforcer", "--no-sensors", "--learn-seconds",
                         "0").session() as e:
        yield e


def _network(dockerx) -> tuple[str, str]:
    for _ in range(20):  # a /24 no other network uses (an address can only be given on a user subnet)
        n = random.randrange(1, 250)
        name = f"stnpr{random.randrange(1 << 30):x}"
        if docker("network", "create", "--internal", "--subnet", f"10.233.{n}.0/24", "--label", "stockade-test=1",
                  name, check=False).returncode == 0:
            dockerx.networks.append(name)
            return name, f"10.233.{n}."
    pytest.skip("no free subnet for the test network")


def _results(name: str) -> list[dict[str, float]]:
    lines = [ln for ln in docker("logs", name).stdout.splitlines() if ln.startswith("attempts=")]
    return [{k: float(v) for k, v in (kv.split("=") for kv in ln.split())} for ln in lines]


def _set(e: EnforcerProcess, name: str) -> set[str]:
    return {str(x) for x in nft_elements("inet", e.nft_table, name)}


def test_a_restarted_protected_container_is_refused_until_its_policy_is_in_place(enforcer, dockerx, probe):
    e = enforcer
    net, prefix = _network(dockerx)
    stranger = dockerx.run(network=net, command=WEB_COMMAND)
    other = dockerx.run(network=net, command=WEB_COMMAND)
    web = dockerx.run("-v", f"{probe}:/probe:ro", network=net, command=["/probe", ip_of(stranger), "8080", str(PROBE_MS)])
    first = wait_for(lambda: _results(web), timeout=30, what="the probe's first run")[0]
    assert first["allowed"] > 0  # unprotected: the probe's connects go through (it works)
    wait_for(lambda: e.call("container", target=web).get("profile_state") == "active", timeout=30,
             what="web's profile to be active")
    e.cli("mode", web, "protect")
    wait_for(lambda: ip_of(web) in _set(e, "prot4"), timeout=10, what="web under default-deny")

    restarts = 0
    for i in range(3):  # on a new address each time
        new = f"{prefix}{200 + i}"
        docker("stop", "-t", "1", web)
        docker("network", "disconnect", net, web)
        docker("network", "connect", "--ip", new, net, web)
        docker("start", web)
        restarts += 1
        wait_for(lambda: len(_results(web)) > restarts, timeout=30, what="the probe's run after a restart")
        got = _results(web)[-1]
        assert got["attempts"] > 50 and got["allowed"] == 0, got  # not one connect through
        wait_for(lambda: new in _set(e, "prot4") and new in _set(e, "ctr4"), timeout=10,
                 what="web's new address under its policy")
    docker("restart", "-t", "1", web)  # on its old address
    restarts += 1
    wait_for(lambda: len(_results(web)) > restarts, timeout=30, what="the probe's run after docker restart")
    got = _results(web)[-1]
    assert got["attempts"] > 50 and got["allowed"] == 0, got

    counters = drop_counters("inet", e.nft_table)
    assert counters.get("unbound-from4-tcp", 0) >= 1, counters  # the fail-closed rule did the refusing
    # Known containers on the guarded network are untouched: the stranger reaches the other.
    assert host_fetch(stranger, ip_of(other))
    # A container that starts on the guarded network now (protected or not) is refused only
    # until the inventory knows it: then it works.
    late = dockerx.run(network=net, command=WEB_COMMAND)
    wait_for(lambda: host_fetch(late, ip_of(other)), timeout=15, interval=0.2,
             what="a container started on the guarded network to get through once known")
    assert host_fetch(other, ip_of(late))
    # Leaving protect ends the guarding: nothing refused on the network any more.
    e.cli("mode", web, "alert")
    wait_for(lambda: not _set(e, "gnet4"), timeout=10, what="the network to be unguarded")


PUBLISHED_APP = """
version: "2.4"
services:
  web:
    image: {image}
    command: {web}
    ports: ["127.0.0.1:{port}:8080"]
    labels: {{stockade.test: "1"}}
    networks: [front]
  client:
    image: {image}
    command: ["sleep", "3600"]
    depends_on: ["web"]
    labels: {{stockade.test: "1"}}
    networks: [front]
  sibling:
    image: {image}
    command: ["sleep", "3600"]
    labels: {{stockade.test: "1"}}
    networks: [front]
networks:
  front:
    labels: {{stockade.test: "1"}}
"""


def test_a_published_port_admits_the_host_and_compose_dependants_not_siblings(enforcer, dockerx, busybox_image,
                                                                              tmp_path):
    """Seeds alone (no learning): web publishes 8080 on 127.0.0.1; client depends_on web;
    sibling shares the network but declares nothing. (Not internal: Docker publishes no
    port of an internal network; nothing here connects outside the host.)"""
    import json

    e = enforcer
    project = f"stpub{random.randrange(1 << 30):x}"
    port = random.randrange(40000, 50000)
    web_command = json.dumps(WEB_COMMAND).replace("$", "$$")  # compose interpolates $
    dockerx.compose_up(project, PUBLISHED_APP.format(image=busybox_image, web=web_command, port=port),
                       tmp_path / project)
    def running() -> list[dict]:
        cs = [c for c in e.cli_json("containers", "--app", project) if c["state"] == "running"]
        return cs if len(cs) == 3 else []
    names = {c["service"]: c["name"] for c in wait_for(running, timeout=30, what="the compose app's containers")}
    web = names["web"]
    peers = {tuple(x["data"][k] for k in ("direction", "proto", "peer", "port"))
             for x in e.call("profile", target=web)["profile"]["entries"]["peer"]}
    assert ("in", "tcp", "*", 8080) in peers and ("in", "tcp", f"{project}/client", 8080) in peers, peers
    wait_for(lambda: e.call("container", target=web).get("profile_state") == "active", timeout=30,
             what="web's profile to be active")
    e.cli("mode", web, "protect")
    wait_for(lambda: ip_of(web) in _set(e, "prot4"), timeout=10, what="web under default-deny")

    proc = subprocess.run(["timeout", "3", "busybox", "wget", "-q", "-O", "-", f"http://127.0.0.1:{port}/"],
                          capture_output=True, timeout=30)
    assert proc.returncode == 0 and b"hello" in proc.stdout  # the host, through the published port
    assert host_fetch(names["client"], ip_of(web))  # the compose dependant
    assert not host_fetch(names["sibling"], ip_of(web))  # a sibling: refused at its first SYN
    assert drop_counters("inet", e.nft_table).get("deny-in4-tcp", 0) >= 1
