"""Test harness: a real Docker engine, locally built images, internal networks, compose
apps and real enforcer processes. Everything made here is labelled `stockade.test` and
removed at teardown, also when a test fails (scripts/clean-test.sh catches crashes)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[2]
TEST_LABEL = "stockade.test"
BUSYBOX_IMAGE = "stockade-test/busybox:latest"


def sh(*cmd: str, check: bool = True, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its stderr (so a test says why)."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return sh("docker", *args, check=check, timeout=timeout)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; return its value or raise AssertionError."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling, report the last one
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def unique(prefix: str = "st") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# -- images ----------------------------------------------------------------------------
def ensure_busybox_image() -> str:
    """A 1 MB image from Debian's static busybox (no registry needed), built once."""
    if docker("image", "inspect", BUSYBOX_IMAGE, check=False).returncode == 0:
        return BUSYBOX_IMAGE
    busybox = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy(busybox, os.path.join(ctx, "busybox"))
        Path(ctx, "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            "RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/tmp\", \"/etc\", \"/root\", \"/var/www\"]\n"
            "RUN [\"/bin/sh\", \"-c\", \"echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && "
            "echo 'root:*:19000:0:99999:7:::' > /etc/shadow && chmod 600 /etc/shadow && "
            "echo 'root:x:0:' > /etc/group\"]\n"
            f"LABEL {TEST_LABEL}=1\n"
        )
        sh("docker", "build", "-q", "-t", BUSYBOX_IMAGE, ctx, timeout=300)
    return BUSYBOX_IMAGE


# -- containers and networks -------------------------------------------------------------
class DockerResources:
    """Creates containers and networks and removes them all at teardown."""

    def __init__(self) -> None:
        self.containers: list[str] = []
        self.networks: list[str] = []
        self.projects: list[tuple[str, Path]] = []

    def network(self, name: str | None = None, internal: bool = True) -> str:
        name = name or unique("stnet")
        args = ["network", "create", "--label", f"{TEST_LABEL}=1"]
        if internal:
            args.append("--internal")
        docker(*args, name)
        self.networks.append(name)
        return name

    def run(self, *args: str, name: str | None = None, image: str = BUSYBOX_IMAGE,
            network: str | None = None, command: list[str] | None = None) -> str:
        """docker run -d; returns the container name."""
        name = name or unique("stc")
        cmd = ["run", "-d", "--name", name, "--label", f"{TEST_LABEL}=1"]
        if network:
            cmd += ["--network", network]
        cmd += list(args) + [image] + list(command or ["sleep", "3600"])
        docker(*cmd)
        self.containers.append(name)
        return name

    def compose_up(self, project: str, compose_yaml: str, directory: Path) -> Path:
        """Deploy a compose app with docker-compose (v1) from a file written to directory."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "docker-compose.yml"
        path.write_text(compose_yaml)
        self.projects.append((project, path))
        sh("docker-compose", "-f", str(path), "-p", project, "up", "-d", "--no-build", timeout=300)
        return path

    def compose(self, project: str, *args: str) -> subprocess.CompletedProcess[str]:
        path = next(p for name, p in self.projects if name == project)
        return sh("docker-compose", "-f", str(path), "-p", project, *args, timeout=300)

    def cleanup(self) -> None:
        for project, path in reversed(self.projects):
            sh("docker-compose", "-f", str(path), "-p", project, "down", "-v", "-t", "1", "--remove-orphans",
               check=False, timeout=300)
        if self.containers:
            docker("rm", "-f", *self.containers, check=False)
        for net in self.networks:
            docker("network", "rm", net, check=False)


def container_info(name: str) -> dict[str, Any]:
    return json.loads(docker("inspect", name).stdout)[0]


def exec_in(name: str, *cmd: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return docker("exec", name, *cmd, check=check, timeout=timeout)


# -- the enforcer -----------------------------------------------------------------------
def socket_call(path: str, op: str, timeout: float = 5.0, **args: Any) -> Any:
    """One synchronous request over the socket (usable inside or outside an event loop)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall((json.dumps({"id": 1, "op": op, **args}) + "\n").encode())
        buf = b""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("enforcer closed the connection")
            buf += chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                msg = json.loads(line)
                if msg.get("id") == 1 or "event" not in msg:
                    if not msg.get("ok"):
                        raise RuntimeError(f"{op}: {msg.get('error')} ({msg.get('code')})")
                    return msg.get("result")


_made: list["EnforcerProcess"] = []


@atexit.register
def _remove_leftover_pins() -> None:
    """Pins keep a stopped test enforcer's programs attached: at exit, remove those of every
    enforcer this process made that no longer runs (tests that remove their table did already)."""
    for e in _made:
        if not e.running and e.pin_dir and os.path.isdir(e.pin_dir):
            shutil.rmtree(e.pin_dir, ignore_errors=True)


class EnforcerProcess:
    """A real `stockade-enforcer` in a subprocess, on a temporary socket and database."""

    def __init__(self, workdir: Path, *extra_args: str, env: dict[str, str] | None = None,
                 prefix: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = str(workdir / "enforcer.sock")
        self.db = str(workdir / "stockade.db")
        self.log_path = workdir / "enforcer.log"
        self.extra_args = list(extra_args)
        self.prefix = list(prefix)  # a command the enforcer runs under (e.g. unshare)
        self.env = {**os.environ, "STOCKADE_CONFIG": str(workdir / "no-config.toml"),
                    "STOCKADE_FORENSICS_DIR": str(workdir / "forensics"),
                    "STOCKADE_SECCOMP_DIR": str(workdir / "seccomp"),
                    # Its own nftables table (inet and bridge), never another test's; the
                    # creation time in the name lets scripts/clean-test.sh remove leftovers.
                    "STOCKADE_NFT_TABLE": f"sttest_{int(time.time())}_{uuid.uuid4().hex[:6]}", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        _made.append(self)

    def start(self, timeout: float = 60.0) -> "EnforcerProcess":
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n==== start {self.starts} ====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "enforcer.main", "--socket", self.socket, "--db", self.db,
             "--log-level", "DEBUG", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(REPO),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"enforcer exited {self.proc.returncode} at start:\n{self.log()[-4000:]}")
            try:
                socket_call(self.socket, "hello", timeout=2)
                return self
            except (OSError, RuntimeError, ValueError):
                time.sleep(0.1)
        raise RuntimeError(f"enforcer did not answer within {timeout:g}s:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"enforcer did not stop within {timeout:g}s of signal {sig}")

    @contextlib.contextmanager
    def session(self, timeout: float = 60.0) -> Iterator["EnforcerProcess"]:
        """start() it, yield it, then stop_and_clean(), once, also when start() or the body
        fails. The body may stop and start it again in between (stop() of a stopped one is
        a no-op)."""
        try:
            yield self.start(timeout)
        finally:
            self.stop_and_clean()

    def stop_and_clean(self) -> None:
        """stop(), then remove_nft_table() even when stop() raises (its error goes on)."""
        try:
            self.stop()
        finally:
            self.remove_nft_table()

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> "EnforcerProcess":
        self.stop()
        return self.start()

    def call(self, op: str, **args: Any) -> Any:
        return socket_call(self.socket, op, **args)

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "console.cli", "--socket", self.socket, *args],
                              capture_output=True, text=True, timeout=timeout, cwd=str(REPO))
        if check and proc.returncode != 0:
            raise AssertionError(f"stockade {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    @property
    def nft_table(self) -> str:
        return self.env["STOCKADE_NFT_TABLE"]

    def remove_nft_table(self) -> None:
        """Delete this enforcer's nftables table (it outlives the enforcer on purpose)."""
        for family in ("inet", "bridge"):
            sh("nft", "delete", "table", family, self.nft_table, check=False)
        Path(f"/run/stockade/nft-{self.nft_table}.lock").unlink(missing_ok=True)
        # Its bpffs pins too: they keep its programs attached (kill-on-exec) after it stops.
        pins = Path(self.pin_dir) if self.pin_dir else None
        if pins is not None and pins.exists():
            for p in sorted(pins.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            pins.rmdir()

    @property
    def pin_dir(self) -> str:
        """This enforcer's folder in bpffs ("" when pinning is off)."""
        configured = self.env.get("STOCKADE_BPF_PIN_DIR", "")
        if configured == "off":
            return ""
        return configured or f"/sys/fs/bpf/stockade/{self.nft_table}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
