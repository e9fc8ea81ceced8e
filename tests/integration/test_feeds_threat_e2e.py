"""End to end: a container on an internal network downloads a file from another container
whose address is on one feed and whose content hash is on another -> two `threat` alerts,
while the container is still learning. Real enforcer, eBPF sensors, detector, Docker;
feeds served from 127.0.0.1; nothing leaves the machine."""

from __future__ import annotations

import hashlib

import pytest

from support.harness import container_info, exec_in, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

KIT = b"#!/bin/sh\n# stockade e2e kit: harmless, but on a feed\necho pwned\n"


def _sensors_loaded(enforcer) -> object:
    sensors = enforcer.call("stats")["sensors"]
    errors = [s["error"] for s in sensors if s["error"]]
    if errors:
        return errors[0]
    return bool(sensors) and all(s["loaded"] for s in sensors) or None


def test_download_from_a_listed_address_of_a_listed_file_gives_two_threat_alerts(
        make_enforcer, dockerx, busybox_image, feed_server):
    enforcer = make_enforcer("--learn-seconds", "600")
    assert wait_for(lambda: _sensors_loaded(enforcer), timeout=120, what="the sensors to load") is True
    net = dockerx.network()
    server = dockerx.run(network=net, command=[
        "sh", "-c", f"mkdir -p /www && printf '{_printf_escape(KIT)}' > /www/kit.sh && httpd -f -p 8080 -h /www"])
    victim = dockerx.run(network=net, command=["sh", "-c", "mkdir -p /tmp && exec sleep 3600"])  # no /tmp in the image
    server_ip = container_info(server)["NetworkSettings"]["Networks"][net]["IPAddress"]
    victim_id = container_info(victim)["Id"]
    wait_for(lambda: any(c["id"] == victim_id and c["cgroup_id"] for c in enforcer.call("containers")),
             timeout=20, what="the victim to be watched")

    # The server's address is private: only a --local feed may list it.
    enforcer.cli("feeds", "add", "lab-c2", feed_server.serve("/c2.txt", f"# our lab\n{server_ip}\n"),
                 "--format", "ip-list", "--local")
    kit_sha = hashlib.sha256(KIT).hexdigest()
    enforcer.cli("feeds", "add", "lab-kits", feed_server.serve("/kits.txt", f"{kit_sha}\n"),
                 "--format", "sha256-list")

    wait_for(lambda: exec_in(victim, "wget", "-q", "-O", "/tmp/kit.sh", f"http://{server_ip}:8080/kit.sh").returncode == 0,
             timeout=30, what="the download")
    assert exec_in(victim, "sha256sum", "/tmp/kit.sh", check=True).stdout.split()[0] == kit_sha

    def threats() -> list[dict]:
        found = [a for a in enforcer.call("alerts", kind="threat") if a["container_id"] == victim_id]
        return found if len(found) >= 2 else []

    alerts = wait_for(threats, timeout=30, what="two threat alerts")
    by_type = {a["detail"]["type"]: a for a in alerts}
    assert set(by_type) == {"ip", "sha256"}, alerts
    ip_alert, file_alert = by_type["ip"], by_type["sha256"]
    assert (ip_alert["detail"]["feed"], ip_alert["detail"]["indicator"], ip_alert["detail"]["matched"]) == \
        ("lab-c2", server_ip, server_ip)
    assert (file_alert["detail"]["feed"], file_alert["detail"]["matched"]) == ("lab-kits", kit_sha)
    assert all(a["kind"] == "threat" and a["container"] == victim for a in alerts)
    hits = enforcer.call("feeds.hits")
    assert {(h["feed"], h["container"]) for h in hits} >= {("lab-c2", victim), ("lab-kits", victim)}
    feeds = {f["name"]: f for f in enforcer.call("feeds")}
    assert feeds["lab-c2"]["hits"] >= 1 and feeds["lab-kits"]["hits"] >= 1


def _printf_escape(data: bytes) -> str:
    """Bytes as a printf format that busybox sh reproduces exactly."""
    return "".join(f"\\{b:03o}" for b in data)
