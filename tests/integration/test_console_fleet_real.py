"""The fleet console, for real: two REAL enforcers on this machine (each its own socket,
database and nftables table; --no-sensors, so no eBPF), and the real console in tmux
(`python -m console.cli --host A --host B`), keys sent and the screen read as a person
would. One enforcer is stopped mid-test: the screen says that host is lost and keeps its
rows (stale) while the other host's rows still update; then it comes back. Then, through
Textual's pilot: an action reaches only the selected row's enforcer (the two audit logs,
and the container FROZEN then thawed as that enforcer reports it), and a hung socket and a
missing one beside a real enforcer."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from console.app import StockadeApp
from console.fleet import HostKey
from console.screens.main import MainScreen
from console.screens.modals import ConfirmScreen
from console.widgets.header import ConnectionBanner, StatusHeader
from support.harness import REPO, DockerResources, EnforcerProcess, docker
from support.pilot import until
from support.sshd import sshd

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
    console = Tmux([sys.executable, "-m", "console.cli", "--host", one.socket, "--host", two.socket]).start()
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


def test_two_enforcers_over_ssh_in_one_console_one_stopped_and_back(
        make_enforcer: Callable[..., EnforcerProcess], dockerx: DockerResources, busybox_image: str) -> None:
    """The fleet as a user runs it: the console in tmux, both hosts named ssh://, the system
    ssh and a real sshd carrying `stockade dial-stdio`; one enforcer stopped, then back."""
    one = make_enforcer("--no-sensors")
    two = make_enforcer("--no-sensors")
    name = dockerx.run(name="stfleetssh" + uuid.uuid4().hex[:6], command=["sleep", "3600"])
    with sshd() as server:
        targets = [server.target("root", one.socket), server.target("root", two.socket)]
        # The CLI against each host over ssh first (one host per command).
        for target in targets:
            proc = subprocess.run([sys.executable, "-m", "console.cli", "--host", target, "containers", "--json"],
                                  capture_output=True, text=True, timeout=120, cwd=REPO, env=server.env())
            assert proc.returncode == 0, proc.stderr
            assert name in proc.stdout
        opts = server.env()["STOCKADE_SSH_OPTS"]
        command = ["env", f"STOCKADE_SSH_OPTS={opts}", sys.executable, "-m", "console.cli"]
        for target in targets:
            command += ["--host", target]
        console = Tmux(command).start()
        try:
            screen = console.wait(lambda s: "fleet 2/2 up" in s and len(rows_of(s, name)) == 2,
                                  "both hosts over ssh and the container once per host", timeout=60)
            assert "HOST" in screen
            two.stop()
            screen = console.wait(lambda s: "fleet 1/2 up" in s and " lost" in s, "the stopped host shown lost",
                                  timeout=60)
            assert any("(stale)" in r for r in rows_of(screen, name)) or "(stale)" in screen
            two.start()
            console.wait(lambda s: "fleet 2/2 up" in s and "(stale)" not in s and len(rows_of(s, name)) == 2,
                         "the host back over ssh", timeout=90)
        except BaseException:
            print(f"---- last screen ----\n{console.screen()}\n---- sshd log ----\n{server.log()[-3000:]}")
            raise
        finally:
            console.keys("q")
            console.stop()


# -- the same fleet through Textual's pilot (exact keys and exact state) ---------------------
async def test_an_action_reaches_only_the_enforcer_of_the_selected_row(
        make_enforcer: Callable[..., EnforcerProcess], dockerx: DockerResources, busybox_image: str) -> None:
    one = make_enforcer("--no-sensors")
    two = make_enforcer("--no-sensors")
    name = dockerx.run(name="stfleet" + uuid.uuid4().hex[:6], command=["sleep", "3600"])
    cid = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    app = StockadeApp(targets=[one.socket, two.socket], retry_seconds=0.3)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: all(h.up and cid in h.state.containers for h in app.hosts), what="both hosts")
        app.repaint_now()
        await pilot.press("2")
        screen = app.screen
        assert isinstance(screen, MainScreen)
        assert screen.view.table.move_cursor_to(HostKey(1, cid))
        await pilot.press("f")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.title_text == f"Freeze container on {app.hosts[1].label}"
        await pilot.press("right", "enter")
        await until(pilot, lambda: app.hosts[1].state.containers[cid].get("frozen"), what="FROZEN on the second host")
        # Only the second enforcer was asked (the audit logs), and it froze the container.
        assert [e["action"] for e in two.call("audit")][:1] == ["freeze"]
        assert not [e for e in one.call("audit") if e["action"] == "freeze"]
        await pilot.press("u")
        await pilot.press("right", "enter")
        await until(pilot, lambda: not app.hosts[1].state.containers[cid].get("frozen"), what="thawed")
        assert not [e for e in one.call("audit") if e["action"] in ("freeze", "unfreeze")]


async def test_a_silent_and_a_missing_enforcer_beside_a_real_one(
        make_enforcer: Callable[..., EnforcerProcess], tmp_path: Path) -> None:
    real = make_enforcer("--no-sensors")
    silent_path = str(tmp_path / "silent" / "enforcer.sock")
    os.makedirs(os.path.dirname(silent_path))
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # a hung enforcer: it accepts, and never answers hello

    server = await asyncio.start_unix_server(accept_and_say_nothing, path=silent_path)
    missing = str(tmp_path / "missing" / "enforcer.sock")
    app = StockadeApp(targets=[real.socket, silent_path, missing], retry_seconds=0.3)
    try:
        async with app.run_test(size=(160, 45)) as pilot:
            await until(pilot, lambda: app.hosts[0].up and app.hosts[1].state.connection.attempts >= 1
                        and app.hosts[2].state.connection.attempts >= 2, what="the real host up, the others refused")
            app.repaint_now()
            await pilot.pause()
            header = str(app.screen.query_one(StatusHeader).render())
            assert "fleet 1/3 up" in header and f"● {app.hosts[0].label}" in header
            banner = str(app.screen.query_one(ConnectionBanner).render())
            assert "no answer within" in banner and "no such socket" in banner
            assert app.hosts[0].state.containers or app.hosts[0].state.status  # the real one loaded
    finally:
        server.close()
        for w in held:
            w.close()
