"""The enforcer's deployment files agree with each other, checked without Docker: the `docker
run` line of docs/demo.md, deploy/compose.yaml, the Dockerfile's comment and HEALTHCHECK, and
the systemd unit name the same capabilities, namespaces and mounts. tests/e2e/test_deploy_image.py
runs the documented line (and the compose file) for real."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.deploy import (COMPOSE, DOC, DOCKERFILE, RUN_DIR, STATE_DIR, UNIT, RunSpec, compose_service,
                            compose_for_v1, documented_run_argv, instance_argv, parse_run)

# Capabilities the unit's bounding set has and the docker run line cannot or need not carry:
# Docker before 23 refuses CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN covers them), and
# CAP_SYS_RESOURCE (RLIMIT_MEMLOCK) matters on kernels before 5.11 only; the doc says to add
# each where it applies.
CONDITIONAL_CAPS = {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_RESOURCE"}
MOUNTS = {"/sys/kernel/tracing", "/sys/fs/cgroup", "/sys/fs/bpf", "/var/run/docker.sock", "/lib/modules",
          "/usr/src", RUN_DIR, STATE_DIR, "/etc/passwd", "/etc/group"}


def documented() -> RunSpec:
    return parse_run(documented_run_argv())


def unit_caps() -> set[str]:
    found = re.search(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.M)
    assert found
    return set(found.group(1).split())


def test_the_documented_line_runs_the_image_with_the_hosts_namespaces_and_no_other_capabilities() -> None:
    spec = documented()
    assert spec.image == "stockade/enforcer:latest" and spec.args == []
    assert (spec.pid, spec.network, spec.cgroupns) == ("host", "host", "host")
    assert spec.cap_drop == {"ALL"}
    assert {f"CAP_{c}" for c in spec.cap_add} | CONDITIONAL_CAPS == unit_caps()
    assert spec.security_opt == {"apparmor=unconfined", "seccomp=unconfined"}
    assert set(spec.volumes) == MOUNTS
    read_only = {target for target, source in spec.volumes.items() if source.endswith(":ro")}
    assert read_only == {"/lib/modules", "/usr/src", "/etc/passwd", "/etc/group"}
    assert spec.restart == "unless-stopped" and spec.detach and spec.name == "stockade-enforcer"
    # Host paths are the container's: the host's `stockade` finds the socket where it looks.
    assert all(source.split(":")[0] == target for target, source in spec.volumes.items())


def test_the_compose_service_is_the_documented_line() -> None:
    line = documented()
    service, raw = compose_service()
    assert service == line
    assert raw.get("privileged") is None and raw.get("stop_signal") == "SIGTERM"


def test_the_dockerfile_comment_names_the_same_capabilities_namespaces_and_mounts() -> None:
    text = DOCKERFILE.read_text()
    comment = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert set(re.findall(r"CAP_[A-Z_]+", comment)) == unit_caps()
    mounts = {m.group(2): m.group(1) + (m.group(3) or "") for m in re.finditer(r"-v (\S+?):(\S+?)(:ro)?(?=\s)", comment)}
    assert mounts == documented().volumes
    assert "--pid host --network host --cgroupns host" in comment
    opts = set(re.findall(r"--security-opt (\S+)", comment))
    assert opts == documented().security_opt


def test_the_doc_lists_every_capability_of_the_unit_and_says_when_to_add_the_conditional_ones() -> None:
    text = DOC.read_text()
    section = text.partition("## Running Stockade on an existing host")[2]
    assert {f"CAP_{c}" for c in re.findall(r"`CAP_([A-Z_]+)`", section)} == unit_caps()
    note = section.partition("stockade/enforcer:latest\n")[2]
    for cap in CONDITIONAL_CAPS:
        assert f"--cap-add {cap.removeprefix('CAP_')}" in note, cap


def test_the_systemd_unit_keeps_the_same_folders_and_mounts_tracefs_and_bpffs() -> None:
    unit = UNIT.read_text()
    assert re.search(r"^RuntimeDirectory=stockade$", unit, re.M)  # /run/stockade
    assert re.search(r"^StateDirectory=stockade$", unit, re.M)  # /var/lib/stockade
    assert {RUN_DIR, STATE_DIR} <= set(documented().volumes)
    # What the container gets as mounts, the unit mounts on the host if missing.
    assert "mount -t tracefs tracefs /sys/kernel/tracing" in unit and "/sys/kernel/tracing" in documented().volumes
    assert "mount -t bpf bpf /sys/fs/bpf" in unit and "/sys/fs/bpf" in documented().volumes


def test_the_compose_healthcheck_is_the_images() -> None:
    _, raw = compose_service()
    found = re.search(r"^HEALTHCHECK (.*?) \\\n\s+CMD (.*)$", DOCKERFILE.read_text(), re.M)
    assert found
    options = dict(o.lstrip("-").split("=") for o in found.group(1).split())
    assert raw["healthcheck"]["test"] == ["CMD-SHELL", found.group(2)]
    assert {k.replace("-", "_"): v for k, v in options.items()} == {
        k: str(v) for k, v in raw["healthcheck"].items() if k != "test"}


@pytest.mark.parametrize("status, healthy", [
    ({"sensors": [{"name": "process", "loaded": True}, {"name": "file", "loaded": True}]}, True),
    ({"sensors": [{"name": "process", "loaded": True}, {"name": "file", "loaded": False, "error": "x"}]}, False),
    ({"sensors": []}, True),  # --no-sensors: the socket answering is all there is
    (None, False),  # the socket did not answer: `stockade status` printed nothing
])
def test_the_healthcheck_says_healthy_once_every_sensor_is_loaded(status: dict | None, healthy: bool) -> None:
    _, raw = compose_service()
    command = raw["healthcheck"]["test"][1]
    _, _, judge = command.partition(" | ")  # what reads `stockade status --json`
    proc = subprocess.run(["sh", "-c", judge.replace("python3 ", "python3 -I ", 1)], capture_output=True, text=True,
                          input=json.dumps(status) if status is not None else "")
    assert (proc.returncode == 0) is healthy, proc.stderr


def test_a_private_instance_changes_names_and_folders_only(tmp_path: Path) -> None:
    argv = documented_run_argv()
    mine = instance_argv(argv, name="sttest-x", run_dir=tmp_path / "run", state_dir=tmp_path / "state",
                         env={"STOCKADE_NFT_TABLE": "sttest_1_x"}, labels={"stockade.test": "1"}, args=["--log-level", "DEBUG"])
    spec, line = parse_run(mine), documented()
    assert spec.name == "sttest-x" and spec.env == {"STOCKADE_NFT_TABLE": "sttest_1_x"}
    assert spec.volumes[RUN_DIR] == str(tmp_path / "run") and spec.volumes[STATE_DIR] == str(tmp_path / "state")
    assert spec.args == ["--log-level", "DEBUG"] and "--label" in mine
    for field in ("image", "restart", "pid", "network", "cgroupns", "cap_drop", "cap_add", "security_opt", "detach"):
        assert getattr(spec, field) == getattr(line, field), field
    assert {k: v for k, v in spec.volumes.items() if k not in (RUN_DIR, STATE_DIR)} == \
        {k: v for k, v in line.volumes.items() if k not in (RUN_DIR, STATE_DIR)}

    gone = instance_argv(argv, name="sttest-x", run_dir=tmp_path / "run", state_dir=tmp_path / "state",
                         env={"STOCKADE_NFT_TABLE": "sttest_1_x"}, uninstall=True)
    assert gone[:3] == ["docker", "run", "--rm"] and gone[-2:] == ["stockade/enforcer:latest", "--uninstall"]
    once = parse_run(gone)
    assert once.remove and not once.detach and once.name == "" and once.restart == ""
    assert (once.cap_add, once.volumes) == (spec.cap_add, spec.volumes)


def test_an_option_the_parser_does_not_know_is_an_error() -> None:
    with pytest.raises(AssertionError, match="--privileged"):
        parse_run(["docker", "run", "--privileged", "stockade/enforcer:latest"])


def test_compose_config_validates() -> None:
    """`docker compose config` (v2) on the file as it is; Debian 12's docker-compose 1.29 on
    the copy without `cgroup: host` (which v1 does not know)."""
    ran = False
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        proc = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        ran = True
    if shutil.which("docker-compose"):
        v1 = compose_for_v1()
        proc = subprocess.run(["docker-compose", "-f", "-", "config"], input=v1, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "cap_drop" in proc.stdout and "/sys/fs/bpf:/sys/fs/bpf" in proc.stdout
        proc = subprocess.run(["docker-compose", "-f", "-", "config"], input=COMPOSE.read_text(),
                              capture_output=True, text=True)
        assert proc.returncode != 0 and "cgroup" in proc.stderr  # why the copy exists
        ran = True
    if not ran:
        pytest.skip("neither `docker compose` nor docker-compose is installed")


def test_build_script_parses() -> None:
    subprocess.run(["bash", "-n", str(DOCKERFILE.parent / "build-image.sh")], check=True)
