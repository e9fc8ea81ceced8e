"""Where the enforcer is and how to reach it: a local unix socket, or a remote one over SSH.

A target is a socket path, `unix:///path`, or `ssh://[user@]host[:port][/path/to/enforcer.sock]`.
For SSH, the system OpenSSH client runs `stockade dial-stdio` on the remote host (as Docker's
`ssh://` does with `docker system dial-stdio`) and its stdout/stdin carry the protocol, so
~/.ssh/config, agents, jump hosts and known_hosts work as usual. `STOCKADE_SSH_OPTS` adds
options (shlex-split, e.g. `-F cfg -i key`); `STOCKADE_REMOTE_STOCKADE` names the remote
command when `stockade` is not on the remote's non-interactive PATH.

Failures become one line (`TransportError`): ssh's stderr and exit status tell the causes
apart (refused, timed out, authentication, host key, no `stockade` there, the remote socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shlex
from collections import deque
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import unquote

DEFAULT_SOCKET = "/run/stockade/enforcer.sock"
UNIX_CONNECT_TIMEOUT = 3.0
SSH_CONNECT_TIMEOUT = 15.0  # ssh's handshake plus the remote's python start: slower than a socket
SSH_OPTS_ENV = "STOCKADE_SSH_OPTS"
REMOTE_COMMAND_ENV = "STOCKADE_REMOTE_STOCKADE"
DIAL_PREFIX = "stockade dial-stdio: "  # the line console.dial prints when it cannot reach the socket
STDERR_KEPT = 40  # lines of ssh's stderr kept for the diagnosis
STDERR_LINE_MAX = 500

_HOST = re.compile(r"^[A-Za-z0-9_.%-]+$")
_HOST6 = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.$-]*$")


def inert(text: str) -> str:
    """The remote's words (its stderr) with control characters as visible \\xNN escapes:
    whoever controls the remote host must not reach the terminal that shows the message."""
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in text)


def default_socket_path() -> str:
    return os.environ.get("STOCKADE_SOCKET") or DEFAULT_SOCKET


class TransportError(Exception):
    """The enforcer could not be reached; the message is one line."""


class TargetError(ValueError):
    """A target that is not one (the message is one line)."""


@dataclass(frozen=True)
class Target:
    scheme: str  # "unix" or "ssh"
    path: str | None  # unix: the socket; ssh: the remote socket, None for the remote's default
    host: str = ""
    user: str | None = None
    port: int | None = None

    @property
    def is_ssh(self) -> bool:
        return self.scheme == "ssh"

    @property
    def label(self) -> str:
        """Short, for headers and messages: `user@host:port`, or `local` for a unix socket."""
        if not self.is_ssh:
            return "local"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")

    @property
    def display(self) -> str:
        """The whole target: the socket path, or the canonical ssh:// URL."""
        if not self.is_ssh:
            return self.path or ""
        return f"ssh://{self.label}{self.path or ''}"


def parse_target(text: str | None) -> Target:
    """A socket path, `unix:///path` or `ssh://[user@]host[:port][/socket]`; TargetError otherwise."""
    if text is None or not text.strip():
        return Target("unix", default_socket_path())
    text = text.strip()
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise TargetError("a target may not contain control characters")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return Target("unix", text)
    scheme = scheme.lower()
    if scheme == "unix":
        if not rest.startswith("/"):
            raise TargetError(f"{text!r}: a unix target is unix:///absolute/path")
        return Target("unix", rest)
    if scheme != "ssh":
        raise TargetError(f"{text!r}: unsupported scheme {scheme}:// (use ssh://[user@]host[:port][/socket] "
                          "or a socket path)")
    return _parse_ssh(text, rest)


def _parse_ssh(text: str, rest: str) -> Target:
    if "?" in rest or "#" in rest:
        raise TargetError(f"{text!r}: an ssh target has no query or fragment")
    netloc, slash, path_part = rest.partition("/")
    user: str | None = None
    if "@" in netloc:
        user, _, netloc = netloc.rpartition("@")
        user = unquote(user)
        if ":" in user:
            raise TargetError(f"{text!r}: no passwords in a target (use a key or an agent)")
        if not _USER.match(user):
            raise TargetError(f"{text!r}: {user!r} is not a user name")
    port: int | None = None
    if netloc.startswith("["):
        host, bracket, after = netloc[1:].partition("]")
        if not bracket or not _HOST6.match(host):
            raise TargetError(f"{text!r}: a bracketed host is an IPv6 address, [::1]")
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            raise TargetError(f"{text!r}: unexpected {after!r} after the host")
    else:
        if netloc.count(":") > 1:
            raise TargetError(f"{text!r}: put an IPv6 address in brackets, ssh://[::1]:22")
        host, colon, port_text_ = netloc.partition(":")
        port_text = port_text_ if colon else None
        if host.startswith("-"):  # ssh would read it as an option
            raise TargetError(f"{text!r}: a host name cannot start with '-'")
        if host and not _HOST.match(host):
            raise TargetError(f"{text!r}: {host!r} is not a host name")
    if not host:
        raise TargetError(f"{text!r}: no host (ssh://[user@]host[:port][/socket])")
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise TargetError(f"{text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    path = unquote(slash + path_part) if slash else ""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise TargetError(f"{text!r}: the socket path may not contain control characters")
    return Target("ssh", path if path not in ("", "/") else None, host, user, port)


# -- ssh -------------------------------------------------------------------------------------
def ssh_options_from_env() -> list[str]:
    text = os.environ.get(SSH_OPTS_ENV, "")
    try:
        return shlex.split(text)
    except ValueError as e:
        raise TransportError(f"{SSH_OPTS_ENV} is not valid shell words: {e}") from None


def remote_command(target: Target) -> str:
    """The command line the remote shell runs, every word quoted."""
    try:
        stockade = shlex.split(os.environ.get(REMOTE_COMMAND_ENV, "")) or ["stockade"]
    except ValueError as e:
        raise TransportError(f"{REMOTE_COMMAND_ENV} is not valid shell words: {e}") from None
    words = [*stockade, "dial-stdio"]
    if target.path:
        words += ["--socket", target.path]
    return " ".join(shlex.quote(w) for w in words)


def ssh_argv(target: Target, connect_timeout: float = SSH_CONNECT_TIMEOUT,
             extra: Sequence[str] | None = None) -> list[str]:
    """`ssh [opts] -T -x -o BatchMode=yes ... [-l user] [-p port] -- host <stockade dial-stdio ...>`.
    The user's options come first: for `-o`, ssh keeps the first value it sees."""
    extra = list(ssh_options_from_env() if extra is None else extra)
    argv = ["ssh", *extra, "-T", "-x", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, math.ceil(connect_timeout))}",
            # A host that vanishes mid-session (no FIN, no RST) is noticed in about 30 s,
            # not at TCP's timeout: the console then says so and reconnects.
            "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"]
    if target.user:
        argv += ["-l", target.user]
    if target.port:
        argv += ["-p", str(target.port)]
    return [*argv, "--", target.host, remote_command(target)]


_HOSTKEY_CHANGED = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key for", "POSSIBLE DNS SPOOFING")
_HOSTKEY_UNKNOWN = ("host key is known for", "No matching host key", "have requested strict checking")


def explain_ssh_failure(label: str, returncode: int | None, stderr: Sequence[str],
                        timed_out: float | None = None) -> str:
    """One line that says why an ssh child ended (or hung) before the enforcer answered."""
    lines = [ln.strip() for ln in stderr if ln.strip()]
    text = "\n".join(lines)

    def has(*needles: str) -> bool:
        return any(n.lower() in text.lower() for n in needles)

    dial = next((ln[len(DIAL_PREFIX):] for ln in reversed(lines) if ln.startswith(DIAL_PREFIX)), None)
    if dial:
        return f"{label}: {dial}"
    if timed_out is not None:
        last = f" ({lines[-1]})" if lines else ""
        return f"ssh {label}: timed out after {timed_out:g} s before the enforcer answered{last}"
    if has("Connection refused"):
        return f"ssh {label}: connection refused (no sshd listening there?)"
    if has("Connection timed out", "Operation timed out"):
        return f"ssh {label}: connection timed out"
    if has("Could not resolve hostname", "Name or service not known", "Temporary failure in name resolution"):
        return f"ssh {label}: unknown host name"
    if has("No route to host", "Network is unreachable", "Host is unreachable"):
        return f"ssh {label}: host unreachable"
    if has(*_HOSTKEY_CHANGED):
        return (f"ssh {label}: the host key does not match known_hosts (REMOTE HOST IDENTIFICATION HAS CHANGED); "
                "not connecting")
    if has(*_HOSTKEY_UNKNOWN) or has("Host key verification failed"):
        return (f"ssh {label}: the host key is not in known_hosts and BatchMode cannot ask; "
                "connect once with ssh, or add it with ssh-keyscan")
    denied = next((ln[ln.index("Permission denied"):] for ln in lines if "Permission denied (" in ln), None) \
        or next((ln for ln in lines if "Too many authentication failures" in ln), None)
    if denied:
        return f"ssh {label}: authentication failed: {denied.rstrip('.')} (check the user, key or agent)"
    if returncode == 127 or (has("stockade") and has("not found")):
        return (f"ssh {label}: the remote has no `stockade` on its PATH (install it there, "
                f"or set {REMOTE_COMMAND_ENV})")
    if has("Connection closed by", "Connection reset by", "kex_exchange_identification"):
        return f"ssh {label}: the server closed the connection ({lines[-1]})"
    if returncode == 255:
        return f"ssh {label}: failed ({lines[-1] if lines else 'exit 255, no message'})"
    if returncode is not None and returncode != 0:
        return f"ssh {label}: the remote command exited {returncode}" + (f" ({lines[-1]})" if lines else "")
    return f"ssh {label}: the connection closed before the enforcer answered" + (f" ({lines[-1]})" if lines else "")


class Stream:
    """A byte stream to the enforcer: a reader, a writer, and how to end it."""

    def __init__(self, target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.target = target
        self.reader = reader
        self.writer = writer

    async def explain(self, timed_out: float | None = None) -> str | None:
        """Why the stream ended before the enforcer answered, if the transport knows more."""
        return None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def open_unix(target: Target, timeout: float, limit: int) -> Stream:
    path = target.path or default_socket_path()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path, limit=limit), timeout)
    except FileNotFoundError:
        raise TransportError(f"cannot reach the enforcer at {path}: no such socket (is stockade-enforcer running?)") from None
    except PermissionError:
        raise TransportError(f"cannot reach the enforcer at {path}: permission denied (join group {_group_of(path)})") from None
    except (ConnectionRefusedError, OSError, asyncio.TimeoutError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise TransportError(f"cannot reach the enforcer at {path}: {reason}") from None
    return Stream(target, reader, writer)


class SshStream(Stream):
    """The ssh child's stdout and stdin; its stderr is read all along (kept for `explain`)."""

    def __init__(self, target: Target, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
        super().__init__(target, proc.stdout, proc.stdin)
        self.proc = proc
        self.stderr: deque[str] = deque(maxlen=STDERR_KEPT)
        self._stderr_task = asyncio.create_task(self._read_stderr(proc.stderr), name="ssh-stderr")

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while True:
                line = await stream.readline()
                if not line:
                    return
                self.stderr.append(inert(line.decode("utf-8", "replace").rstrip("\r\n")[:STDERR_LINE_MAX]))

    async def explain(self, timed_out: float | None = None) -> str:
        if timed_out is None:
            # The child closed its stdout: it is ending; give it a moment to say why.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self.proc.returncode is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1)
            timed_out = None
        return explain_ssh_failure(self.target.label, self.proc.returncode, list(self.stderr), timed_out)

    async def close(self) -> None:
        """Ends the ssh child (and with it the remote dial-stdio): no orphans."""
        with contextlib.suppress(Exception):
            self.writer.close()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 3)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        self._stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._stderr_task


async def open_ssh(target: Target, timeout: float, limit: int) -> SshStream:
    argv = ssh_argv(target, timeout)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=limit,
            # Its own session: no controlling terminal (it cannot prompt on or draw over the
            # console's screen) and the terminal's signals are ours to handle.
            start_new_session=True)
    except FileNotFoundError:
        raise TransportError("cannot reach the enforcer over ssh: no `ssh` client here (install openssh-client)") from None
    except OSError as e:
        raise TransportError(f"cannot start ssh: {e.strerror or e}") from None
    return SshStream(target, proc)


async def open_stream(target: Target, timeout: float, limit: int) -> Stream:
    if target.is_ssh:
        return await open_ssh(target, timeout, limit)
    return await open_unix(target, timeout, limit)


def _group_of(path: str) -> str:
    """The group that may open the socket, to name in a permission error."""
    import grp

    try:
        gid = os.stat(path).st_gid
    except OSError:
        return "stockade"
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
