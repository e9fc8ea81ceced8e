"""A feed publisher on 127.0.0.1 for tests: real HTTP on a real socket, with the faults a
sync must survive (304, 500, truncated and oversize bodies, wrong content types, redirect
loops). Runs on a thread; each route is set and changed by the test."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain; charset=utf-8"
    etag: str = ""  # served, and answered with 304 when the client sends it back
    last_modified: str = ""
    location: str = ""  # for 3xx
    truncate: bool = False  # announce the full length, send half, close
    delay: float = 0.0  # seconds before answering (a server too slow to wait for)
    headers: dict[str, str] = field(default_factory=dict)


class FeedServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) in arrival order
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = server.routes.get(self.path)
                if route is not None and route.delay:
                    time.sleep(route.delay)
                if route is None:
                    self._send(404, b"not found\n", "text/plain")
                    return
                if route.etag and self.headers.get("If-None-Match") == route.etag:
                    self._send(304, b"", "", extra={"ETag": route.etag})
                    return
                if route.last_modified and not route.etag and self.headers.get("If-Modified-Since") == route.last_modified:
                    self._send(304, b"", "", extra={"Last-Modified": route.last_modified})
                    return
                extra = dict(route.headers)
                if route.etag:
                    extra["ETag"] = route.etag
                if route.last_modified:
                    extra["Last-Modified"] = route.last_modified
                if route.location:
                    extra["Location"] = route.location
                if route.truncate:
                    self.send_response(route.status)
                    self.send_header("Content-Type", route.content_type)
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self.wfile.write(route.body[: len(route.body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(route.status, route.body, route.content_type, extra)

            def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                if status != 304:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status != 304:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="feed-server", daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes | str | None = None, *, fixture: str = "", **kwargs: Any) -> str:
        """Set what `path` answers; returns its URL."""
        if fixture:
            body = (FIXTURES / fixture).read_bytes()
        if isinstance(body, str):
            body = body.encode()
        self.routes[path] = Route(body=body or b"", **kwargs)
        return self.url(path)

    def hits(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
