"""A private copy of the demo for tests: scripts/demo.sh with its own label, compose project
prefix, ports, internal subnet, state folder and enforcer socket, so it can run next to a
user's demo and other tests. The images (stockade-demo/*) are shared and built once."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

from support.harness import REPO, docker, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def used_subnets() -> set[str]:
    ids = docker("network", "ls", "-q").stdout.split()
    out = docker("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *ids).stdout
    return set(out.split())


class DemoInstance:
    def __init__(self, workdir: Path, learn_seconds: int = 20) -> None:
        self.name = "sdt" + uuid.uuid4().hex[:8]
        self.workdir = workdir
        self.state = workdir / "state"
        taken = used_subnets()
        third = random.choice([n for n in range(100, 250) if f"10.199.{n}.0/24" not in taken])
        self.net = f"10.199.{third}"
        self.env = {
            **os.environ,
            "STOCKADE_DEMO_INSTANCE": self.name,
            "STOCKADE_DEMO_PREFIX": self.name,
            "STOCKADE_DEMO_STATE": str(self.state),
            "STOCKADE_SOCKET": str(workdir / "enforcer.sock"),
            "STOCKADE_DEMO_BLOG_PORT": str(free_port()),
            "STOCKADE_DEMO_PINGER_PORT": str(free_port()),
            "STOCKADE_DEMO_FEED_PORT": str(free_port()),
            "STOCKADE_DEMO_NET": self.net,
            "STOCKADE_DEMO_SHARED_NET": f"{self.name}-shared",
            "STOCKADE_DEMO_LEARN_SECONDS": str(learn_seconds),
            "STOCKADE_NFT_TABLE": f"{self.name}_demo",
        }
        self.blog_url = f"http://127.0.0.1:{self.env['STOCKADE_DEMO_BLOG_PORT']}/"
        self.pinger_url = f"http://127.0.0.1:{self.env['STOCKADE_DEMO_PINGER_PORT']}/"
        self.db_ip, self.pinger_ip, self.attacker_ip = f"{self.net}.20", f"{self.net}.30", f"{self.net}.66"

    def container(self, app: str, service: str) -> str:
        return f"{self.name}{app}_{service}_1"

    def app(self, name: str) -> str:
        return self.name + name

    # -- the scripts, as a user runs them ----------------------------------------------------
    def run(self, *cmd: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(cmd), cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def up(self) -> subprocess.CompletedProcess[str]:
        # The first run on a machine builds the images (about a minute and a half).
        return self.run("bash", "scripts/demo.sh", "up", "--no-console")

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.run("bash", "scripts/demo.sh", "down", timeout=300, check=False)

    def attack(self, *args: str, timeout: float = 600) -> dict[str, Any]:
        proc = self.run(str(REPO / ".venv/bin/python"), "demo/attack.py", "--json", *args, timeout=timeout)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(str(REPO / ".venv/bin/stockade"), *args, timeout=120, check=check)

    def cli_json(self, *args: str) -> Any:
        out = self.cli(*args, "--json").stdout
        try:
            return json.loads(out)
        except ValueError:
            return [json.loads(line) for line in out.splitlines() if line.strip()]

    # -- what it left ----------------------------------------------------------------------------
    def containers(self) -> list[str]:
        return docker("ps", "-a", "--format", "{{.Names}}", "--filter", f"label=stockade.demo={self.name}").stdout.split()

    def pid(self, what: str) -> int | None:
        try:
            return int((self.state / f"{what}.pid").read_text())
        except (OSError, ValueError):
            return None

    def enforcer_log(self) -> str:
        try:
            return (self.state / "enforcer.log").read_text(errors="replace")
        except OSError:
            return ""

    def wait_learned(self, timeout: float = 300) -> None:
        def learned() -> bool:
            rows = [c for c in self.cli_json("containers") if (c.get("labels") or {}).get("stockade.demo") == self.name]
            return len(rows) == 4 and all(c.get("profile_state") == "active" for c in rows)
        wait_for(learned, timeout=timeout, interval=1, what=f"the profiles of demo {self.name} to become active")


def pid_running(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
