"""The demo's host side, one small process started by scripts/demo.sh:

- a threat-feed server on 127.0.0.1 that serves demo/feeds/*.txt with the attacker's address
  and the exploit kit's sha256 filled in (so the feeds always match the running demo);
- the apps' steady workload: a visitor reading the blog (which queries its database) and
  checking the pinger's ping form, through their ports published on 127.0.0.1.

Only 127.0.0.1 is ever contacted. The process stops by itself after --max-hours.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEMO = Path(__file__).resolve().parent
FEEDS = DEMO / "feeds"
KIT = DEMO / "images" / "attacker" / "www" / "kit.sh"


@dataclass(frozen=True)
class FeedValues:
    attacker_ip: str
    kit_sha256: str


def kit_sha256(path: Path = KIT) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_feed(name: str, values: FeedValues) -> bytes | None:
    """The feed file demo/feeds/NAME with its placeholders filled in; None if there is none."""
    if "/" in name or not name.endswith(".txt"):
        return None
    path = FEEDS / name
    if not path.is_file():
        return None
    text = path.read_text()
    text = text.replace("{attacker_ip}", values.attacker_ip).replace("{kit_sha256}", values.kit_sha256)
    return text.encode()


def feed_server(port: int, values: FeedValues) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "stockade-demo-feeds/1"

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            name = self.path.split("?", 1)[0].lstrip("/")
            body = b"ok\n" if name == "health" else render_feed(name, values)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log(f"feeds: {format % args}")

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, flush=True)


class Visitor:
    """Steady, learnable traffic: the same few requests in a loop, every `interval` seconds.
    A failing target is logged when it starts and stops failing, not on every try."""

    lock = threading.Lock()

    def __init__(self, blog_port: int, pinger_port: int, interval: float) -> None:
        self.interval = interval
        self.targets = [
            f"http://127.0.0.1:{blog_port}/",
            *(f"http://127.0.0.1:{blog_port}/?post={n}" for n in (1, 2, 3)),
            f"http://127.0.0.1:{pinger_port}/",
            f"http://127.0.0.1:{pinger_port}/ping?host=127.0.0.1",
        ]
        self.failing: set[str] = set()
        self.requests = 0

    def visit(self, url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                reply.read()
            if url in self.failing:
                self.failing.discard(url)
                log(f"visitor: {url} answers again")
        except (OSError, urllib.error.URLError) as e:
            if url not in self.failing:
                self.failing.add(url)
                log(f"visitor: {url} fails: {e}")
        with self.lock:
            self.requests += 1

    def run(self, stop: threading.Event) -> None:
        # Several readers at once, as a real blog has: the web server and the database then
        # learn their concurrent steady state (more php-cgi children, more database threads).
        with ThreadPoolExecutor(max_workers=len(self.targets)) as pool:
            while not stop.is_set():
                list(pool.map(self.visit, self.targets))
                stop.wait(self.interval)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get
    p.add_argument("--feed-port", type=int, default=int(env("STOCKADE_DEMO_FEED_PORT", "8787")))
    p.add_argument("--blog-port", type=int, default=int(env("STOCKADE_DEMO_BLOG_PORT", "8080")))
    p.add_argument("--pinger-port", type=int, default=int(env("STOCKADE_DEMO_PINGER_PORT", "8081")))
    p.add_argument("--attacker-ip", default=env("STOCKADE_DEMO_ATTACKER_IP", "10.199.77.66"))
    p.add_argument("--interval", type=float, default=2.0, help="seconds between rounds of visits")
    p.add_argument("--max-hours", type=float, default=12.0, help="stop by itself after this long")
    args = p.parse_args(argv)
    values = FeedValues(attacker_ip=args.attacker_ip, kit_sha256=kit_sha256())
    try:
        server = feed_server(args.feed_port, values)
    except OSError as e:
        print(f"hostside: cannot serve feeds on 127.0.0.1:{args.feed_port}: {e.strerror or e}", file=sys.stderr)
        return 1
    stop = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True, name="feeds").start()
    visitor = Visitor(args.blog_port, args.pinger_port, args.interval)
    threading.Thread(target=visitor.run, args=(stop,), daemon=True, name="visitor").start()
    log(f"feeds on http://127.0.0.1:{args.feed_port}/ (attacker {values.attacker_ip}, kit {values.kit_sha256[:12]}...); "
        f"visiting 127.0.0.1:{args.blog_port} and 127.0.0.1:{args.pinger_port} every {args.interval:g} s")
    try:
        stop.wait(args.max_hours * 3600)
    except KeyboardInterrupt:
        pass
    stop.set()
    server.shutdown()
    log(f"stopping after {visitor.requests} visits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
