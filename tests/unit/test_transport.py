"""Targets (socket path, unix://, ssh://), the ssh command line, how ssh's failures read, the
CLI's --host/--socket/STOCKADE_HOST rules, and `stockade dial-stdio` bridging a real unix
socket byte for byte (a real subprocess; no ssh here: tests/integration/test_ssh_transport.py
runs a real sshd)."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from console import cli
from console.client import EnforcerClient, Unreachable
from console.transport import (DIAL_PREFIX, Target, TargetError, explain_ssh_failure, parse_target,
                               remote_command, ssh_argv)

REPO = Path(__file__).resolve().parents[2]


# -- targets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("/run/stockade/enforcer.sock", Target("unix", "/run/stockade/enforcer.sock")),
    ("relative/enforcer.sock", Target("unix", "relative/enforcer.sock")),
    ("unix:///tmp/e.sock", Target("unix", "/tmp/e.sock")),
    ("ssh://node1", Target("ssh", None, "node1")),
    ("ssh://node1/", Target("ssh", None, "node1")),
    ("ssh://ops@node1", Target("ssh", None, "node1", "ops")),
    ("ssh://ops@node1:2222", Target("ssh", None, "node1", "ops", 2222)),
    ("ssh://ops@node1:2222/var/run/e.sock", Target("ssh", "/var/run/e.sock", "node1", "ops", 2222)),
    ("ssh://node1/srv/my%20dir/e.sock", Target("ssh", "/srv/my dir/e.sock", "node1")),
    ("SSH://Node-1.example.org", Target("ssh", None, "Node-1.example.org")),
    ("ssh://[::1]:22/e.sock", Target("ssh", "/e.sock", "::1", None, 22)),
    ("ssh://[fe80::1%eth0]", Target("ssh", None, "fe80::1%eth0")),
    ("ssh://first.last@10.0.0.5", Target("ssh", None, "10.0.0.5", "first.last")),
])
def test_targets_parse(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize("text, says", [
    ("ssh://", "no host"),
    ("ssh://ops@", "no host"),
    ("ssh://node1:0", "port"),
    ("ssh://node1:65536", "port"),
    ("ssh://node1:ssh", "port"),
    ("ssh://ops:secret@node1", "no passwords"),
    ("ssh://-oProxyCommand=x", "cannot start with '-'"),
    ("ssh://-x@node1", "not a user name"),
    ("ssh://node 1", "not a host name"),
    ("ssh://no;de", "not a host name"),
    ("ssh://node1/e.sock?x=1", "no query"),
    ("ssh://::1", "brackets"),
    ("ssh://[nothex]", "IPv6"),
    ("ssh://[::1]x", "unexpected"),
    ("ssh://node1/e%0a.sock", "control characters"),
    ("ssh://node1\x1b[2J", "control characters"),
    ("tcp://node1:2375", "unsupported scheme"),
    ("unix://relative.sock", "unix:///absolute/path"),
])
def test_bad_targets_are_one_line(text: str, says: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_target(text)
    message = str(info.value)
    assert says in message and "\n" not in message


def test_the_default_target_is_the_local_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOCKADE_SOCKET", raising=False)
    assert parse_target(None) == Target("unix", "/run/stockade/enforcer.sock")
    monkeypatch.setenv("STOCKADE_SOCKET", "/tmp/x.sock")
    assert parse_target("") == Target("unix", "/tmp/x.sock")


def test_labels_and_what_client_path_names() -> None:
    local = EnforcerClient("/tmp/e.sock")
    assert (local.host_label, local.path, local.target.is_ssh) == ("local", "/tmp/e.sock", False)
    assert EnforcerClient("unix:///tmp/e.sock").path == "/tmp/e.sock"
    remote = EnforcerClient("ssh://ops@node1:2222/run/e.sock")
    assert remote.host_label == "ops@node1:2222"
    assert remote.path == "ssh://ops@node1:2222/run/e.sock"
    assert EnforcerClient("ssh://node1").host_label == "node1"
    assert EnforcerClient("ssh://[::1]:22").host_label == "[::1]:22"
    with pytest.raises(TargetError):
        EnforcerClient("ftp://x")


# -- the ssh command line ----------------------------------------------------------------------
def test_ssh_argv_puts_the_users_options_first_and_the_host_after_a_double_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_SSH_OPTS", "-F '/tmp/my cfg' -i key -o ConnectTimeout=30")
    monkeypatch.delenv("STOCKADE_REMOTE_STOCKADE", raising=False)
    argv = ssh_argv(parse_target("ssh://ops@node1:2222/srv/my dir/e.sock"), 7.2)
    assert argv[:7] == ["ssh", "-F", "/tmp/my cfg", "-i", "key", "-o", "ConnectTimeout=30"]
    assert "BatchMode=yes" in argv and "ConnectTimeout=8" in argv and "-T" in argv
    assert "ServerAliveInterval=10" in argv  # a vanished host is noticed mid-session
    assert argv[argv.index("-l") + 1] == "ops" and argv[argv.index("-p") + 1] == "2222"
    assert argv[-3:-1] == ["--", "node1"]
    # The remote shell sees each word quoted: the path with a space stays one argument.
    assert shlex.split(argv[-1]) == ["stockade", "dial-stdio", "--socket", "/srv/my dir/e.sock"]


def test_ssh_argv_without_user_port_or_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOCKADE_SSH_OPTS", raising=False)
    monkeypatch.delenv("STOCKADE_REMOTE_STOCKADE", raising=False)
    argv = ssh_argv(parse_target("ssh://node1"))
    assert "-l" not in argv and "-p" not in argv
    assert argv[-3:] == ["--", "node1", "stockade dial-stdio"]


def test_the_remote_command_can_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_REMOTE_STOCKADE", "/opt/stockade/bin/stockade")
    assert remote_command(parse_target("ssh://h/e.sock")) == "/opt/stockade/bin/stockade dial-stdio --socket /e.sock"
    monkeypatch.setenv("STOCKADE_REMOTE_STOCKADE", "sudo -n stockade")
    assert shlex.split(remote_command(parse_target("ssh://h"))) == ["sudo", "-n", "stockade", "dial-stdio"]


# -- ssh's failures, one line each --------------------------------------------------------------
L = "ops@node1:2222"
FAILURES = [
    (255, ["ssh: connect to host 127.0.0.1 port 2222: Connection refused"], "connection refused"),
    (255, ["ssh: connect to host 10.1.1.1 port 22: Connection timed out"], "connection timed out"),
    (255, ["ssh: Could not resolve hostname nodex: Name or service not known"], "unknown host name"),
    (255, ["ssh: connect to host 10.1.1.1 port 22: No route to host"], "host unreachable"),
    (255, ["ops@127.0.0.1: Permission denied (publickey)."], "authentication failed: Permission denied (publickey)"),
    (255, ["Received disconnect from 127.0.0.1 port 22:2: Too many authentication failures"], "authentication failed"),
    (255, ["@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
           "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
           "Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.",
           "Host key verification failed."], "does not match known_hosts"),
    (255, ["No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.",
           "Host key verification failed."], "not in known_hosts"),
    (127, ["sh: 1: stockade: not found"], "no `stockade`"),
    (127, ["bash: line 1: stockade: command not found"], "no `stockade`"),
    (1, [DIAL_PREFIX + "cannot reach the enforcer at /run/stockade/enforcer.sock: no such socket (is stockade-enforcer running?)"],
     f"{L}: cannot reach the enforcer at /run/stockade/enforcer.sock: no such socket"),
    (1, ["Could not chdir to home directory /nonexistent: No such file or directory",
         DIAL_PREFIX + "cannot reach the enforcer at /e.sock: permission denied (join group stockade)"],
     "permission denied (join group stockade)"),
    (255, ["kex_exchange_identification: Connection closed by remote host"], "the server closed the connection"),
    (255, [], "exit 255, no message"),
    (3, ["something odd"], "exited 3 (something odd)"),
    (0, [], "closed before the enforcer answered"),
]


@pytest.mark.parametrize("code, stderr, says", FAILURES)
def test_ssh_failures_read_as_one_line(code: int, stderr: list[str], says: str) -> None:
    message = explain_ssh_failure(L, code, stderr)
    assert says in message and L in message and "\n" not in message, message


def test_a_hung_ssh_is_a_timeout_that_names_the_last_thing_it_said() -> None:
    message = explain_ssh_failure(L, None, ["debug: still waiting"], timed_out=15)
    assert message == f"ssh {L}: timed out after 15 s before the enforcer answered (debug: still waiting)"


# -- the CLI's choice of target ----------------------------------------------------------------
def test_host_flags_beat_the_environment_and_socket_beats_the_environment() -> None:
    env = {"STOCKADE_HOST": "ssh://a, ssh://b:2222 ,"}
    assert cli.resolve_targets(None, None, env) == ["ssh://a", "ssh://b:2222"]
    assert cli.resolve_targets(["ssh://c"], None, env) == ["ssh://c"]
    assert cli.resolve_targets(["ssh://c", "unix:///x.sock"], None, env) == ["ssh://c", "unix:///x.sock"]
    assert cli.resolve_targets(None, "/tmp/e.sock", env) == ["/tmp/e.sock"]
    assert cli.resolve_targets(None, None, {"STOCKADE_SOCKET": "/nope"})  # the local default


@pytest.mark.parametrize("hosts, socket, env, says", [
    (["ssh://a"], "/tmp/e.sock", {}, "not both"),
    (["node1"], None, {}, "a host is ssh://"),
    (["ssh://a:99999"], None, {}, "port"),
    (None, None, {"STOCKADE_HOST": "ssh://ok,http://x"}, "STOCKADE_HOST"),
    ([""], None, {}, "empty"),
])
def test_bad_host_choices_are_one_line(hosts: list[str] | None, socket: str | None, env: dict[str, str], says: str) -> None:
    with pytest.raises(cli.UsageError) as info:
        cli.resolve_targets(hosts, socket, env)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_commands_other_than_the_console_take_one_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--host", "ssh://a", "--host", "ssh://b", "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "talks to one enforcer, but 2 hosts" in err
    assert cli.main(["--host", "ssh://a:0", "status"]) == 2
    assert "port" in capsys.readouterr().err


def test_the_console_is_given_every_target(monkeypatch: pytest.MonkeyPatch) -> None:
    import console.app

    seen: list[object] = []
    monkeypatch.setattr(console.app, "run_console", lambda targets, read_only=False: seen.append((targets, read_only)) or 0)
    monkeypatch.setenv("STOCKADE_HOST", "ssh://a,ssh://b")
    assert cli.main([]) == 0
    assert cli.main(["--read-only", "--host", "ssh://c", "--host", "/tmp/e.sock"]) == 0
    assert seen == [(["ssh://a", "ssh://b"], False), (["ssh://c", "/tmp/e.sock"], True)]


async def test_an_ssh_client_that_cannot_start_ssh_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    client = EnforcerClient("ssh://node1")
    with pytest.raises(Unreachable) as info:
        await client.connect(timeout=2)
    assert "no `ssh` client" in str(info.value)


# -- dial-stdio over a real socket ---------------------------------------------------------------
@pytest.fixture
def echo_socket(tmp_path: Path) -> Iterator[str]:
    """A unix socket server that echoes every byte back and closes when its peer shuts down."""
    path = str(tmp_path / "echo.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path
    server.close()


def dial(*args: str, input: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "console.cli", "dial-stdio", *args], input=input,
                          capture_output=True, timeout=60, cwd=REPO, env=env)


def test_dial_stdio_bridges_bytes_both_ways_until_stdin_ends(echo_socket: str) -> None:
    payload = bytes(range(256)) * 4096 + b"\n{\"id\": 1}\n\x00\xff"  # 1 MiB of every byte value
    proc = dial("--socket", echo_socket, input=payload)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == payload and proc.stderr == b""


def test_dial_stdio_takes_the_socket_from_the_environment(echo_socket: str) -> None:
    proc = dial(input=b"ping\n", env={**os.environ, "STOCKADE_SOCKET": echo_socket})
    assert (proc.returncode, proc.stdout) == (0, b"ping\n")


def test_dial_stdio_without_a_socket_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = dial("--socket", str(tmp_path / "none.sock"), input=b"x")
    err = proc.stderr.decode()
    assert proc.returncode == 1 and proc.stdout == b""
    assert err == f"{DIAL_PREFIX}cannot reach the enforcer at {tmp_path / 'none.sock'}: no such socket (is stockade-enforcer running?)\n"
    proc = dial("--bogus")
    assert proc.returncode == 2 and proc.stderr.decode().count("\n") == 1


def test_dial_stdio_ends_when_the_socket_closes(tmp_path: Path) -> None:
    """The server hangs up first (as the enforcer does when it stops): exit 0 with stdin still open."""
    path = str(tmp_path / "bye.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        conn.sendall(b"bye\n")
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "dial-stdio", "--socket", path],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.wait(60) == 0  # stdin is still open: the socket's end ended it
        assert proc.stdout is not None and proc.stdout.read() == b"bye\n"
    finally:
        proc.kill()
        proc.wait()
        server.close()


def test_dial_stdio_loads_neither_asyncio_nor_the_console(tmp_path: Path) -> None:
    """It starts once per SSH connection: only the standard library's basics."""
    probe = ("import runpy, sys\nsys.argv = ['stockade', 'dial-stdio', '--socket', sys.argv[1]]\n"
             "try:\n    runpy.run_module('console.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "none.sock")], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    loaded = set(proc.stderr.strip().splitlines()[-1].split())
    assert "console.dial" in loaded
    heavy = {m for m in loaded if m.split(".")[0] in ("asyncio", "textual", "rich", "enforcer", "argparse")}
    heavy |= {m for m in loaded if m.startswith("console.") and m not in ("console.cli", "console.dial")}
    assert not heavy, sorted(heavy)


def test_the_client_speaks_through_dial_stdio_as_it_would_through_ssh(echo_socket: str) -> None:
    """Not ssh, but its shape: the client's transport is a child's stdin/stdout; here the child
    is dial-stdio itself, to an echo socket, so what the client sends comes back byte for byte."""
    async def go() -> bytes:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console.cli", "dial-stdio", "--socket", echo_socket,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO)
        assert proc.stdin and proc.stdout
        proc.stdin.write(b'{"id": 1, "op": "hello"}\n')
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        proc.stdin.close()
        await proc.wait()
        return line

    assert asyncio.run(go()) == b'{"id": 1, "op": "hello"}\n'


# -- the ssh child, with a stand-in `ssh` on PATH (the real one: tests/integration) ---------------
def fake_ssh(folder: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    script = folder / "ssh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")


async def test_what_a_hostile_remote_writes_on_stderr_is_inert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ssh(tmp_path, "printf 'stockade dial-stdio: cannot reach \\033]0;pwned\\007\\033[2J the enforcer\\n' >&2\nexit 1\n",
             monkeypatch)
    client = EnforcerClient("ssh://node1")
    with pytest.raises(Unreachable) as info:
        await client.connect(timeout=20)
    message = str(info.value)
    assert message == "node1: cannot reach \\x1b]0;pwned\\x07\\x1b[2J the enforcer"
    assert message.isprintable()


async def test_a_hung_ssh_times_out_and_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from support.sshd import processes_with

    marker = f"{os.getpid() % 1000}.{len(str(tmp_path))}4242"
    fake_ssh(tmp_path, f"echo 'still connecting' >&2\nexec sleep {marker}\n", monkeypatch)
    client = EnforcerClient("ssh://ops@node1:2222")
    with pytest.raises(Unreachable) as info:
        await client.connect(timeout=1.5)
    assert str(info.value) == "ssh ops@node1:2222: timed out after 1.5 s before the enforcer answered (still connecting)"
    assert not processes_with(f"sleep {marker}"), "the ssh child outlived the client"
    # A connect cancelled half-way (Ctrl+C, the console quitting) ends its ssh child too.
    fake_ssh(tmp_path, f"exec sleep {marker}\n", monkeypatch)
    task = asyncio.create_task(client.connect(timeout=30))
    for _ in range(100):
        if processes_with(f"sleep {marker}"):
            break
        await asyncio.sleep(0.05)
    assert processes_with(f"sleep {marker}")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not processes_with(f"sleep {marker}"), "a cancelled connect left the ssh child"
    await client.close()


async def test_unbalanced_ssh_options_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_SSH_OPTS", "-F 'unclosed")
    with pytest.raises(Unreachable) as info:
        await EnforcerClient("ssh://node1").connect(timeout=2)
    assert str(info.value) == "STOCKADE_SSH_OPTS is not valid shell words: No closing quotation"
