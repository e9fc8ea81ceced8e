"""The enforcer as a process: clean stop, one-line errors at start, the Docker engine
missing at start or going away and coming back."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.harness import REPO, EnforcerProcess, docker, wait_for

PROXY = textwrap.dedent("""
    # A unix-socket proxy in front of the real Docker engine, so a test can make the
    # engine "go away" and "come back" without touching the real dockerd.
    import asyncio, sys
    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                w.write(data); await w.drain()
        except Exception:
            pass
        finally:
            w.close()
    async def handle(r, w):
        ur, uw = await asyncio.open_unix_connection("/var/run/docker.sock")
        await asyncio.gather(pipe(r, uw), pipe(ur, w))
    async def main():
        server = await asyncio.start_unix_server(handle, path=sys.argv[1])
        print("ready", flush=True)
        await server.serve_forever()
    asyncio.run(main())
""")


def start_proxy(path: Path) -> subprocess.Popen[str]:
    path.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", PROXY, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.docker
@pytest.mark.nftables
def test_sigterm_stops_cleanly_and_removes_the_socket(make_enforcer, docker_engine):
    enforcer: EnforcerProcess = make_enforcer("--no-sensors")
    assert enforcer.stop(signal.SIGTERM) == 0
    assert not Path(enforcer.socket).exists()
    assert "Traceback" not in enforcer.log()


@pytest.mark.docker
@pytest.mark.nftables
def test_a_second_enforcer_on_a_taken_socket_says_so_in_one_line(make_enforcer, docker_engine):
    first = make_enforcer("--no-sensors")
    proc = subprocess.run([sys.executable, "-m", "enforcer.main", "--no-sensors", "--socket", first.socket,
                           "--db", str(Path(first.db).with_name("other.db"))],
                          capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"stockade-enforcer: socket {first.socket} is in use by a running enforcer"
    assert "Traceback" not in proc.stderr
    assert first.call("ping")  # the first one is untouched


def test_bad_config_and_bad_database_are_one_line_errors(tmp_path):
    bad_cfg = tmp_path / "c.toml"
    bad_cfg.write_text("learn_seconds = [\n")
    proc = subprocess.run([sys.executable, "-m", "enforcer.main", "--config", str(bad_cfg), "--socket",
                           str(tmp_path / "s.sock"), "--db", str(tmp_path / "d.db")],
                          capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert proc.returncode == 2 and proc.stderr.startswith("stockade-enforcer: cannot read config")
    assert len(proc.stderr.strip().splitlines()) == 1

    not_db = tmp_path / "notdb.db"
    not_db.write_bytes(b"garbage" * 1000)
    proc = subprocess.run([sys.executable, "-m", "enforcer.main", "--no-sensors", "--socket", str(tmp_path / "s.sock"),
                           "--db", str(not_db)], capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("stockade-enforcer: cannot open database")
    assert "Traceback" not in proc.stderr
    assert not_db.read_bytes() == b"garbage" * 1000  # nothing overwritten


def test_cli_without_an_enforcer_says_where_it_looked(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "console.cli", "--socket", str(tmp_path / "x.sock"), "containers"],
                          capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert proc.returncode == 1
    assert proc.stderr == f"stockade: cannot reach the enforcer at {tmp_path / 'x.sock'}: no such socket (is stockade-enforcer running?)\n"


@pytest.mark.docker
@pytest.mark.nftables
def test_engine_down_at_start_then_away_and_back(dockerx, busybox_image, make_enforcer, tmp_path):
    proxy_path = tmp_path / "docker.sock"
    enforcer = make_enforcer("--no-sensors", start=False, env={"STOCKADE_DOCKER_URL": f"unix://{proxy_path}"})
    enforcer.start()
    # Down at start: the enforcer runs, says so, and lists nothing.
    status = enforcer.call("status")
    assert status["docker"]["connected"] is False and status["docker"]["error"]
    assert enforcer.call("containers") == []

    proxy = start_proxy(proxy_path)
    try:
        name = dockerx.run()
        wait_for(lambda: any(c["name"] == name for c in enforcer.call("containers")), timeout=10,
                 what="the container once the engine answers")
        assert enforcer.call("status")["docker"]["connected"] is True

        # The engine goes away: the last known state stays, the status says so.
        proxy.kill()
        proxy.wait()
        wait_for(lambda: enforcer.call("status")["docker"]["connected"] is False, timeout=10,
                 what="the enforcer to notice the engine went away")
        assert any(c["name"] == name for c in enforcer.call("containers"))

        # While it is away a container is removed and another created; on return both show.
        docker("rm", "-f", name)
        dockerx.containers.remove(name)
        second = dockerx.run()
        proxy = start_proxy(proxy_path)
        wait_for(lambda: {c["name"] for c in enforcer.call("containers")} >= {second}
                 and name not in {c["name"] for c in enforcer.call("containers")},
                 timeout=10, what="the resync after the engine came back")
        assert enforcer.running
        assert "Traceback" not in enforcer.log()
    finally:
        proxy.kill()


def _notify_socket(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(300)  # a cold compile under load takes minutes
    return server


@pytest.mark.docker
@pytest.mark.nftables
def test_systemd_is_told_ready_at_once_without_sensors(make_enforcer, tmp_path: Path) -> None:
    with _notify_socket(tmp_path / "notify") as server:
        make_enforcer("--no-sensors", env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert server.recv(4096).decode() == "READY=1\nSTATUS=sensors off"


@pytest.mark.docker
@pytest.mark.bpf
@pytest.mark.nftables
@pytest.mark.slow
def test_systemd_is_told_ready_only_once_the_sensors_are_loaded(make_enforcer, tmp_path: Path) -> None:
    """The unit orders the enforcer before docker.service (Type=notify): at boot no container
    may start before kill-on-exec can hold, so READY waits for the sensors."""
    with _notify_socket(tmp_path / "notify") as server:
        e = make_enforcer(env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        message = server.recv(4096).decode()
        sensors = e.call("status")["sensors"]
        assert message == "READY=1\nSTATUS=sensors loaded", message
        assert sensors and all(s["loaded"] for s in sensors), sensors
