"""The enforcer's container image, end to end: deploy/build-image.sh builds it (and a second
run, with nothing changed, builds nothing), the `docker run` line of docs/demo.md starts it
exactly as written but for its own names and folders (tests/support/deploy.py), and from the
host: the CLI reaches it through the mounted socket, every eBPF sensor is loaded, a program a
busybox container never ran while learning is an alert, a block between two containers is
refused in the kernel, protect mode kills an unknown program and refuses an unknown peer,
the host's groups give the socket its roles, SIGTERM stops it cleanly, and `--uninstall` (the same line, run once)
removes its nftables table and its bpffs pins. Then deploy/compose.yaml starts the same
container (with `docker compose`, or Debian 12's docker-compose 1.29).

Its own instance, so it never meets the suite's other enforcers or a running demo: a
container named sttest-enforcer-*, temporary folders behind /run/stockade and
/var/lib/stockade, an nftables table sttest_<epoch>_* and so the pin folder
/sys/fs/bpf/stockade/<table> (scripts/clean-test.sh removes all of those after a crash).

The tests of this module run in order on one container (compiling the sensors takes tens of
seconds): the measurements they print (build times, image size, time to sensors loaded)
show with `pytest -s`."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from support.deploy import (RUN_DIR, STATE_DIR, compose_for_v1, compose_service, documented_run_argv,
                            instance_argv, parse_run)
from support.enforce import (drop_counters, host_fetch, ip_of, nft_elements, nft_table, reaches, wait_active,
                             wait_known, wait_reaches, wait_reconciled, web)
from support.harness import REPO, TEST_LABEL, container_info, docker, exec_in, sh, socket_call, unique, wait_for
from support.principals import Principal, Principals, as_user, open_workdir, principals

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

IMAGE = "stockade/enforcer:latest"
LEARN_SECONDS = 5
# What a run of this module measured, printed at its end (pytest -s).
MEASURED: dict[str, str] = {}


def build_image() -> tuple[float, str]:
    start = time.monotonic()
    proc = sh("bash", str(REPO / "deploy" / "build-image.sh"), timeout=1800)
    return time.monotonic() - start, proc.stdout + proc.stderr


def caps(names: list[str]) -> set[str]:
    """Capabilities as `docker run` writes them (the CLI stores CAP_X, compose X)."""
    return {n.removeprefix("CAP_") for n in names}


def security_opts(host_config: dict[str, Any]) -> set[str]:
    """The security options given; Docker adds label=disable (SELinux) to a host-pid container."""
    return set(host_config.get("SecurityOpt") or []) - {"label=disable"}


def binds(host_config: dict[str, Any]) -> dict[str, str]:
    """Container path -> "source[:ro]", as RunSpec.volumes has them (compose writes :rw)."""
    out = {}
    for bind in host_config["Binds"]:
        source, target, *mode = bind.split(":")
        out[target] = ":".join([source, *[m for m in mode if m != "rw"]])
    return out


def image_id() -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", IMAGE).stdout.strip()


@pytest.fixture(scope="module")
def image(docker_engine: None) -> dict[str, Any]:
    """deploy/build-image.sh run twice: the first builds what changed (maybe nothing), the
    second must find everything up to date."""
    first_s, first = build_image()
    first_id = image_id()
    second_s, second = build_image()
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    MEASURED["build (first run here)"] = f"{first_s:.1f} s: {first.strip().splitlines()[-1]}"
    MEASURED["build (second run, cached)"] = f"{second_s:.1f} s"
    MEASURED["image size"] = f"{size / 1e6:.0f} MB"
    return {"first": first, "second": second, "first_id": first_id, "second_id": image_id()}


class Deployed:
    """One containerized enforcer started from the documented line, with its own names."""

    def __init__(self, workdir: Path, users: Principals) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.name = f"sttest-enforcer-{suffix}"
        self.table = f"sttest_{int(time.time())}_{suffix[:6]}"
        self.run_dir = workdir / "run"
        self.state_dir = workdir / "state"
        self.run_dir.mkdir(parents=True)
        self.state_dir.mkdir(parents=True)
        self.socket = str(self.run_dir / "enforcer.sock")
        self.pin_dir = f"/sys/fs/bpf/stockade/{self.table}"
        # The socket's roles go to test groups made on the host before the container starts
        # (it sees the host's /etc/group through the documented mount).
        self.env = {"STOCKADE_NFT_TABLE": self.table, "STOCKADE_LEARN_SECONDS": str(LEARN_SECONDS),
                    "STOCKADE_SOCKET_GROUP": users.viewer_group, "STOCKADE_VIEWER_GROUP": users.viewer_group,
                    "STOCKADE_ADMIN_GROUP": users.admin_group}

    def argv(self, uninstall: bool = False) -> list[str]:
        return instance_argv(documented_run_argv(), name=self.name, run_dir=self.run_dir, state_dir=self.state_dir,
                             env=self.env, labels={TEST_LABEL: "1"}, uninstall=uninstall)

    def call(self, op: str, **args: Any) -> Any:
        return socket_call(self.socket, op, **args)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The host's `stockade` (.venv/bin/stockade, this checkout's code) on the mounted socket."""
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "stockade"), "--socket", self.socket, *args],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        if check and proc.returncode != 0:
            raise AssertionError(f"stockade {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def sensors_loaded(self) -> bool:
        sensors = self.call("stats")["sensors"]
        errors = [s["error"] for s in sensors if s.get("error")]
        if errors:
            raise AssertionError(f"sensors failed to load in the container: {errors[0]}")
        return bool(sensors) and all(s["loaded"] for s in sensors)

    def logs(self) -> str:
        proc = docker("logs", "--tail", "200", self.name, check=False)
        return proc.stdout + proc.stderr

    def uninstall(self) -> subprocess.CompletedProcess[str]:
        return sh(*self.argv(uninstall=True), check=False, timeout=120)

    def remove(self) -> None:
        """Whatever state the test left: container gone, then table and pins (by --uninstall,
        and by hand if that failed)."""
        docker("rm", "-f", self.name, check=False)
        self.uninstall()
        for family in ("inet", "bridge"):
            sh("nft", "delete", "table", family, self.table, check=False)
        shutil.rmtree(self.pin_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def users() -> Iterator[Principals]:
    """Host users and groups (admin, viewer, outsider), removed afterwards."""
    with principals("dp") as made:
        yield made


@pytest.fixture(scope="module")
def enforcer(image: dict[str, Any], busybox_image: str, users: Principals) -> Iterator[Deployed]:
    workdir = open_workdir("stdeploy")  # the test users must reach the socket in it
    d = Deployed(workdir, users)
    try:
        start = time.monotonic()
        sh(*d.argv())
        wait_for(lambda: d.call("hello", timeout=2), timeout=60, interval=0.2, what="the socket to answer")
        MEASURED["docker run -> socket answers"] = f"{time.monotonic() - start:.1f} s"
        wait_for(d.sensors_loaded, timeout=240, interval=0.5, what="the sensors to load in the container")
        MEASURED["docker run -> sensors loaded"] = f"{time.monotonic() - start:.1f} s"
        yield d
    except BaseException:
        print(f"\n---- {d.name} log (tail) ----\n{d.logs()[-8000:]}")
        raise
    finally:
        d.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_image_build_is_cached_by_what_it_is_built_from(image: dict[str, Any]) -> None:
    assert "is up to date" in image["second"] and "docker build" not in image["second"], image["second"]
    assert image["second_id"] == image["first_id"]
    labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", IMAGE).stdout)
    assert len(labels.get("stockade.enforcer.hash", "")) == 64


def test_the_documented_line_runs_it_with_the_hosts_namespaces_and_the_host_cli_sees_every_sensor(
        enforcer: Deployed) -> None:
    out = enforcer.cli("status").stdout
    rows = [line.split() for line in out.split("SENSOR", 1)[1].splitlines()[1:] if line.strip()]
    assert rows and all(row[1] == "loaded" for row in rows), out
    status = json.loads(enforcer.cli("status", "--json").stdout)
    assert status["docker"]["connected"] and status["pins"]["enabled"]
    # Exactly the documented privileges, and really the host's namespaces.
    info = container_info(enforcer.name)
    host = info["HostConfig"]
    line = parse_run(documented_run_argv())
    assert (host["PidMode"], host["NetworkMode"]) == ("host", "host")
    assert host.get("CgroupnsMode", "host") == "host"
    assert caps(host["CapAdd"]) == line.cap_add and caps(host["CapDrop"]) == {"ALL"}
    assert security_opts(host) == line.security_opt and host["RestartPolicy"]["Name"] == line.restart
    assert binds(host) == {**line.volumes, RUN_DIR: str(enforcer.run_dir), STATE_DIR: str(enforcer.state_dir)}
    for ns in ("cgroup", "pid", "net"):
        inside = exec_in(enforcer.name, "readlink", f"/proc/self/ns/{ns}", check=True).stdout.strip()
        assert inside == os.readlink(f"/proc/self/ns/{ns}"), ns
    # Its table is in the host's kernel and its pins in the host's bpffs.
    assert nft_table("inet", enforcer.table) and nft_table("bridge", enforcer.table)
    assert os.listdir(enforcer.pin_dir)
    # The socket and the database are in the folders the line mounted.
    assert (enforcer.state_dir / "stockade.db").exists()
    # The image's healthcheck (Docker runs it every 30 s) passes now that the sensors are in.
    kind, command = info["Config"]["Healthcheck"]["Test"]
    assert kind == "CMD-SHELL"
    health = docker("exec", enforcer.name, "/bin/sh", "-c", command, check=False)
    assert health.returncode == 0, health.stderr


def test_an_unexpected_program_after_learning_is_an_alert_listed_by_the_host_cli(enforcer: Deployed, dockerx) -> None:
    net = dockerx.network()
    c = dockerx.run(network=net)
    wait_known(enforcer, c)
    wait_active(enforcer, c, timeout=LEARN_SECONDS + 60)
    exec_in(c, "false")

    def listed() -> list[dict[str, Any]]:
        out = enforcer.cli("alerts", "--container", c, "--json").stdout
        return [a for a in map(json.loads, out.splitlines())
                if a["kind"] == "process" and a["subject"] == "/bin/false"]

    [alert] = wait_for(listed, timeout=30, interval=0.5, what=f"a process alert for /bin/false on {c}")
    assert alert["container"] == c and alert["action"] == "alerted"


def test_a_block_between_two_containers_is_refused_in_the_kernel(enforcer: Deployed, dockerx) -> None:
    net = dockerx.network()
    a, b = web(dockerx, net), web(dockerx, net)
    ip_a, ip_b = ip_of(a), ip_of(b)
    wait_known(enforcer, a, b)
    wait_reconciled(enforcer)
    wait_reaches(a, ip_b)
    out = enforcer.cli("block", a, "--peer", b, "--reason", "deploy test").stdout
    assert "blocked" in out
    assert not reaches(a, ip_b)
    assert not reaches(b, ip_a)
    counters = drop_counters("bridge", enforcer.table)
    assert counters["from-container4"] > 0 and counters["to-container4"] > 0, counters


# Fetches db's page twice a second (only wget and sleep run, learned while learning).
CLIENT = ["sh", "-c", "while true; do /bin/wget -q -O /dev/null http://$T:8080/; /bin/sleep 0.5; done"]


def test_protect_mode_kills_an_unknown_program_and_refuses_an_unknown_peer_in_the_kernel(
        enforcer: Deployed, dockerx) -> None:
    net = dockerx.network()
    db, stranger = web(dockerx, net), web(dockerx, net)
    app = dockerx.run("-e", f"T={ip_of(db)}", network=net, command=CLIENT)
    wait_known(enforcer, db, stranger, app)

    def learned() -> bool:
        entries = enforcer.call("profile", target=app)["profile"]["entries"]
        return (any(e["key"].startswith(f"out tcp {db}/{db} 8080") for e in entries["peer"])
                and any(e["data"]["path"] == "/bin/wget" for e in entries["process"]))

    wait_for(learned, timeout=30, interval=0.5, what="app's profile to hold the fetch from db and wget")
    wait_active(enforcer, app, timeout=LEARN_SECONDS + 60)
    enforcer.cli("mode", app, "protect")
    wait_for(lambda: ip_of(app) in json.dumps(nft_elements("inet", enforcer.table, "prot4")), timeout=15,
             what="app under default-deny in the container's nftables table")
    # What the profile holds passes; a peer it does not hold is refused (fetched from the
    # app's network namespace by a host process, so nothing is exec'd in the app).
    assert host_fetch(app, ip_of(db))
    assert not host_fetch(app, ip_of(stranger))
    assert drop_counters("inet", enforcer.table).get("deny-out4-tcp", 0) >= 1
    # A program the app never ran is killed before its first instruction (SIGKILL: 137).
    assert exec_in(app, "uname").returncode == 137


HELLO_PROBE = """
import asyncio, json, sys
from console.client import EnforcerClient
async def main():
    c = EnforcerClient(sys.argv[1])
    print(json.dumps(await c.connect()))
    await c.close()
asyncio.run(main())
"""


def cli_as(who: Principal, enforcer: Deployed, *args: str) -> subprocess.CompletedProcess[str]:
    return as_user(who, sys.executable, "-m", "console.cli", "--socket", enforcer.socket, *args)


def test_the_hosts_groups_give_the_socket_its_roles(enforcer: Deployed, users: Principals) -> None:
    st = os.stat(enforcer.socket)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == grp.getgrnam(users.viewer_group).gr_gid
    for who, role in ((users.admin, "admin"), (users.viewer, "viewer")):
        proc = as_user(who, sys.executable, "-c", HELLO_PROBE, enforcer.socket)
        assert proc.returncode == 0, proc.stderr
        hello = json.loads(proc.stdout)
        assert (hello["role"], hello["uid"]) == (role, who.uid), hello
    assert cli_as(users.viewer, enforcer, "status", "--json").returncode == 0
    refused = cli_as(users.viewer, enforcer, "block", "nosuch-container", "--peer", "10.9.9.9")
    assert refused.returncode == 1 and "block changes state" in refused.stderr, refused.stderr
    assert f"user {users.viewer.name} may only read" in refused.stderr
    outsider = cli_as(users.outsider, enforcer, "status")
    assert outsider.returncode == 1 and "permission denied" in outsider.stderr, outsider.stderr


def test_sigterm_stops_it_cleanly_and_uninstall_removes_its_table_and_pins(enforcer: Deployed) -> None:
    # Run as a container it is in the inventory too: it never watches (or alerts on) itself.
    own = [a for a in enforcer.call("alerts") if a["container"] == enforcer.name]
    assert own == [], own[:3]
    docker("stop", "-t", "30", enforcer.name, timeout=60)
    state = container_info(enforcer.name)["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), enforcer.logs()[-3000:]
    assert "enforcer stopping" in enforcer.logs()
    # Kept on purpose while it is down (docs/failsafe.md) ...
    assert nft_table("inet", enforcer.table) and os.listdir(enforcer.pin_dir)
    docker("rm", enforcer.name)
    # ... and removed by the same line run once with --uninstall.
    proc = enforcer.uninstall()
    assert proc.returncode == 0, proc.stderr
    assert f"removed nftables table {enforcer.table}" in proc.stdout and "pins under" in proc.stdout, proc.stdout
    assert nft_table("inet", enforcer.table) == [] and nft_table("bridge", enforcer.table) == []
    assert not os.path.exists(enforcer.pin_dir)


def compose_command() -> tuple[list[str], str]:
    """`docker compose` (v2) with the file as it is, or docker-compose 1.x with the copy
    without `cgroup: host` (tests/support/deploy.py compose_for_v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"], (REPO / "deploy" / "compose.yaml").read_text()
    if shutil.which("docker-compose"):
        return ["docker-compose"], compose_for_v1()
    pytest.skip("neither `docker compose` nor docker-compose is installed")


def test_compose_starts_the_same_container_healthy(image: dict[str, Any], tmp_path: Path) -> None:
    tool, text = compose_command()
    project = unique("stdeploy")
    suffix = uuid.uuid4().hex[:6]
    table = f"sttest_{int(time.time())}_{suffix}"
    name = f"sttest-enforcer-{suffix}"
    run_dir, state_dir = tmp_path / "run", tmp_path / "state"
    run_dir.mkdir()
    state_dir.mkdir()
    (tmp_path / "compose.yaml").write_text(text)
    # Its own names and folders; no sensors (the documented line's run proved them): this is
    # about the compose file giving the container the same privileges, and its healthcheck.
    override = {"services": {"enforcer": {
        "container_name": name, "labels": {TEST_LABEL: "1"}, "command": ["--no-sensors"],
        "environment": {"STOCKADE_NFT_TABLE": table},
        "volumes": [f"{run_dir}:{RUN_DIR}", f"{state_dir}:{STATE_DIR}"],
        "healthcheck": {"interval": "1s", "start_period": "0s"}}}}
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    compose = [*tool, "-p", project, "-f", str(tmp_path / "compose.yaml"), "-f", str(tmp_path / "override.yaml")]
    try:
        sh(*compose, "up", "-d", timeout=300)
        socket = str(run_dir / "enforcer.sock")
        wait_for(lambda: socket_call(socket, "hello", timeout=2), timeout=60, interval=0.2, what="the socket")
        wait_for(lambda: container_info(name)["State"]["Health"]["Status"] == "healthy", timeout=60, interval=0.5,
                 what="docker to call the container healthy")
        info = container_info(name)
        host = info["HostConfig"]
        line = parse_run(documented_run_argv())
        assert (host["PidMode"], host["NetworkMode"], host.get("CgroupnsMode", "host")) == ("host", "host", "host")
        assert caps(host["CapAdd"]) == line.cap_add and caps(host["CapDrop"]) == {"ALL"}
        assert security_opts(host) == line.security_opt
        assert host["RestartPolicy"]["Name"] == line.restart
        expected = {**line.volumes, RUN_DIR: str(run_dir), STATE_DIR: str(state_dir)}
        assert binds(host) == expected
        inside = exec_in(name, "readlink", "/proc/self/ns/cgroup", check=True).stdout.strip()
        assert inside == os.readlink("/proc/self/ns/cgroup")
        assert compose_service()[1]["healthcheck"]["test"] == info["Config"]["Healthcheck"]["Test"]
        assert nft_table("inet", table)

        sh(*compose, "down", "-t", "30", timeout=120)
        assert nft_table("inet", table)  # kept on purpose after a stop
        proc = sh(*compose, "run", "--rm", "-T", "enforcer", "--uninstall", timeout=120)
        assert f"removed nftables table {table}" in proc.stdout, proc.stdout
        assert nft_table("inet", table) == []
    finally:
        sh(*compose, "down", "-t", "5", check=False, timeout=120)
        for family in ("inet", "bridge"):
            sh("nft", "delete", "table", family, table, check=False)
        for key, value in MEASURED.items():
            print(f"\nmeasured: {key}: {value}", end="")
        print()
