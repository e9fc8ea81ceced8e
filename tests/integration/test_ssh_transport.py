"""The CLI and the console over SSH (issue 16), end to end with real parts: a real sshd
(Debian's openssh-server on 127.0.0.1, tests/support/sshd.py), the system ssh client, real
users and groups, and a real enforcer (no sensors) whose socket belongs to the viewer group.
The remote side runs this checkout's `stockade dial-stdio` as the ssh user, so the enforcer's
SO_PEERCRED check sees that user: root administers, a viewer reads and is refused changes
exactly as it is locally, an outsider cannot open the socket. Every failure is one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from console.client import EnforcerClient, Unreachable
from support.harness import REPO, DockerResources, EnforcerProcess, docker, sh, unique, wait_for
from support.principals import Principals, as_user, guarded_enforcer, open_workdir
from support.principals import principals as support_principals
from support.sshd import Sshd, free_port, processes_with, ssh_children, sshd

pytestmark = [pytest.mark.docker, pytest.mark.nftables, pytest.mark.slow]


@dataclass
class World:
    P: Principals
    e: EnforcerProcess
    s: Sshd


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with support_principals("sh") as P, guarded_enforcer(P, "stockade-ssh-") as e, \
            sshd((P.admin.name, P.viewer.name, P.outsider.name)) as s:
        yield World(P, e, s)


@pytest.fixture
def ssh_env(world: World, monkeypatch: pytest.MonkeyPatch) -> Sshd:
    """For in-process clients: ssh reads the test server's config."""
    monkeypatch.setenv("STOCKADE_SSH_OPTS", f"-F {world.s.client_config}")
    monkeypatch.delenv("STOCKADE_REMOTE_STOCKADE", raising=False)
    monkeypatch.delenv("STOCKADE_HOST", raising=False)
    return world.s


def stockade(s: Sshd, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as root on this side, with the test server's ssh config."""
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=str(REPO), env=s.env(**env))


def one_line_failure(proc: subprocess.CompletedProcess[str]) -> str:
    err = proc.stderr.strip()
    assert proc.returncode != 0, f"expected a failure, got {proc.returncode}: {proc.stdout[:500]}"
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def no_leftovers(socket_path: str) -> None:
    """No ssh child of this process, and no dial-stdio (remote side) still on that socket."""
    wait_for(lambda: not ssh_children() and not processes_with(f"dial-stdio --socket {socket_path}"),
             timeout=20, what="the ssh child and the remote dial-stdio to end")


def test_root_over_ssh_reads_and_acts_as_admin(world: World, dockerx: DockerResources, busybox_image: str) -> None:
    e, s = world.e, world.s
    name = dockerx.run(name=unique("stssh"))
    cid = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    wait_for(lambda: any(c["id"] == cid for c in e.call("containers")), what="the container in the inventory")
    host = s.target("root", e.socket)

    status = stockade(s, "--host", host, "status")
    assert status.returncode == 0 and "containers" in status.stdout, status.stderr
    remote = json.loads(stockade(s, "--host", host, "status", "--json").stdout)
    assert remote["host"] == e.call("status")["host"]
    alerts = stockade(s, "--host", host, "alerts", "--json")
    assert alerts.returncode == 0, alerts.stderr
    assert [json.loads(x) for x in alerts.stdout.splitlines() if x.strip()] == \
        [json.loads(x) for x in e.cli("alerts", "--json").stdout.splitlines() if x.strip()]
    # STOCKADE_HOST works as --host does.
    containers = stockade(s, "containers", "--json", STOCKADE_HOST=host)
    assert containers.returncode == 0 and any(c["id"] == cid for c in json.loads(containers.stdout))

    # An admin action over ssh, for real: the container is frozen, then thawed.
    assert stockade(s, "--host", host, "freeze", name).returncode == 0
    wait_for(lambda: e.call("container", target=cid).get("frozen"), what="the container frozen over ssh")
    proc = stockade(s, "--host", host, "unfreeze", name)
    assert proc.returncode == 0, proc.stderr
    audit = [(a["uid"], a["action"], a["target"], a["result"]) for a in e.call("audit", limit=50)]
    assert (0, "freeze", name, "ok") in audit and (0, "unfreeze", name, "ok") in audit
    no_leftovers(e.socket)


def test_a_viewer_over_ssh_reads_and_is_refused_changes_as_locally(
        world: World, ssh_env: Sshd, dockerx: DockerResources, busybox_image: str) -> None:
    e, s, viewer = world.e, world.s, world.P.viewer
    name = dockerx.run(name=unique("stssh"))
    wait_for(lambda: any(c["name"] == name for c in e.call("containers")), what="the container in the inventory")
    host = s.target(viewer.name, e.socket)

    async def hello() -> dict[str, object]:
        client = EnforcerClient(host)
        try:
            return await client.connect()
        finally:
            await client.close()

    seen = asyncio.run(hello())
    assert (seen["role"], seen["uid"]) == ("viewer", viewer.uid)  # the enforcer sees the ssh user

    assert stockade(s, "--host", host, "containers", "--json").returncode == 0
    over_ssh = stockade(s, "--host", host, "freeze", name)
    local = as_user(viewer, sys.executable, "-m", "console.cli", "--socket", e.socket, "freeze", name)
    err = one_line_failure(over_ssh)
    assert over_ssh.returncode == local.returncode == 1
    assert err == local.stderr.strip(), (err, local.stderr)
    assert "freeze changes state" in err and f"user {viewer.name} may only read" in err
    assert not e.call("container", target=name).get("frozen")
    refused = [a for a in e.call("audit", limit=50) if a["uid"] == viewer.uid and a["action"] == "freeze"]
    assert len(refused) == 2 and all(a["result"] == "refused: read-only user" for a in refused)

    # An outsider's ssh session cannot open the socket: dial-stdio's line comes back.
    outsider = stockade(s, "--host", s.target(world.P.outsider.name, e.socket), "status")
    err = one_line_failure(outsider)
    assert err == (f"stockade: {world.P.outsider.name}@127.0.0.1:{s.port}: cannot reach the enforcer at "
                   f"{e.socket}: permission denied (join group {world.P.viewer_group})")
    no_leftovers(e.socket)


def _other_config(s: Sshd, folder: Path, *, known_hosts: str | None = None, key: Path | None = None) -> str:
    """STOCKADE_SSH_OPTS for a client config like the server's, with another known_hosts
    text or another key."""
    folder.mkdir()
    text = s.client_config.read_text()
    if known_hosts is not None:
        kh = folder / "known_hosts"
        kh.write_text(known_hosts)
        text = text.replace(str(s.known_hosts), str(kh))
    if key is not None:
        text = text.replace(str(s.dir / "client_key"), str(key))
    cfg = folder / "ssh_config"
    cfg.write_text(text)
    return f"-F {cfg}"


def _new_key(path: Path) -> Path:
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path))
    return path


def test_every_failure_is_one_line(world: World, tmp_path: Path) -> None:
    e, s = world.e, world.s
    host = s.target("root", e.socket)
    impostor = _new_key(tmp_path / "impostor_host_key").with_suffix(".pub").read_text()
    cases = {
        "host key mismatch": (host, {"STOCKADE_SSH_OPTS": _other_config(
            s, tmp_path / "a", known_hosts=f"[127.0.0.1]:{s.port} {impostor}")},
            "the host key does not match known_hosts"),
        "unknown host key": (host, {"STOCKADE_SSH_OPTS": _other_config(s, tmp_path / "b", known_hosts="")},
                             "the host key is not in known_hosts"),
        "auth failure": (host, {"STOCKADE_SSH_OPTS": _other_config(s, tmp_path / "c", key=_new_key(tmp_path / "stranger"))},
                         "authentication failed: Permission denied (publickey)"),
        "closed port": (s.target("root", e.socket, port=free_port()), {}, "connection refused"),
        "no remote socket": (s.target("root", "/run/stockade-nowhere/enforcer.sock"), {},
                             "cannot reach the enforcer at /run/stockade-nowhere/enforcer.sock: no such socket"),
        "no stockade there": (host, {"STOCKADE_REMOTE_STOCKADE": "stockade-not-installed"},
                              "the remote has no `stockade` on its PATH"),
        "bad target": ("ssh://root@127.0.0.1:0", {}, "the port must be"),
    }
    for what, (target, env, says) in cases.items():
        proc = stockade(s, "--host", target, "status", **env)
        err = one_line_failure(proc)
        assert says in err, f"{what}: {err}"
    assert not ssh_children()


async def test_a_silent_server_is_a_timeout(ssh_env: Sshd) -> None:
    """A port that accepts and never speaks (no SSH banner): the connect times out, ssh is gone."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        client = EnforcerClient(f"ssh://root@127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(Unreachable) as info:
            await client.connect(timeout=3)
        message = str(info.value)
        assert "timed out" in message and "\n" not in message, message
        await client.close()
        assert not ssh_children()
    finally:
        listener.close()


async def test_the_enforcer_stopping_mid_session_is_unreachable_and_a_reconnect_works(ssh_env: Sshd) -> None:
    s = ssh_env
    workdir = open_workdir("stockade-ssh-stop-")
    e = EnforcerProcess(workdir / "e", "--no-sensors")
    try:
        with e.session():
            client = EnforcerClient(s.target("root", e.socket))
            try:
                hello = await client.connect()
                assert hello["role"] == "admin" and client.host_label == f"root@127.0.0.1:{s.port}"
                assert (await client.call("status"))["host"]
                assert len(ssh_children()) == 1

                await asyncio.to_thread(e.stop)
                events = [ev async for ev in client.events()]  # ends with `disconnected`
                assert events[-1]["event"] == "disconnected"
                with pytest.raises(Unreachable):
                    await client.call("status")
                with pytest.raises(Unreachable) as info:  # still down: dial-stdio's line, over ssh
                    await client.connect()
                assert f"root@127.0.0.1:{s.port}: cannot reach the enforcer at {e.socket}" in str(info.value)
                assert not ssh_children()

                await asyncio.to_thread(e.start)
                await client.connect()
                assert (await client.call("status"))["host"]
                await client.subscribe(["audit"])
            finally:
                await client.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert not ssh_children()
    await asyncio.to_thread(no_leftovers, e.socket)


async def test_the_console_connects_over_ssh_and_is_read_only_for_a_viewer(world: World, ssh_env: Sshd) -> None:
    from console.app import StockadeApp

    e, s = world.e, ssh_env
    for user, read_only in (("root", False), (world.P.viewer.name, True)):
        app = StockadeApp(s.target(user, e.socket))
        async with app.run_test(size=(160, 45)) as pilot:
            for _ in range(300):
                if app.state.connection.state == "connected":
                    break
                await pilot.pause(0.1)
            assert app.state.connection.state == "connected", app.state.connection
            assert app.read_only is read_only
            assert app.client.host_label == f"{user}@127.0.0.1:{s.port}"  # type: ignore[attr-defined]
        assert not ssh_children()
    # A remote without the socket: the console says dial-stdio's line under its header and
    # keeps retrying (a fresh ssh each time, none left behind).
    app = StockadeApp(s.target("root", "/run/stockade-nowhere/e.sock"), retry_seconds=0.2)
    async with app.run_test(size=(160, 45)) as pilot:
        for _ in range(300):
            if app.state.connection.state == "down":
                break
            await pilot.pause(0.1)
        app.repaint_now()
        await pilot.pause()
        banner = str(app.screen.query_one("#connection-banner").render())
        assert "cannot reach the enforcer at /run/stockade-nowhere/e.sock: no such socket" in banner, banner
        assert f"root@127.0.0.1:{s.port}" in banner, banner
    assert not ssh_children()
    await asyncio.to_thread(no_leftovers, e.socket)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


async def test_a_host_that_goes_silent_mid_session_is_noticed(world: World, ssh_env: Sshd,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No FIN, no RST: the remote's sshd session is stopped (SIGSTOP), as a host that lost
    power or its network would be. ssh's keep-alives notice (here after ~2 s; by default ~30 s)
    and the client says Unreachable instead of hanging."""
    s, e = ssh_env, world.e
    monkeypatch.setenv("STOCKADE_SSH_OPTS", f"-F {s.client_config} -o ServerAliveInterval=1 -o ServerAliveCountMax=2")
    assert s.proc is not None
    client = EnforcerClient(s.target("root", e.socket))
    await client.connect()
    assert (await client.call("status"))["host"]
    stopped = _descendants(s.proc.pid)
    assert stopped, "no sshd session process"
    try:
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        with pytest.raises(Unreachable):
            await client.call("status", timeout=60)
        assert not client.connected
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        await client.close()
    assert not ssh_children()
    await asyncio.to_thread(no_leftovers, e.socket)
