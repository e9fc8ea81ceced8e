"""The enforcer's container deployment as documented, in one place for the tests: the `docker
run` line of docs/demo.md ("As a container") parsed into a RunSpec, deploy/compose.yaml read
into the same shape, and the documented line turned into a private instance (own container
name, socket and state folders, nftables table, pins) for a test to run as it is written.

The e2e test runs the line it reads from the document, so the two cannot drift apart."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "demo.md"
COMPOSE = REPO / "deploy" / "compose.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
UNIT = REPO / "deploy" / "stockade-enforcer.service"
RUN_DIR = "/run/stockade"  # the socket (and nft-<table>.lock), inside the container
STATE_DIR = "/var/lib/stockade"  # database, forensics bundles, seccomp profiles, inside

# docker run options of the documented line that take a value; -d is the one flag.
_VALUED = {"--name", "--restart", "--pid", "--network", "--cgroupns", "--cap-drop", "--cap-add",
           "--security-opt", "-v", "--volume", "-e", "--env", "--label"}


@dataclass
class RunSpec:
    """What a container is given: enough to compare a docker run line with a compose service."""

    image: str = ""
    name: str = ""
    restart: str = ""
    pid: str = ""
    network: str = ""
    cgroupns: str = ""
    cap_drop: set[str] = field(default_factory=set)
    cap_add: set[str] = field(default_factory=set)
    security_opt: set[str] = field(default_factory=set)
    volumes: dict[str, str] = field(default_factory=dict)  # container path -> "source[:mode]"
    env: dict[str, str] = field(default_factory=dict)
    detach: bool = False
    remove: bool = False  # --rm
    args: list[str] = field(default_factory=list)  # after the image: stockade-enforcer's


def documented_run_argv(doc: Path = DOC) -> list[str]:
    """The `docker run` command of the doc's "As a container" section, as argv."""
    text = doc.read_text()
    _, found, section = text.partition("### As a container")
    assert found, f"{doc} has no '### As a container' section"
    block: list[str] = []
    for line in section.splitlines():
        stripped = line.strip()
        if not block and stripped.startswith("docker run "):
            block.append(stripped)
        elif block and block[-1].endswith("\\"):
            block.append(stripped)
        elif block:
            break
    assert block, f"no `docker run` line under '### As a container' in {doc}"
    return shlex.split(" ".join(part.rstrip("\\").strip() for part in block))


def parse_run(argv: list[str]) -> RunSpec:
    """A `docker run` argv into a RunSpec; an option it does not know is an error, so a new
    option in the document is compared (or added here) rather than ignored."""
    assert argv[:2] == ["docker", "run"], argv[:2]
    spec = RunSpec()
    i = 2
    while i < len(argv):
        opt = argv[i]
        if not opt.startswith("-"):
            spec.image, spec.args = opt, argv[i + 1:]
            return spec
        if opt in ("-d", "--rm"):
            setattr(spec, "detach" if opt == "-d" else "remove", True)
            i += 1
            continue
        assert opt in _VALUED, f"docker run option {opt} is not known to tests/support/deploy.py"
        value = argv[i + 1]
        i += 2
        if opt == "--cap-drop":
            spec.cap_drop.add(value)
        elif opt == "--cap-add":
            spec.cap_add.add(value)
        elif opt == "--security-opt":
            spec.security_opt.add(value)
        elif opt in ("-v", "--volume"):
            source, target, *mode = value.split(":")
            spec.volumes[target] = ":".join([source, *mode])
        elif opt in ("-e", "--env"):
            key, _, val = value.partition("=")
            spec.env[key] = val
        elif opt == "--label":
            pass
        else:
            setattr(spec, opt.lstrip("-"), value)
    raise AssertionError(f"no image in {argv}")


def compose_service(path: Path = COMPOSE, service: str = "enforcer") -> tuple[RunSpec, dict[str, Any]]:
    """The compose service as a RunSpec, and the raw service mapping (healthcheck, ...)."""
    doc = yaml.safe_load(path.read_text())
    svc = doc["services"][service]
    spec = RunSpec(image=svc["image"], name=svc.get("container_name", ""), restart=svc.get("restart", ""),
                   pid=svc.get("pid", ""), network=svc.get("network_mode", ""), cgroupns=svc.get("cgroup", ""),
                   cap_drop=set(svc.get("cap_drop") or []), cap_add=set(svc.get("cap_add") or []),
                   security_opt=set(svc.get("security_opt") or []), detach=True)
    for volume in svc.get("volumes") or []:
        source, target, *mode = volume.split(":")
        spec.volumes[target] = ":".join([source, *mode])
    env = svc.get("environment") or {}
    spec.env = dict(env) if isinstance(env, dict) else dict(e.partition("=")[::2] for e in env)
    return spec, svc


def instance_argv(argv: list[str], *, name: str, run_dir: Path, state_dir: Path, env: dict[str, str],
                  labels: dict[str, str] | None = None, args: list[str] | None = None,
                  uninstall: bool = False) -> list[str]:
    """The documented line for a private instance: its own container name, its own host
    folders behind /run/stockade and /var/lib/stockade (socket, database), extra STOCKADE_*
    settings (nft_table, ...), labels and stockade-enforcer arguments. Everything else, the
    privileges, namespaces and other mounts, stays exactly as documented.

    uninstall: the same line as a one-off `docker run --rm ... --uninstall` (no name, not
    detached, no restart policy), which removes the instance's table and pins."""
    out: list[str] = []
    replaced = {"--name": False, RUN_DIR: False, STATE_DIR: False}
    i = 0
    while i < len(argv):
        opt = argv[i]
        if i >= 2 and not opt.startswith("-"):  # the image
            extra: list[str] = []
            for key, val in env.items():
                extra += ["-e", f"{key}={val}"]
            for key, val in (labels or {}).items():
                extra += ["--label", f"{key}={val}"]
            if uninstall:
                out[2:2] = ["--rm"]
            out += extra + [opt] + list(args or []) + (["--uninstall"] if uninstall else [])
            break
        if opt == "-d":
            if not uninstall:
                out.append(opt)
            i += 1
            continue
        if i < 2 or opt not in _VALUED:
            out.append(opt)
            i += 1
            continue
        value = argv[i + 1]
        i += 2
        if opt == "--name":
            replaced["--name"] = True
            if not uninstall:
                out += [opt, name]
            continue
        if opt == "--restart" and uninstall:
            continue
        if opt in ("-v", "--volume"):
            _, target, *mode = value.split(":")
            if target in (RUN_DIR, STATE_DIR):
                replaced[target] = True
                source = run_dir if target == RUN_DIR else state_dir
                value = ":".join([str(source), target, *mode])
        out += [opt, value]
    missing = [k for k, done in replaced.items() if not done]
    assert not missing, f"the documented line has no {missing}: cannot make a private instance of it"
    return out


def compose_for_v1(path: Path = COMPOSE) -> str:
    """deploy/compose.yaml for docker-compose 1.x (Debian 12), which refuses `cgroup: host`
    (Compose v2 only): the same file without that line, as the file's comment says to do.
    On a cgroup v1 host Docker's default cgroup namespace is the host's anyway."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() != "cgroup: host"]
    assert len(kept) == len(lines) - 1, "deploy/compose.yaml has no `cgroup: host` line"
    return "".join(kept)
