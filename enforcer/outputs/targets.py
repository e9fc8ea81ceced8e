"""Where an output sends: the URL schemes (docs/outputs.md).

- `http://`, `https://`: one JSON object per POST on a kept-alive connection (the standard
  library's http.client in the worker's thread); each socket operation has a timeout and each
  POST a total deadline (`deadline`, default HTTP_DEADLINE), so a receiver that trickles its
  answer cannot hold the worker's thread; any 2xx is delivered, anything else (a refused
  connection, a timeout, the deadline passed, a 4xx or 5xx) is retried.
- `file:///abs/path`: JSON lines appended in a worker thread; when the file would pass
  `max_bytes` (query parameter, default 10 MiB) it is rotated to PATH.1 ... PATH.`keep`
  (default 5).
- `syslog://host:port`: RFC 5424 over UDP, one message per datagram;
  `syslog+tcp://host:port`: RFC 5424 over TCP framed by octet counting (RFC 6587 3.4.1),
  which survives any byte in a message. Query `facility` (a number 0-23 or a name such as
  `local0`, the default, or `auth`).

`parse(url)` checks a URL and returns a Target or raises ValueError with one line.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import ssl
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from . import formats

HTTP_TIMEOUT = 5.0  # seconds for connect, write and read of one POST
HTTP_DEADLINE = 20.0  # seconds for one POST in all, from connecting to the answer's last byte
DEADLINE_RANGE = (1.0, 600.0)
SYSLOG_TIMEOUT = 5.0
FILE_MAX_BYTES = 10 * 1024 * 1024
FILE_KEEP = 5
UDP_MAX = 65_000  # bytes: a longer message is cut (most syslog daemons cut far earlier, e.g. rsyslog at 8 KiB)

FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
              "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, **{f"local{i}": 16 + i for i in range(8)}}
# Stockade severity -> syslog severity (2 crit, 3 err, 4 warning, 5 notice).
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5}
# RFC 5612's enterprise number for documentation examples: no private number is registered.
SD_ID = "stockade@32473"


class DeliveryError(Exception):
    """One attempt failed; the message is one line (the worker retries)."""


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_problem(headers: dict[str, str]) -> str:
    for k, v in headers.items():
        if not k or any(c in k for c in " :\r\n\t") or any(c in v for c in "\r\n"):
            return f"bad header {k!r}: want NAME:VALUE with no line breaks"
    return ""


class _Deadlined:
    """An http.client connection on which one POST, from connecting (when it must) to the last
    byte of the answer read, has `seconds` in all: every socket operation is given what is
    left (at most HTTP_TIMEOUT), so an answer trickled a byte at a time ends at the deadline.
    (An https connection's TLS handshake takes the connect's timeout as a whole: Python's ssl
    module counts a timeout over the whole handshake, seen with a trickled ServerHello.)"""

    timeout: float
    sock: Any
    deadline_at = math.inf

    def start_deadline(self, seconds: float) -> None:
        self.deadline_at = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self.deadline_at

    def left(self) -> float:
        left = self.deadline_at - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return min(left, HTTP_TIMEOUT)

    def connect(self) -> None:
        self.timeout = self.left()
        super().connect()  # type: ignore[misc]

    def send(self, data: Any) -> None:
        if self.sock is not None:
            self.sock.settimeout(self.left())
        super().send(data)  # type: ignore[misc]

    def response_class(self, sock: socket.socket, **kwargs: Any) -> http.client.HTTPResponse:
        return http.client.HTTPResponse(_TimedReads(sock, self.left), **kwargs)  # type: ignore[arg-type]


class _TimedReads:
    """What http.client.HTTPResponse reads the answer from: the socket, each read given what
    is left of the deadline."""

    def __init__(self, sock: socket.socket, left: Any) -> None:
        self.sock, self.left = sock, left

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_TimedRaw(self.sock, self.left))


class _TimedRaw(io.RawIOBase):
    def __init__(self, sock: socket.socket, left: Any) -> None:
        super().__init__()
        self.sock, self.left = sock, left
        self.raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int | None:
        self.sock.settimeout(self.left())
        return self.raw.readinto(b)

    def close(self) -> None:
        self.raw.close()
        super().close()


class _HTTP(_Deadlined, http.client.HTTPConnection):
    pass


class _HTTPS(_Deadlined, http.client.HTTPSConnection):
    pass


@dataclass
class Target:
    url: str
    scheme: str  # http | file | syslog | syslog+tcp
    headers: dict[str, str] = field(default_factory=dict)
    path: str = ""
    host: str = ""
    port: int = 0
    max_bytes: int = FILE_MAX_BYTES
    keep: int = FILE_KEEP
    facility: int = 16
    deadline: float = HTTP_DEADLINE  # http: seconds for one POST in all

    # -- life cycle (the worker owns one Target) ----------------------------------------
    def __post_init__(self) -> None:
        self._http: _HTTP | _HTTPS | None = None
        self._tcp: socket.socket | None = None
        self._udp: socket.socket | None = None
        self._lock = threading.Lock()  # one delivery at a time; close waits for it
        self.sent = 0

    def close(self) -> None:
        """Blocking (run in a thread): sockets; waits for a delivery in flight (bounded by the
        timeouts)."""
        with self._lock:
            self._close_tcp()
            self._close_http()
            if self._udp is not None:
                self._udp.close()
                self._udp = None

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _close_tcp(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None

    # -- sending ----------------------------------------------------------------------------
    def prepare(self, fmt: str, alert: Any) -> bytes:
        """One incident (a dict, or its JSON text as the outbox keeps it) as the bytes this
        target sends: the encoded payload's JSON (a JSON line for files, an RFC 5424 message
        for syslog). Pure CPU: the worker runs it on the loop, one incident at a time, so a
        batch never holds the interpreter against detection (a thread would: the GIL)."""
        decoded = json.loads(alert) if isinstance(alert, str) else alert
        payload = formats.encode(fmt, decoded)
        if self.scheme in ("syslog", "syslog+tcp"):
            return self.syslog_message(payload, decoded)
        body = json.dumps(payload, separators=(",", ":")).encode()
        return body + b"\n" if self.scheme == "file" else body

    def send(self, bodies: list[bytes]) -> None:
        """Blocking (the worker runs it in a thread): deliver prepared bodies in order; raise
        DeliveryError at the first that fails. `self.sent` says how many went (those before
        the failure are delivered: the caller acknowledges them).

        HTTP is here too, with http.client: measured (bench_outputs), httpx's async client on
        the enforcer's loop added 7 ms to the p99 of detection latency; a blocking POST in a
        thread spends its time in socket calls, which release the GIL."""
        with self._lock:
            self.sent = 0
            if self.scheme == "file":
                self._append_lines(bodies)
                self.sent = len(bodies)
            elif self.scheme == "http":
                self._send_http(bodies)
            else:
                self._send_syslog(bodies)

    def _send_http(self, bodies: list[bytes]) -> None:
        parts = urlsplit(self.url)
        path = urlunsplit(("", "", parts.path or "/", parts.query, "")) or "/"
        headers = {"Content-Type": "application/json", "User-Agent": "stockade-outputs", **self.headers}
        for body in bodies:
            if self._http is None:
                if parts.scheme.lower() == "https":
                    self._http = _HTTPS(parts.hostname or "", parts.port, timeout=HTTP_TIMEOUT,
                                        context=ssl.create_default_context())
                else:
                    self._http = _HTTP(parts.hostname or "", parts.port, timeout=HTTP_TIMEOUT)
            conn = self._http
            conn.start_deadline(self.deadline)
            try:
                conn.request("POST", path, body=body, headers={**headers, "Content-Length": str(len(body))})
                response = conn.getresponse()
                response.read(64 * 1024)  # drain (bounded) so the connection can be kept alive
                status = response.status
                if response.will_close:
                    self._close_http()
            except (OSError, http.client.HTTPException) as e:
                self._close_http()
                if conn.passed():
                    raise DeliveryError(f"no complete answer within the {self.deadline:g} s deadline "
                                        "(a receiver that answers too slowly)") from None
                reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
                raise DeliveryError(f"{type(e).__name__}: {reason}"[:200]) from None
            if not 200 <= status < 300:
                self._close_http()
                raise DeliveryError(f"HTTP {status} from the receiver")
            self.sent += 1

    def _append_lines(self, lines: list[Any]) -> None:
        """Append JSON lines (bytes, or payloads to dump) in one write, rotating first if needed."""
        data = b"".join(x if isinstance(x, bytes) else json.dumps(x, separators=(",", ":")).encode() + b"\n"
                        for x in lines)
        path = Path(self.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self.max_bytes:
                self._rotate(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            finally:
                os.close(fd)
        except OSError as e:
            raise DeliveryError(f"cannot write {path}: {e.strerror or e}") from None

    def _rotate(self, path: Path) -> None:
        for i in range(self.keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{i}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
        if self.keep > 0:
            os.replace(path, path.with_name(f"{path.name}.1"))
        else:
            path.unlink()

    def syslog_message(self, payload: dict[str, Any], alert: dict[str, Any], hostname: str = "") -> bytes:
        """One RFC 5424 message: header, structured data naming the incident, the payload as MSG."""
        severity = SYSLOG_SEVERITY.get(alert.get("severity", ""), 4)
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        host = (hostname or alert.get("host") or "-").replace(" ", "_")[:255] or "-"
        sd = (f'[{SD_ID} id="{alert.get("id")}" count="{alert.get("count", 1)}"'
              f' kind="{_sd_escape(str(alert.get("kind", "")))}" severity="{_sd_escape(str(alert.get("severity", "")))}"'
              f' container="{_sd_escape(str(alert.get("container", "")))}"]')
        body = json.dumps(payload, separators=(",", ":"))  # ASCII: no BOM needed
        return f"<{self.facility * 8 + severity}>1 {stamp} {host} stockade {os.getpid()} alert {sd} {body}".encode()

    def _send_syslog(self, messages: list[bytes]) -> None:
        if self.scheme == "syslog":
            try:
                if self._udp is None:
                    info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
                    self._udp = socket.socket(info[0], socket.SOCK_DGRAM)
                    self._udp.settimeout(SYSLOG_TIMEOUT)
                    self._udp.connect(info[4])
                for m in messages:
                    self._udp.send(m[:UDP_MAX])
                    self.sent += 1
            except OSError as e:  # e.g. ECONNREFUSED reported for an earlier datagram
                if self._udp is not None:
                    self._udp.close()
                    self._udp = None
                raise DeliveryError(f"syslog udp {self.host}:{self.port}: {e.strerror or e}") from None
            return
        try:
            if self._tcp is None:
                self._tcp = socket.create_connection((self.host, self.port), timeout=SYSLOG_TIMEOUT)
            self._tcp.sendall(b"".join(str(len(m)).encode() + b" " + m for m in messages))
        except OSError as e:
            self._close_tcp()
            raise DeliveryError(f"syslog tcp {self.host}:{self.port}: {e.strerror or e or 'timeout'}") from None
        self.sent = len(messages)


def parse(url: Any, headers: dict[str, str] | None = None, deadline: Any = None) -> Target:
    """A checked Target, or ValueError with one line. `deadline`: seconds for one HTTP POST in
    all (None: HTTP_DEADLINE)."""
    if not isinstance(url, str) or not url or len(url) > 2048 or any(c in url for c in "\r\n\t "):
        raise ValueError("url must be one http(s)://, file:// or syslog:// URL without spaces")
    headers = dict(headers or {})
    problem = _header_problem(headers)
    if problem:
        raise ValueError(problem)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"{url[:120]}: an http URL needs a host")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"{url[:120]}: bad port") from None
        if deadline is None:
            return Target(url=url, scheme="http", headers=headers)
        low, high = DEADLINE_RANGE
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not low <= deadline <= high:
            raise ValueError(f"deadline must be a number of seconds from {low:g} to {high:g}")
        return Target(url=url, scheme="http", headers=headers, deadline=float(deadline))
    if headers:
        raise ValueError("--header is for http(s) outputs only")
    if deadline is not None:
        raise ValueError("--deadline is for http(s) outputs only")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"{url[:120]}: want file:///absolute/path")
        path = os.path.normpath(parts.path)
        try:
            max_bytes = int(query.get("max_bytes", FILE_MAX_BYTES))
            keep = int(query.get("keep", FILE_KEEP))
        except ValueError:
            raise ValueError("file output: max_bytes and keep must be whole numbers") from None
        if not 4096 <= max_bytes <= 1 << 40 or not 0 <= keep <= 100:
            raise ValueError("file output: max_bytes from 4096, keep from 0 to 100")
        return Target(url=url, scheme="file", path=path, max_bytes=max_bytes, keep=keep)
    if scheme in ("syslog", "syslog+udp", "syslog+tcp"):
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url[:120]}: bad port") from None
        if not parts.hostname or not port:
            raise ValueError(f"{url[:120]}: want syslog://host:port (UDP) or syslog+tcp://host:port")
        facility_text = query.get("facility", "local0")
        facility = FACILITIES.get(facility_text) if not facility_text.isdigit() else int(facility_text)
        if facility is None or not 0 <= facility <= 23:
            raise ValueError(f"syslog facility {facility_text[:20]!r}: a number 0-23 or a name such as local0")
        return Target(url=url, scheme="syslog+tcp" if scheme == "syslog+tcp" else "syslog", host=parts.hostname,
                      port=port, facility=facility)
    raise ValueError(f"{url[:120]}: unknown scheme {scheme[:20]!r} (want http, https, file, syslog or syslog+tcp)")
