"""The red team's exec helpers (tests/integration/test_redteam_exec.py): exec_attacks.c built
static at test time and copied into a busybox container as /x/race, /x/a and /x/b, before
the container starts, so that nothing but the test's own commands ever runs in it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from support.harness import BUSYBOX_IMAGE, TEST_LABEL, DockerResources, container_info, docker, exec_in, unique

SOURCE = Path(__file__).with_name("exec_attacks.c")


def build_attacks(out_dir: Path) -> Path:
    """A folder x/ holding race, a and b (three copies of one static binary)."""
    folder = out_dir / "x"
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "race"
    subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", str(binary), str(SOURCE)], check=True,
                   capture_output=True)
    for name in ("a", "b"):
        shutil.copy(binary, folder / name)
    return folder


def attack_container(dockerx: DockerResources, folder: Path, network: str) -> str:
    name = unique("stred")
    docker("create", "--name", name, "--label", f"{TEST_LABEL}=1", "--network", network, BUSYBOX_IMAGE,
           "/x/race", "idle")
    dockerx.containers.append(name)
    docker("cp", str(folder), f"{name}:/")
    docker("start", name)
    return name


def tally(container: str, *args: str, timeout: float = 300) -> dict[str, int]:
    """Run /x/race with these arguments in the container; its "ok=N bad=N killed=N other=N"."""
    proc = exec_in(container, "/x/race", *args, timeout=timeout)
    m = re.search(r"ok=(\d+) bad=(\d+) killed=(\d+) other=(\d+)", proc.stdout)
    assert m, (proc.returncode, proc.stdout, proc.stderr)
    return dict(zip(("ok", "bad", "killed", "other"), map(int, m.groups())))


def escaped(container: str) -> int:
    """How many times /x/b ran (each run appends one byte to /x/escaped), read from the host."""
    pid = container_info(container)["State"]["Pid"]
    try:
        return Path(f"/proc/{pid}/root/x/escaped").read_bytes().count(b"x")
    except FileNotFoundError:
        return 0
