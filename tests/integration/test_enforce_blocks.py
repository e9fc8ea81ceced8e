"""Network blocks against the real kernel and real containers: a block makes a connection
between two containers on one Docker bridge fail in both directions, unblock restores it,
one port can be blocked alone, and blocks hold while the enforcer is down and after it
restarts (reconciled with the database, containers that are gone dropped)."""

from __future__ import annotations

import json

from support.enforce import (drop_counters, ip_of, nft_elements, reaches, wait_known, wait_reaches,
                             wait_reconciled, web)
from support.harness import docker, sh, wait_for

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.nftables]


def test_block_cuts_two_containers_on_one_bridge_both_ways_and_unblock_restores(dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--no-sensors")
    net = dockerx.network()
    a, b, bystander = web(dockerx, net), web(dockerx, net), web(dockerx, net)
    ip_a, ip_b, ip_c = ip_of(a), ip_of(b), ip_of(bystander)
    wait_known(e, a, b, bystander)
    wait_reconciled(e)
    wait_reaches(a, ip_b)
    assert reaches(b, ip_a)

    out = e.cli("block", a, "--peer", b, "--reason", "test").stdout
    assert "blocked: block" in out and ip_a in out and ip_b in out

    # Neither direction passes; the bystander on the same bridge still does.
    assert not reaches(a, ip_b)
    assert not reaches(b, ip_a)
    assert reaches(a, ip_c) and reaches(bystander, ip_a)
    # Dropped by Stockade's own table, in the bridge family (same-bridge traffic) here.
    counters = drop_counters("bridge", e.nft_table)
    assert counters["from-container4"] > 0 and counters["to-container4"] > 0, counters
    blocks = e.cli_json("blocks")
    assert [(x["container"], x["peer"], x["peer_kind"], x["active"]) for x in blocks] == [(a, b, "container", True)]

    out = e.cli("unblock", a, "--peer", b).stdout
    assert "removed 1 block" in out
    assert reaches(a, ip_b) and reaches(b, ip_a)
    assert nft_elements("inet", e.nft_table, "blkx4") == []
    assert e.cli_json("blocks") == []
    # Both actions are in the audit log with the caller and the result.
    audit = [(x["action"], x["target"], x["result"]) for x in e.call("audit")]
    assert ("block", a, "ok") in audit and ("unblock", a, "ok") in audit


def test_one_port_is_blocked_alone_and_cidr_peers_work(dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--no-sensors")
    net = dockerx.network()
    a, b = web(dockerx, net), web(dockerx, net)
    ip_a, ip_b = ip_of(a), ip_of(b)
    wait_known(e, a, b)
    wait_reconciled(e)
    wait_reaches(a, ip_b)
    wait_reaches(a, ip_b, 8081)

    e.cli("block", a, "--peer", f"{ip_b}:8080", "--proto", "tcp")
    assert not reaches(a, ip_b, 8080)
    assert reaches(a, ip_b, 8081)
    # The other direction on that port is cut too (b connecting to a's 8080).
    assert not reaches(b, ip_a, 8080)
    assert reaches(b, ip_a, 8081)
    [blk] = e.cli_json("blocks", a)
    assert blk["peer"] == f"{ip_b}/32" and blk["peer_kind"] == "network" and blk["port"] == 8080

    # A whole network (the bridge's /16 holds b): every port, until unblocked.
    e.cli("block", a, "--peer", ip_b.rsplit(".", 2)[0] + ".0.0/16")
    assert not reaches(a, ip_b, 8081)
    e.cli("unblock", "--id", str(blk["id"]))
    assert not reaches(a, ip_b, 8080)  # still inside the /16 block
    e.cli("unblock", a, "--peer", ip_b.rsplit(".", 2)[0] + ".0.0/16")
    assert reaches(a, ip_b, 8080)


def test_bad_block_requests_fail_with_one_line(dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--no-sensors")
    net = dockerx.network()
    a = web(dockerx, net)
    wait_known(e, a)
    for args, words in (((a, "--peer", "nosuchcontainer-xyz"), "neither a container"),
                        ((a, "--peer", a), "itself"),
                        ((a, "--peer", "10.0.0.1:99999"), "1 to 65535"),
                        (("nosuch-container", "--peer", "10.0.0.1"), "no container")):
        proc = e.cli("block", *args, check=False)
        assert proc.returncode != 0
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = e.cli("unblock", a, "--peer", "10.9.9.9", check=False)
    assert proc.returncode != 0 and "no block" in proc.stderr


def test_block_holds_while_the_enforcer_is_down_and_after_restart(dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--no-sensors")
    net = dockerx.network()
    a, b, c = web(dockerx, net), web(dockerx, net), web(dockerx, net)
    ip_a, ip_b, ip_c = ip_of(a), ip_of(b), ip_of(c)
    wait_known(e, a, b, c)
    wait_reconciled(e)
    wait_reaches(a, ip_b)
    e.cli("block", a, "--peer", b)
    e.cli("block", a, "--peer", c)
    assert not reaches(a, ip_b) and not reaches(a, ip_c)

    # Stopped cleanly: the table stays, so do the blocks.
    e.stop()
    assert not reaches(a, ip_b)
    # Crashed: the same.
    e.start()
    wait_reconciled(e)
    e.kill9()
    assert not reaches(a, ip_b) and not reaches(a, ip_c)

    # While it is down, someone deletes one element and container c goes away.
    sh("nft", "delete", "element", "bridge", e.nft_table, "blkx4", f"{{ {ip_a} . {ip_b} }}")
    sh("nft", "delete", "element", "inet", e.nft_table, "blkx4", f"{{ {ip_a} . {ip_b} }}")
    assert reaches(a, ip_b)
    docker("rm", "-f", c)

    e.start()
    status = wait_reconciled(e)
    assert status["reconcile"]["table_existed"] is True
    assert status["reconcile"]["missing"] == 1  # a <-> b put back
    assert status["reconcile"]["stale"] == 1  # a <-> c removed: c is gone
    assert not reaches(a, ip_b)
    assert not reaches(b, ip_a)
    elements = json.dumps(nft_elements("inet", e.nft_table, "blkx4"))
    assert ip_b in elements and ip_c not in elements
    blocks = {x["peer"]: x for x in e.cli_json("blocks")}
    assert blocks[b]["active"] is True
    assert blocks[c]["active"] is False  # kept (by name), in force again if c comes back


def test_a_stopped_container_leaves_no_address_behind_and_is_blocked_again_on_start(dockerx, busybox_image,
                                                                                    make_enforcer):
    e = make_enforcer("--no-sensors")
    net = dockerx.network()
    a, b = web(dockerx, net), web(dockerx, net)
    wait_known(e, a, b)
    wait_reconciled(e)
    e.cli("block", a, "--peer", b)
    old_ip = ip_of(a)
    docker("stop", "-t", "0", a)
    # Its address may go to another container: no element may keep naming it.
    wait_for(lambda: old_ip not in json.dumps(nft_elements("inet", e.nft_table, "blkx4")), timeout=10,
             what="the stopped container's address to leave the block set")
    assert e.cli_json("blocks")[0]["active"] is False
    docker("start", a)
    wait_known(e, a)
    new_ip = ip_of(a)
    wait_for(lambda: new_ip in json.dumps(nft_elements("inet", e.nft_table, "blkx4")), timeout=10,
             what="the restarted container's address in the block set")
    assert not reaches(a, ip_of(b))


def test_protect_mode_drops_traffic_to_threat_feed_addresses_from_the_first_packet(dockerx, busybox_image,
                                                                                  make_enforcer, feed_server):
    e = make_enforcer("--no-sensors")
    net = dockerx.network()
    bad, victim, bystander = web(dockerx, net), web(dockerx, net), web(dockerx, net)
    ip_bad, ip_victim = ip_of(bad), ip_of(victim)
    wait_known(e, bad, victim, bystander)
    wait_reconciled(e)
    wait_reaches(victim, ip_bad)
    url = feed_server.serve("/lab.txt", f"# lab\n{ip_bad}\n")
    e.cli("feeds", "add", "lab", url, "--format", "ip-list", "--local")
    assert reaches(victim, ip_bad)  # alert mode: a feed hit is an alert, not a drop

    e.cli("mode", victim, "protect")
    wait_for(lambda: ip_victim in json.dumps(nft_elements("inet", e.nft_table, "protect4")), timeout=10,
             what="the protected container in the protect set")
    assert ip_bad in json.dumps(nft_elements("bridge", e.nft_table, "threat4"))
    # No sensor runs here: the kernel drops the very first packet, before any alert.
    assert not reaches(victim, ip_bad)
    assert not reaches(bad, ip_victim)
    assert reaches(bystander, ip_bad)  # not protected
    assert drop_counters("bridge", e.nft_table)["protect-to-threat4"] > 0

    e.cli("mode", victim, "alert")
    wait_for(lambda: ip_victim not in json.dumps(nft_elements("inet", e.nft_table, "protect4")), timeout=10,
             what="the container to leave the protect set")
    assert reaches(victim, ip_bad)
