"""A profile's upkeep against the real thing (real enforcer, eBPF sensors, nftables, compose
apps on a real engine, the CLI):

- prune: two services linked by depends_on, the link never used while learning -> marked
  never used -> `stockade profile prune` -> a later connection over that link is an incident
  in alert mode, and refused at the first SYN in protect mode;
- carry: an incident allowed by hand, the service redeployed on a new image digest (a second
  local image), `stockade profile carry` -> the allowed thing no longer alerts.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.enforce import host_fetch, ip_of, sensing, wait_active
from support.harness import (BUSYBOX_IMAGE, TEST_LABEL, DockerResources, EnforcerProcess, docker, exec_in, sh,
                             unique, wait_for)

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

LEARN_SECONDS = 12
SECOND_IMAGE = "stockade-test/busybox-b:latest"

# `client` depends on `web` but only ever fetches the address in /tmp/t (127.0.0.1 while it
# learns: the link to web is declared and never used). Changing /tmp/t with a shell builtin
# (sh ran while learning) makes it use the link later without a new program.
PRUNE_COMPOSE = """
version: "2.4"
services:
  web:
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"]
    expose: ["8080"]
    labels: {{stockade.test: "1"}}
    networks: [back]
  client:
    image: {image}
    command: ["sh", "-c", "echo 127.0.0.1 > /tmp/t; while true; do read t < /tmp/t; wget -q -O /dev/null http://$$t:8080/; sleep 0.5; done"]
    depends_on: ["web"]
    labels: {{stockade.test: "1"}}
    networks: [back]
networks:
  back:
    internal: true
    labels: {{stockade.test: "1"}}
"""

CARRY_COMPOSE = """
version: "2.4"
services:
  svc:
    image: {image}
    command: ["sh", "-c", "while true; do sleep 1; done"]
    labels: {{stockade.test: "1"}}
    network_mode: none
"""


def second_image() -> str:
    """The test image with one more label: another image id (digest), the same binaries."""
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "Dockerfile").write_text(f"FROM {BUSYBOX_IMAGE}\nLABEL {TEST_LABEL}.variant=b\n")
        sh("docker", "build", "-q", "-t", SECOND_IMAGE, ctx, timeout=300)
    return SECOND_IMAGE


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    with sensing(tmp_path_factory.mktemp("upkeep") / "enforcer", LEARN_SECONDS) as e:
        yield e


@pytest.fixture(scope="module")
def res() -> Iterator[DockerResources]:
    r = DockerResources()
    yield r
    r.cleanup()


def alerts_of(e: EnforcerProcess, container: str, since: int = 0) -> list[dict[str, Any]]:
    return [a for a in e.call("alerts", container=container, since=since)]


def last_id(e: EnforcerProcess) -> int:
    return max([a["id"] for a in e.call("alerts", limit=1)] or [0])


def test_a_link_never_used_while_learning_is_marked_pruned_then_alerts_and_is_refused(
        enforcer: EnforcerProcess, res: DockerResources, busybox_image: str, tmp_path: Path) -> None:
    e = enforcer
    project = unique("stup")
    res.compose_up(project, PRUNE_COMPOSE.format(image=busybox_image), tmp_path / project)
    web, client = f"{project}_web_1", f"{project}_client_1"
    wait_active(e, client, timeout=120)
    wait_active(e, web, timeout=60)
    link = f"out tcp {project}/web 8080"

    # Marked: seeded from depends_on, never used while it learned (text, --json, export).
    profile = e.cli_json("profile", client)["profile"]
    peer = next(x for x in profile["entries"]["peer"] if x["key"] == link)
    assert peer["source"] == "seed" and peer["used"] is False and peer["never_used"] is True
    assert profile["never_used"] >= 1
    text = e.cli("profile", client).stdout
    assert f"-> {project}/web tcp/8080" in text and "seed, never used" in text and "profile prune" in text
    exported = e.cli("profile", "export", client).stdout
    assert f"peer: {project}/web" in exported and "never_used: true" in exported

    # Before the prune the declared link is allowed: in protect mode a fetch goes through.
    web_ip = ip_of(web)
    e.call("mode", target=client, mode="protect", scope="container")
    assert wait_for(lambda: host_fetch(client, web_ip), timeout=20, interval=0.5, what="the seeded link to work")
    e.call("mode", target=client, mode="alert", scope="container")

    # Prune: the dry run lists it and changes nothing; the prune removes it (audited).
    dry = e.cli_json("profile", "prune", client, "--dry-run")
    assert link in [r["key"] for r in dry["removed"]] and dry["dry_run"]
    # Programs are never pruned (an entrypoint's exec is usually unseen); web's listener,
    # opened at its start, is in use (its event, or its socket when the profile activated).
    assert all(r["kind"] != "process" for r in dry["removed"])
    web_listener = next(x for x in e.call("profile", target=web)["profile"]["entries"]["listener"]
                        if x["key"] == "tcp/8080")
    assert web_listener["used"] is True
    assert any(x["key"] == link for x in e.call("profile", target=client)["profile"]["entries"]["peer"])
    out = e.cli("profile", "prune", client).stdout
    assert "removed" in out and f"connect to {project}/web on tcp/8080" in out
    after = e.call("profile", target=client)["profile"]
    assert not any(x["key"] == link for x in after["entries"]["peer"]) and after["never_used"] == 0
    assert f"peer {link}" in after["pruned"]
    audit = [a for a in e.call("audit") if a["action"] == "profile.prune"]
    assert [a["result"] for a in audit][:2] == ["ok", "ok"] and audit[0]["target"] == client

    # Alert mode: the client now uses the link -> an incident on it.
    since = last_id(e)
    exec_in(client, "sh", "-c", f"echo {web_ip} > /tmp/t", check=True)
    found = wait_for(lambda: [a for a in alerts_of(e, client, since)
                              if a["kind"] == "network" and a["subject"] == link],
                     timeout=30, what="an incident for the pruned link")
    assert found[0]["rule"] == "profile"

    # Protect mode: refused at the first SYN (the network policy lost the pruned peer).
    e.call("mode", target=client, mode="protect", scope="container")
    time.sleep(2)  # the policy is applied behind
    assert wait_for(lambda: not host_fetch(client, web_ip), timeout=20, interval=0.5,
                    what="the pruned link to be refused")
    assert not host_fetch(client, web_ip)
    # Seeding (the container restarting) does not bring the pruned seed back.
    since = last_id(e)
    docker("restart", "-t", "1", client)
    wait_for(lambda: e.call("container", target=client)["state"] == "running", timeout=30)
    time.sleep(3)
    # ... and its entrypoint still runs in protect mode (no program was pruned).
    assert docker("inspect", "-f", "{{.State.Running}}", client).stdout.strip() == "true"
    assert not [a for a in alerts_of(e, client, since) if a["kind"] == "process" and a["action"] == "killed"]
    assert not any(x["key"] == link for x in e.call("profile", target=client)["profile"]["entries"]["peer"])


def test_carry_brings_an_allowed_entry_to_the_new_image_digest(
        enforcer: EnforcerProcess, res: DockerResources, busybox_image: str, tmp_path: Path) -> None:
    e = enforcer
    project = unique("stcy")
    path = res.compose_up(project, CARRY_COMPOSE.format(image=busybox_image), tmp_path / project)
    svc = f"{project}_svc_1"
    first = wait_active(e, svc, timeout=120)

    def uname_incidents(container_id: str = "") -> list[dict[str, Any]]:
        return [a for a in alerts_of(e, svc) if a["kind"] == "process" and a["subject"] == "/bin/uname"
                and a["container_id"] == (container_id or first["id"])]

    # An unexpected program, allowed by hand.
    exec_in(svc, "uname")
    [incident] = wait_for(uname_incidents, timeout=30, what="an incident for uname")
    allowed = e.cli_json("allow", str(incident["id"]))
    assert allowed["new"] and "uname" in allowed["allowed"]

    # Redeployed on a new image digest: a new profile, which does not allow it.
    path.write_text(CARRY_COMPOSE.format(image=second_image()))
    res.compose(project, "up", "-d", "--no-build")
    wait_for(lambda: e.call("container", target=svc)["image_id"] != first["image_id"], timeout=60,
             what="the service on its new image")
    second = wait_active(e, svc, timeout=120)
    exec_in(svc, "uname")
    [again] = wait_for(lambda: uname_incidents(second["id"]), timeout=30, what="uname alerting on the new digest")
    assert again["id"] != incident["id"] and not again["resolved"]
    count = again["count"]

    # Carry: the dry run says what, the carry copies it (origin kept, "carried from").
    dry = e.cli_json("profile", "carry", svc, "--dry-run")
    assert [r["key"].split(" ")[0] for r in dry["carried"]] == ["/bin/uname"] and dry["dry_run"]
    old_digest = dry["from_digest"]
    text = e.cli("profile", "carry", svc, "--from", old_digest.split(":", 1)[-1][:12]).stdout
    assert "carried 1 allowed entry" in text and "run /bin/uname" in text
    prof = e.call("profile", target=svc)["profile"]
    entry = next(x for x in prof["entries"]["process"] if x["key"].startswith("/bin/uname "))
    assert entry["source"] == "allowed" and entry["data"]["carried_from"] == old_digest
    assert "carried from" in e.cli("profile", svc).stdout
    assert [a for a in e.call("audit") if a["action"] == "profile.carry"][0]["result"] == "ok"

    # The allowed thing no longer alerts on the new digest.
    exec_in(svc, "uname")
    time.sleep(3)
    assert [a["count"] for a in uname_incidents(second["id"])] == [count]  # nor a new incident
