"""pinger: a tiny "is it up?" web service, written carelessly on purpose.

GET /ping?host=NAME runs `ping -c 1 -W 1 NAME` through a shell and returns its output,
so `host=127.0.0.1; id` runs `id` too: a command injection, the way into the container in
Stockade's demo. Do not copy this anywhere.
"""

from __future__ import annotations

import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

FORM = b"""<!doctype html><title>pinger</title><h1>Is it up?</h1>
<form action="/ping"><input name="host" value="127.0.0.1"><button>ping</button></form>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "pinger/1.0"

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        url = urlsplit(self.path)
        if url.path == "/":
            self.reply(200, FORM, "text/html; charset=utf-8")
        elif url.path == "/health":
            self.reply(200, b"ok\n")
        elif url.path == "/ping":
            host = parse_qs(url.query).get("host", ["127.0.0.1"])[0]
            # The bug: user input pasted into a shell command line.
            proc = subprocess.run(f"ping -c 1 -W 1 {host}", shell=True, capture_output=True, timeout=60)
            self.reply(200, proc.stdout + proc.stderr)
        else:
            self.reply(404, b"not found\n")

    def reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
        print(f"{self.address_string()} {format % args}", flush=True)


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
