"""Real receivers on 127.0.0.1 for the alert outputs' tests (tests/integration/test_outputs.py,
bench/bench_outputs.py):

- HttpReceiver: an HTTP server (http.server, on a thread) that keeps every POST's body and
  headers; `down()` closes its listening socket (connections are refused), `up()` opens the
  same port again; `status` and `delay` make it fail or be slow; `trickle` (seconds a byte)
  makes it answer one byte at a time (the bodies it took go to `trickled`, not `bodies`).
- Rsyslog: Debian's rsyslogd in the foreground with a config of its own in a temp folder,
  UDP and TCP inputs on 127.0.0.1, every message's raw text (%rawmsg%) written to one file.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpReceiver:
    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.delay = 0.0
        self.trickle = 0.0
        self.trickled: list[bytes] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def up(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver._conns.add(self.connection)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.trickle:
                    self._trickle(body, receiver.trickle)
                    return
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.status
                if status == 200:
                    with receiver.lock:
                        receiver.bodies.append(body)
                        receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _trickle(self, body: bytes, seconds: float) -> None:
                """A 200 answer a byte every `seconds`, until it is all sent or the client left."""
                with receiver.lock:
                    receiver.trickled.append(body)
                self.close_connection = True
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                try:
                    for i in range(len(answer)):
                        self.wfile.write(answer[i:i + 1])
                        time.sleep(seconds)
                except OSError:
                    pass  # the client gave up

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Gone: the listening socket closed and every kept-alive connection cut."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def json(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for b in self.bodies]


RSYSLOG_CONF = """
global(workDirectory="{dir}" maxMessageSize="64k")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="raw" type="string" string="%rawmsg%\\n")
*.* action(type="omfile" file="{dir}/messages.log" template="raw")
"""


class Rsyslog:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.udp = free_port(socket.SOCK_DGRAM)
        self.tcp = free_port()
        self.log = workdir / "messages.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Rsyslog:
        binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        conf = self.dir / "rsyslog.conf"
        conf.write_text(RSYSLOG_CONF.format(dir=self.dir, udp=self.udp, tcp=self.tcp))
        with open(self.dir / "rsyslogd.out", "wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([binary, "-n", "-f", str(conf), "-i", str(self.dir / "rsyslogd.pid")],
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {(self.dir / 'rsyslogd.out').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.tcp), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rsyslogd did not listen within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def lines(self) -> list[str]:
        try:
            return self.log.read_text().splitlines()
        except FileNotFoundError:
            return []
