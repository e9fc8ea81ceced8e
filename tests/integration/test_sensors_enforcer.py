"""The eBPF sensors through the real enforcer: real kernel, real containers, events read
from the `sensor` topic of its socket. Containers are on `--network none` or on an
internal network; nothing leaves the machine."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from support.harness import DockerResources, EnforcerProcess, container_info, exec_in, wait_for
from support.sensors import SensorSubscriber

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables]


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    e = EnforcerProcess(tmp_path_factory.mktemp("sensors") / "enforcer").start()
    try:
        stats = wait_for(lambda: _loaded(e), timeout=120, what="the sensors to load")
        assert stats is True, f"sensors not loaded: {stats}"
        yield e
    finally:
        e.stop()


def _loaded(e: EnforcerProcess) -> object:
    sensors = e.call("stats")["sensors"]
    errors = [s["error"] for s in sensors if s["error"]]
    if errors:
        return errors[0]
    return all(s["loaded"] for s in sensors) or None


@pytest.fixture
def events(enforcer: EnforcerProcess) -> Iterator[SensorSubscriber]:
    sub = SensorSubscriber(enforcer.socket)
    try:
        yield sub
    finally:
        sub.close()


def _with_shadow(name: str) -> None:
    """Images built elsewhere may lack /etc/shadow: make sure there is one to read."""
    exec_in(name, "sh", "-c", "[ -e /etc/shadow ] || echo 'root:*:19000:0:99999:7:::' > /etc/shadow", check=True)


def _start(dockerx: DockerResources, enforcer: EnforcerProcess, *args: str, network: str | None = None,
           command: list[str] | None = None) -> tuple[str, str]:
    """A container the enforcer watches (its cgroup is in the kernel map): (name, id)."""
    name = dockerx.run(*args, network=network, command=command)
    cid = container_info(name)["Id"]
    wait_for(lambda: any(c["id"] == cid and c["cgroup_id"] for c in enforcer.call("containers")),
             timeout=20, what=f"the inventory to list {name}")
    return name, cid


def test_exec_in_container_gives_exec_event_with_path_binary_and_sha256(enforcer, events, dockerx):
    name, cid = _start(dockerx, enforcer, "--network", "none")
    exec_in(name, "wget", "--help")  # /bin/wget is a link to /bin/busybox
    ev = events.log.wait_for(type="ExecEvent", container_id=cid, path="/bin/wget")
    inside = exec_in(name, "sha256sum", "/bin/busybox", check=True).stdout.split()[0]
    assert ev["binary"] == "/bin/busybox"
    assert ev["sha256"] == inside
    assert ev["argv"] == ["wget", "--help"]
    assert ev["pid"] > 1 and ev["cgroup_id"] > 1 and ev["comm"] == "wget"
    assert not ev["killed"]


def test_connect_between_containers_gives_one_event_on_each_side(enforcer, events, dockerx):
    net = dockerx.network()
    server, server_id = _start(dockerx, enforcer, network=net, command=["nc", "-ll", "-p", "8080", "-e", "cat"])
    client, client_id = _start(dockerx, enforcer, network=net)
    server_ip = container_info(server)["NetworkSettings"]["Networks"][net]["IPAddress"]
    client_ip = container_info(client)["NetworkSettings"]["Networks"][net]["IPAddress"]
    wait_for(lambda: exec_in(client, "sh", "-c", f"echo hi | nc -w 1 {server_ip} 8080").stdout.strip() == "hi",
             timeout=20, what="the server to answer")
    out = events.log.wait_for(type="NetworkEvent", container_id=client_id, direction="out", remote_port=8080)
    assert out["remote_ip"] == server_ip and out["remote_container_id"] == server_id and out["proto"] == "tcp"
    inbound = events.log.wait_for(type="NetworkEvent", container_id=server_id, direction="in", local_port=8080)
    assert inbound["remote_ip"] == client_ip and inbound["remote_container_id"] == client_id
    assert inbound["local_ip"] == server_ip
    assert inbound["pid"] == 0  # softirq: no process is claimed for an inbound connection
    # One event each way, however many times it repeats (the kernel drops repeats).
    for _ in range(3):
        exec_in(client, "sh", "-c", f"echo hi | nc -w 1 {server_ip} 8080")
    wait_for(lambda: len(events.log.matching(type="NetworkEvent", container_id=server_id, direction="in")) >= 1)
    assert len(events.log.matching(type="NetworkEvent", container_id=client_id, direction="out",
                                   remote_port=8080)) == 1
    assert len(events.log.matching(type="NetworkEvent", container_id=server_id, direction="in")) == 1


def test_listener_on_a_new_port_gives_listen_event(enforcer, events, dockerx):
    name, cid = _start(dockerx, enforcer, "--network", "none")
    subprocess.Popen(["docker", "exec", name, "nc", "-l", "-p", "9417"], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    ev = events.log.wait_for(type="NetworkEvent", container_id=cid, direction="listen", local_port=9417)
    assert ev["proto"] == "tcp" and ev["comm"] == "nc"


def test_write_under_etc_and_read_of_shadow_give_file_events(enforcer, events, dockerx):
    name, cid = _start(dockerx, enforcer, "--network", "none")
    _with_shadow(name)
    exec_in(name, "sh", "-c", "echo stockade > /etc/stockade-test.conf; cat /etc/shadow >/dev/null; "
                              "echo x > /etc/a.conf; mv /etc/a.conf /etc/b.conf")
    created = events.log.wait_for(type="FileEvent", container_id=cid, op="create", path="/etc/stockade-test.conf")
    assert not created["sensitive"]
    shadow = events.log.wait_for(type="FileEvent", container_id=cid, op="read", path="/etc/shadow")
    assert shadow["sensitive"] and shadow["comm"] == "cat"
    moved = events.log.wait_for(type="FileEvent", container_id=cid, op="rename")
    assert moved["path"] == "/etc/a.conf" and moved["new_path"] == "/etc/b.conf"
    closed = events.log.wait_for(type="FileClosedEvent", container_id=cid, path="/etc/stockade-test.conf")
    assert closed["sha256"] == hashlib.sha256(b"stockade\n").hexdigest() and closed["size"] == 9
    # Ordinary reads are not events; a relative read of a sensitive file is, once resolved.
    assert not events.log.matching(type="FileEvent", container_id=cid, op="read", path="/etc/passwd")


def test_relative_read_of_a_sensitive_file_is_reported_and_resolved(enforcer, events, dockerx):
    name, cid = _start(dockerx, enforcer, "--network", "none")
    _with_shadow(name)
    # Short-lived: gone before its cwd can be read; reported by its name.
    exec_in(name, "sh", "-c", "cd /etc && exec cat shadow")
    ev = events.log.wait_for(type="FileEvent", container_id=cid, op="read", path=lambda p: p in ("shadow", "/etc/shadow"))
    assert ev["sensitive"]
    # Still running when the event is decoded: resolved against its cwd.
    reader = subprocess.Popen(["docker", "exec", name, "sh", "-c", "cd /etc && exec tail -f ./shadow"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # (another literal string than before: the kernel would drop a repeat of "shadow")
        ev = events.log.wait_for(type="FileEvent", container_id=cid, op="read", path="/etc/shadow", comm="tail")
        assert ev["sensitive"]
    finally:
        reader.kill()
        exec_in(name, "pkill", "tail")


def test_unshare_denied_by_seccomp_gives_dangerous_syscall_event(enforcer, events, dockerx):
    name, cid = _start(dockerx, enforcer, "--network", "none")
    proc = exec_in(name, "unshare", "-U", "true")
    assert proc.returncode != 0  # Docker's default seccomp profile refuses it
    ev = events.log.wait_for(type="SyscallEvent", container_id=cid, name="unshare")
    assert ev["nr"] == 272 and ev["ret"] < 0 and ev["dangerous"]


def test_dns_query_gives_dns_event(enforcer, events, dockerx):
    name, cid = _start(dockerx, enforcer, "--network", "none")
    # To the container's own loopback: the query is sent (nothing answers), which is enough.
    exec_in(name, "nslookup", "stockade-probe.example", "127.0.0.1", timeout=30)
    ev = events.log.wait_for(type="DnsEvent", container_id=cid, name="stockade-probe.example")
    assert ev["server_ip"] == "127.0.0.1" and ev["qtype"] in (1, 28)


def test_the_same_actions_by_a_host_process_give_nothing(enforcer, events, dockerx, tmp_path):
    name, cid = _start(dockerx, enforcer, "--network", "none")
    marker = f"stockade-host-{uuid.uuid4().hex[:8]}"
    target = tmp_path / marker
    subprocess.run(["sh", "-c", f"cat /etc/shadow >/dev/null; echo x > {target}; mv {target} {target}.2; "
                                f"nslookup {marker}.example 127.0.0.1 >/dev/null 2>&1; true"], timeout=30)
    # A container action afterwards proves the stream is flowing when we look.
    exec_in(name, "sh", "-c", f"echo x > /tmp/{marker}")
    events.log.wait_for(type="FileEvent", container_id=cid, path=f"/tmp/{marker}")
    host_pids = {os.getpid()}
    assert not [e for e in events.log.events if marker in str(e.get("path", "")) + str(e.get("name", ""))
                and e.get("container_id") != cid]
    assert all(e.get("container_id") for e in events.log.events), "an event without a container"
    assert not [e for e in events.log.events if e.get("pid") in host_pids]


def test_status_and_stats_report_every_sensor(enforcer):
    stats = enforcer.call("stats")
    names = [s["name"] for s in stats["sensors"]]
    assert names == ["process", "network", "dns", "file", "syscall"]
    assert all(s["loaded"] and not s["error"] for s in stats["sensors"])
    assert {"events_total", "lost_total"} <= set(stats)
    status = enforcer.call("status")
    assert [s["name"] for s in status["sensors"]] == names
    out = enforcer.cli("status").stdout
    assert "process" in out and "syscall" in out


def test_enforcer_without_sensors_still_runs(make_enforcer):
    e = make_enforcer("--no-sensors")
    assert e.call("status")["sensors"] == []


def test_enforcer_reports_sensors_not_loaded_when_bpf_cannot_load(make_enforcer, tmp_path):
    # A python path where `import bcc` fails: the enforcer runs, the sensors say why not.
    fake = tmp_path / "nobcc" / "bcc"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('bcc hidden by the test')\n")
    e = make_enforcer(env={"PYTHONPATH": str(fake.parent)})
    sensors = wait_for(lambda: [s for s in e.call("stats")["sensors"] if s["error"]], timeout=30,
                       what="the sensors' error")
    assert all(not s["loaded"] for s in sensors)
    assert "bcc" in sensors[0]["error"]
    assert e.call("ping")
    assert Path(e.socket).exists()
