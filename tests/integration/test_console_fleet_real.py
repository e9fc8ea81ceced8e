"""The fleet console, for real: two REAL enforcers on this machine (each its own socket,
database and nftables table; --no-sensors, so no eBPF), and the real console in tmux
(`python -m console.cli --socket A --socket B`), keys sent and the screen read as a person
would. One enforcer is stopped mid-test: the screen says that host is lost and keeps its
rows (stale) while the other host's rows still update; then it comes back."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from typing import Callable

import pytest

from support.harness import REPO, DockerResources, EnforcerProcess

pytestmark = [pytest.mark.docker, pytest.mark.nftables, pytest.mark.slow]


class Tmux:
    def __init__(self, command: list[str], width: int = 170, height: int = 46) -> None:
        self.session = "stockade-fleet-" + uuid.uuid4().hex[:8]
        self.command = command
        self.width, self.height = width, height

    def start(self) -> "Tmux":
        if not shutil.which("tmux"):
            pytest.fail("tmux is not installed (make setup installs it)")
        line = " ".join(shlex.quote(c) for c in self.command)
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", str(self.width), "-y", str(self.height),
                        "-e", "TERM=xterm-256color", "-e", f"PYTHONPATH={REPO}", "-c", str(REPO),
                        f"sleep 0.5; exec {line}"], check=True)
        subprocess.run(["tmux", "set-option", "-t", self.session, "remain-on-exit", "on"], check=False)
        return self

    def stop(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)

    def keys(self, *keys: str) -> None:
        for key in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.session, key], check=True)
            time.sleep(0.3)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session], capture_output=True, text=True,
                              check=True).stdout

    def wait(self, predicate: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.25)
        raise AssertionError(f"never on the screen after {timeout:g} s: {what}\n---- screen ----\n{screen}")


def rows_of(screen: str, name: str) -> list[str]:
    """The table lines that show this container (the HOST cell first)."""
    return [line.strip() for line in screen.splitlines() if name in line]


def test_two_real_enforcers_in_one_console_one_stopped_and_back(
        make_enforcer: Callable[..., EnforcerProcess], dockerx: DockerResources, busybox_image: str) -> None:
    one = make_enforcer("--no-sensors")
    two = make_enforcer("--no-sensors")
    # Both run on this machine: same hostname, so the console tells them apart by their sockets.
    host = one.call("hello")["host"]
    label_one, label_two = f"{host}:{os.path.basename(os.path.dirname(one.socket))}", \
        f"{host}:{os.path.basename(os.path.dirname(two.socket))}"
    prefix = "stfleet" + uuid.uuid4().hex[:6]
    first = dockerx.run(name=f"{prefix}-a", command=["sleep", "3600"])
    console = Tmux([sys.executable, "-m", "console.cli", "--socket", one.socket, "--socket", two.socket]).start()
    try:
        # Both hosts connected, the container once per host, each row with its host.
        screen = console.wait(lambda s: f"● {label_one}" in s and f"● {label_two}" in s and "fleet 2/2 up" in s
                              and len(rows_of(s, first)) == 2, "both hosts and the container twice")
        assert "HOST" in screen
        assert sorted(r.split()[0] for r in rows_of(screen, first)) == sorted([label_one, label_two])

        two.stop()
        screen = console.wait(lambda s: f"○ {label_two} lost" in s and "fleet 1/2 up" in s,
                              "the stopped enforcer shown lost")
        assert "retrying" in screen
        screen = console.wait(lambda s: any(r.startswith(f"{label_two} (stale)") for r in rows_of(s, first)),
                              "its rows kept, marked stale")
        assert any(r.startswith(f"{label_one} ") and "(stale)" not in r for r in rows_of(screen, first))

        # The other host still updates: a container started now appears under it, live.
        second = dockerx.run(name=f"{prefix}-b", command=["sleep", "3600"])
        screen = console.wait(lambda s: len(rows_of(s, second)) >= 1, "the new container from the live host")
        assert [r.split()[0] for r in rows_of(screen, second)] == [label_one]
        assert f"○ {label_two} lost" in screen  # still lost

        # The host filter: h shows one host's rows only, then the next's, then all.
        console.keys("h")
        screen = console.wait(lambda s: len(rows_of(s, prefix)) == 2 and "host " + label_one in s and
                              all(r.startswith(label_one) for r in rows_of(s, prefix)), "only the first host's rows")
        console.keys("h", "h")
        console.wait(lambda s: len(rows_of(s, first)) == 2, "every host's rows again")

        two.start()
        screen = console.wait(lambda s: f"● {label_two}" in s and "fleet 2/2 up" in s and len(rows_of(s, second)) == 2
                              and "(stale)" not in s, "the enforcer back, its rows live, the new container too")
        assert sorted(r.split()[0] for r in rows_of(screen, second)) == sorted([label_one, label_two])
    except BaseException:
        print(f"---- last screen ----\n{console.screen()}")
        raise
    finally:
        console.keys("q")
        console.stop()
