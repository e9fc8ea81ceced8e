"""Exported hardening, for real: a container started with the seccomp profile Stockade
learned serves its normal traffic (and is refused a syscall it never used), and the
compose override of `stockade harden` is valid compose that deploys and still serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from support.enforce import WEB_COMMAND, host_fetch, ip_of, sensing, wait_active, wait_known
from enforcer.enforce.harden import ServiceFacts, decide, render_override
from enforcer.enforce.seccomp import allowed_names, build_seccomp
from support.harness import EnforcerProcess, container_info, docker, exec_in, sh, unique, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

LEARN_SECONDS = 12


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    with sensing(tmp_path_factory.mktemp("exports") / "enforcer", LEARN_SECONDS) as e:
        yield e


def test_a_container_started_with_the_learned_seccomp_profile_serves_its_traffic(enforcer, dockerx, busybox_image,
                                                                                tmp_path):
    net = dockerx.network()
    web = dockerx.run(network=net, command=WEB_COMMAND)
    client = dockerx.run(network=net)
    wait_known(enforcer, web, client)
    for _ in range(6):
        assert host_fetch(client, ip_of(web))
    wait_active(enforcer, web)

    proc = enforcer.cli("seccomp", web)
    profile = json.loads(proc.stdout)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    learned = next(r for r in profile["syscalls"] if r["comment"].startswith("learned"))
    assert {"accept", "sendfile"} <= set(learned["names"]) or {"accept4", "sendfile"} <= set(learned["names"])
    assert "chroot" not in allowed_names(profile) and "mount" not in allowed_names(profile)
    path = tmp_path / "web.seccomp.json"
    path.write_text(proc.stdout)

    hardened = dockerx.run("--security-opt", f"seccomp={path}", network=net, command=WEB_COMMAND)
    wait_for(lambda: container_info(hardened)["State"]["Running"], what="the hardened container to run")
    ip = ip_of(hardened)
    wait_for(lambda: host_fetch(client, ip), timeout=15, what="the hardened container to serve")
    for _ in range(5):
        assert host_fetch(client, ip)
    assert container_info(hardened)["HostConfig"]["SecurityOpt"][0].startswith("seccomp=")
    # Control: chroot works under Docker's default profile, not under the learned one.
    assert exec_in(web, "chroot", "/", "true").returncode == 0
    denied = exec_in(hardened, "chroot", "/", "true")
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr


HARDEN_APP = """
version: "2.4"
services:
  web:
    image: {image}
    command: ["sh", "-c", "echo hello > /var/www/index.html; httpd -p 8081 -h /var/www; while true; do date > /tmp/last; sleep 1; done & exec httpd -f -p 8080 -h /var/www"]
    tmpfs: ["/var/www"]
    expose: ["8080"]
    labels: {{stockade.test: "1"}}
    networks: [back]
  store:
    image: {image}
    command: ["sh", "-c", "while true; do date >> /data/log; sleep 1; done"]
    volumes: ["data:/data"]
    labels: {{stockade.test: "1"}}
    networks: [back]
  scribbler:
    image: {image}
    command: ["sh", "-c", "mkdir -p /srv/state; while true; do date > /srv/state/now; sleep 1; done"]
    labels: {{stockade.test: "1"}}
    networks: [back]
  client:
    image: {image}
    command: ["sh", "-c", "while true; do wget -q -O /dev/null http://web:8080/; sleep 0.5; done"]
    labels: {{stockade.test: "1"}}
    networks: [back]
volumes:
  data:
    labels: {{stockade.test: "1"}}
networks:
  back:
    internal: true
    labels: {{stockade.test: "1"}}
"""


def test_harden_override_is_valid_compose_and_the_hardened_app_serves(enforcer, dockerx, busybox_image, tmp_path):
    project = unique("sthard")
    base = dockerx.compose_up(project, HARDEN_APP.format(image=busybox_image), tmp_path / project)
    containers = wait_for(lambda: (cs := {c["service"]: c for c in enforcer.call("containers", app=project)})
                          and len(cs) == 4 and cs, what="the app's containers")
    for service in ("web", "store", "scribbler"):
        wait_active(enforcer, containers[service]["name"])

    proc = enforcer.cli("harden", project)
    text = proc.stdout
    doc = yaml.safe_load(text)
    assert doc["version"] == "2.4"
    override = base.parent / "hardened.yml"
    override.write_text(text)
    # docker-compose itself accepts it (it also reads each seccomp file it names).
    merged = yaml.safe_load(sh("docker-compose", "-f", str(base), "-f", str(override), "-p", project, "config").stdout)
    web, store, scribbler = (merged["services"][s] for s in ("web", "store", "scribbler"))
    for svc in (web, store, scribbler):
        assert svc["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in svc["security_opt"]
        seccomp = next(o for o in svc["security_opt"] if o.startswith("seccomp:"))
        assert json.loads(Path(seccomp.split(":", 1)[1]).read_text())["defaultAction"] == "SCMP_ACT_ERRNO"
    assert web["read_only"] is True and "/tmp" in web["tmpfs"]  # it writes /tmp/last only
    assert store["read_only"] is True  # it writes only into its volume
    assert "read_only" not in scribbler  # /srv/state is not a volume
    assert "/srv/state/" in text  # ... and the override says so

    # Deployed with the override, the web service still serves the client.
    sh("docker-compose", "-f", str(base), "-f", str(override), "-p", project, "up", "-d", "--no-build", timeout=300)
    new_web = wait_for(lambda: next((c for c in enforcer.call("containers", app=project)
                                     if c["service"] == "web" and c["state"] == "running"
                                     and c["id"] != containers["web"]["id"]), None),
                       timeout=60, what="the hardened web container")
    info = container_info(new_web["name"])
    assert info["HostConfig"]["ReadonlyRootfs"] is True and info["HostConfig"]["CapDrop"] == ["ALL"]
    client = next(c for c in enforcer.call("containers", app=project) if c["service"] == "client")
    wait_for(lambda: host_fetch(client["name"], ip_of(new_web["name"])), timeout=20,
             what="the hardened web service to answer")
    docker("exec", new_web["name"], "true")


def test_harden_decisions_follow_the_profile():
    facts = ServiceFacts(name="db", seccomp_path="/x.json", syscalls={"setuid", "setgroups", "chown", "kill"},
                         written=["/var/lib/db/", "/tmp/", "/etc/hostname"], listeners=[("tcp", 80), ("tcp", 8080)],
                         volumes=["/var/lib/db"])
    d = decide(facts)
    assert set(d.cap_add) == {"NET_BIND_SERVICE", "SETUID", "SETGID", "CHOWN", "FOWNER", "KILL"}
    assert d.read_only and d.tmpfs == ["/tmp"]
    facts.written.append("/opt/app/cache/")
    assert not decide(facts).read_only
    # Hostile names stay inside quoted scalars and one-line comments.
    evil = ServiceFacts(name='x":\n  evil: 1', seccomp_path="/p\n- bad", written=["/a\nb: c/"])
    doc = yaml.safe_load(render_override("app\nkey: v", [evil], "2.4", "now"))
    assert list(doc) == ["version", "services"] and list(doc["services"]) == ['x":\n  evil: 1']


def test_seccomp_profile_shape():
    p = build_seccomp(["read", "write", "#999", "syscall_500", "clone3"])
    names = allowed_names(p)
    assert {"read", "write", "execve", "capset", "clone3"} <= names
    assert not any(n.startswith(("#", "syscall_")) for n in names)
    assert not any(r.get("errnoRet") == 38 for r in p["syscalls"])  # clone3 learned: allowed
    p = build_seccomp(["read"])
    assert any(r["names"] == ["clone3"] and r["errnoRet"] == 38 for r in p["syscalls"])
    assert {"mount", "ptrace", "bpf", "unshare", "setns", "chroot", "init_module"}.isdisjoint(allowed_names(p))
