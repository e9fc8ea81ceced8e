"""Protect mode end to end (sensors + profiles + detector + enforcement, real kernel): an
unexpected exec is killed before it runs (exit 137) while the learned workload keeps
serving; a connection to a peer the profile never saw is
refused by the kernel's default-deny, with the incident's action "blocked"."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from support.enforce import WEB_COMMAND, host_fetch, ip_of, nft_elements, sensing, wait_active, wait_known
from support.harness import EnforcerProcess, container_info, exec_in, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

LEARN_SECONDS = 12
# Fetches from whatever address /tmp/target names, twice a second. Full paths: busybox sh
# runs a bare applet name through /proc/self/exe, and the profile is about the path executed.
CLIENT = ["sh", "-c", "mkdir -p /tmp; while true; do read t < /tmp/target; /bin/wget -q -O /dev/null http://$t:8080/; "
                      "/bin/sleep 0.5; done"]


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    with sensing(tmp_path_factory.mktemp("protect") / "enforcer", LEARN_SECONDS) as e:
        yield e


def _write_in(container: str, path: str, text: str) -> None:
    """Change a file inside a container from the host (no exec in the container)."""
    pid = container_info(container)["State"]["Pid"]
    Path(f"/proc/{pid}/root{path}").write_text(text)


def test_protect_kills_an_unexpected_exec_and_the_workload_keeps_serving(enforcer, dockerx):
    net = dockerx.network()
    web = dockerx.run(network=net, command=WEB_COMMAND)
    client = dockerx.run(network=net)
    wait_known(enforcer, web, client)
    ip = ip_of(web)
    # Learning: the web server serves (requests come from another container).
    for _ in range(6):
        assert host_fetch(client, ip)
    enforcer.cli("mode", web, "protect")
    wait_active(enforcer, web)
    wait_for(lambda: enforcer.call("container", target=web)["mode"] == "protect", what="protect mode")

    proc = exec_in(web, "wget", "-q", "-O", "-", "http://127.0.0.1:8080/")
    assert proc.returncode == 137, (proc.returncode, proc.stdout, proc.stderr)
    alert = wait_for(lambda: next((a for a in enforcer.call("alerts", container=web)
                                   if a["kind"] == "process" and a["subject"] == "/bin/wget"), None),
                     what="the process alert")
    assert alert["action"] == "killed"
    # The learned workload is untouched: still serving, the same init process.
    assert host_fetch(client, ip)
    assert container_info(web)["State"]["Running"] is True
    # A second try is killed too: the kill does not depend on the alert being new.
    assert exec_in(web, "wget", "--help").returncode == 137


def test_protect_refuses_a_connection_to_a_new_peer_and_says_blocked(enforcer, dockerx):
    """Default-deny (netpolicy): the connect is refused by the kernel, so the answer is the
    alert's action `blocked` without a reactive block (test_protect_network.py has the rest)."""
    net = dockerx.network()
    known, stranger = dockerx.run(network=net, command=WEB_COMMAND), dockerx.run(network=net, command=WEB_COMMAND)
    client = dockerx.run(network=net, command=CLIENT)
    wait_known(enforcer, known, stranger, client)
    known_ip, stranger_ip = ip_of(known), ip_of(stranger)
    _write_in(client, "/tmp/target", known_ip)
    wait_for(lambda: _served(known, client), timeout=20, what="the client to fetch from the known peer")
    enforcer.cli("mode", client, "protect")
    wait_active(enforcer, client)
    wait_for(lambda: ip_of(client) in str(nft_elements("inet", enforcer.nft_table, "prot4")), timeout=10,
             what="the client under default-deny")

    _write_in(client, "/tmp/target", stranger_ip)
    alert = wait_for(lambda: next((a for a in enforcer.call("alerts", container=client)
                                   if a["kind"] == "network" and a["action"] == "blocked"), None),
                     timeout=30, what="the network alert to be answered with blocked")
    assert alert["detail"]["peer_container"] == stranger and alert["detail"]["remote_port"] == 8080
    assert not [b for b in enforcer.call("blocks", target=client) if b["source"] == "protect"]
    # The stranger is out of reach; the learned peer still answers.
    assert not host_fetch(client, stranger_ip)
    assert host_fetch(client, known_ip)


def _served(web: str, client: str) -> bool:
    """Has `web` logged a request from `client`? (busybox httpd -f logs nothing: count
    connections instead through the server's socket table.)"""
    from enforcer.enforce.processes import read_sockets

    client_ip = ip_of(client)
    return any(s["remote_ip"].endswith(client_ip) for s in read_sockets(container_info(web)["State"]["Pid"]))
