"""A real OpenSSH server for the SSH transport's tests: Debian's `/usr/sbin/sshd -D -f config`
on 127.0.0.1 and a free port, with a throwaway host key and client key in a temp folder, and
an ssh client config (`STOCKADE_SSH_OPTS=-F file`) that trusts exactly that host key.

The remote command `stockade` is a wrapper, on the sessions' PATH (sshd's SetEnv), that runs
this checkout's console (`python -m console.cli`), so the tests exercise the code under test
and the default remote command, not whatever is installed in /usr/local/bin. Only root and
the users named at start may log in; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .harness import REPO, sh

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    dir: Path
    port: int
    client_config: Path
    known_hosts: Path
    proc: subprocess.Popen[bytes] | None = None
    users: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.dir / "sshd.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def target(self, user: str = "root", socket_path: str | None = None, port: int | None = None) -> str:
        return f"ssh://{user}@127.0.0.1:{port or self.port}{socket_path or ''}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a client process: ssh reads this folder's config (and only it)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKADE_")}
        return {**env, "STOCKADE_SSH_OPTS": f"-F {self.client_config}", "PYTHONDONTWRITEBYTECODE": "1", **extra}

    def ssh(self, user: str, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Plain ssh with the same config (for the tests' own checks)."""
        return subprocess.run(["ssh", "-F", str(self.client_config), "-o", "BatchMode=yes", "-p", str(self.port),
                               "-l", user, "127.0.0.1", "--", *command],
                              capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _write_wrapper(bindir: Path) -> Path:
    bindir.mkdir(mode=0o755)
    wrapper = bindir / "stockade"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# this checkout's stockade CLI, for the SSH transport tests\n"
        f"PYTHONPATH={REPO} PYTHONDONTWRITEBYTECODE=1 exec {sys.executable} -m console.cli \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


@contextlib.contextmanager
def sshd(users: tuple[str, ...] = ()) -> Iterator[Sshd]:
    """A running sshd on 127.0.0.1 that root and `users` may log in to with the client key.
    The users get a shell (/bin/sh), an unlocked-for-keys password field and this folder as
    home (test users are made with nologin and a locked account)."""
    if not os.path.exists(SSHD):
        raise RuntimeError(f"{SSHD} is missing: run scripts/setup.sh (installs openssh-server)")
    d = Path(tempfile.mkdtemp(prefix="stockade-sshd-"))
    os.chmod(d, 0o755)  # sshd reads authorized_keys as the user logging in
    server: Sshd | None = None
    try:
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stockade-test-host", "-f", str(d / "host_key"))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stockade-test-client", "-f", str(d / "client_key"))
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        os.chmod(d / "authorized_keys", 0o644)
        bindir = d / "bin"
        _write_wrapper(bindir)
        for user in users:
            sh("usermod", "-s", "/bin/sh", "-p", "*", "-d", str(d), user)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        host_pub = (d / "host_key.pub").read_text().split()
        for _attempt in range(5):
            port = free_port()
            config = d / "sshd_config"
            config.write_text("\n".join([
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {d / 'host_key'}",
                f"PidFile {d / 'sshd.pid'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "StrictModes no",
                "UsePAM no",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                f"AllowUsers {' '.join(['root', *users])}",
                "AllowTcpForwarding no",
                "X11Forwarding no",
                "PrintMotd no",
                "PrintLastLog no",
                "LogLevel VERBOSE",
                f"SetEnv PATH={bindir}:/usr/local/bin:/usr/bin:/bin",
                "",
            ]))
            known_hosts = d / "known_hosts"
            known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
            client_config = d / "ssh_config"
            client_config.write_text("\n".join([
                "Host *",
                f"  IdentityFile {d / 'client_key'}",
                "  IdentitiesOnly yes",
                f"  UserKnownHostsFile {known_hosts}",
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes",
                "  UpdateHostKeys no",
                "  ControlMaster no",
                "  ControlPath none",
                "  LogLevel ERROR",
                "",
            ]))
            os.chmod(client_config, 0o644)
            log = open(d / "sshd.log", "ab")
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
            log.close()
            server = Sshd(d, port, client_config, known_hosts, proc, list(users))
            if _wait_banner(port, proc):
                break
            server.stop()
            server = None
        if server is None:
            raise RuntimeError(f"sshd did not start:\n{(d / 'sshd.log').read_text(errors='replace')[-3000:]}")
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(d, ignore_errors=True)


def _wait_banner(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(64).startswith(b"SSH-2.0"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def ssh_children(of_pid: int | None = None) -> list[int]:
    """Pids of `ssh` processes whose parent is `of_pid` (default: this process)."""
    parent = os.getpid() if of_pid is None else of_pid
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if name == "ssh" and ppid == parent:
            found.append(int(entry))
    return found


def processes_with(needle: str) -> list[int]:
    """Pids whose command line contains `needle` (e.g. a unique socket path of dial-stdio)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found
