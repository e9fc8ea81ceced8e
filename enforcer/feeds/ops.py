"""The socket ops of the feeds layer (docs/protocol.md, "Threat feeds"): argument checks
and one-line errors; the work is the manager's."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..server import OpError, Request
from .catalogue import MIN_INTERVAL, format_problem, name_problem, url_problem
from .models import Feed
from .parsers import check_columns

if TYPE_CHECKING:
    from ..server import Server
    from .manager import FeedManager

MAX_INTERVAL = 30 * 86400.0
MAX_BYTES_LIMIT = 1 << 30


class FeedOps:
    def __init__(self, manager: "FeedManager") -> None:
        self.manager = manager

    def register(self, server: "Server") -> None:
        server.register("feeds", self.list)
        server.register("feeds.add", self.add, mutates=True, target_arg="name")
        server.register("feeds.remove", self.remove, mutates=True, target_arg="name")
        server.register("feeds.sync", self.sync, mutates=True, target_arg="name")
        server.register("feeds.set", self.set, mutates=True, target_arg="name")
        server.register("feeds.hits", self.hits)
        server.register("feeds.check", self.check)

    async def list(self, req: Request) -> list[dict[str, Any]]:
        return [self.manager.describe(f) for f in sorted(self.manager.feeds.values(), key=lambda f: f.name)]

    async def add(self, req: Request) -> dict[str, Any]:
        a = req.args
        name = a.get("name")
        problem = name_problem(name) or url_problem(a.get("url")) or format_problem(a.get("format"))
        columns = a.get("columns") or {}
        problem = problem or check_columns(columns)
        if not problem and columns and a.get("format") != "csv":
            problem = "a column mapping is only for csv feeds"
        if problem:
            raise OpError(problem, "bad_request")
        local = _bool(a, "local", False)
        enabled = _bool(a, "enabled", True)
        interval = _number(a, "interval", 3600.0, MIN_INTERVAL, MAX_INTERVAL)
        max_bytes = int(_number(a, "max_bytes", 0, 0, MAX_BYTES_LIMIT))
        existing = self.manager.feeds.get(name)
        if existing is not None and existing.source == "catalogue":
            raise OpError(f"{name} is a catalogue feed: turn it on with `stockade feeds enable {name}` "
                          "(its URL and key come from the config)", "conflict")
        if existing is not None:
            raise OpError(f"a feed named {name} exists; remove it first", "conflict")
        feed = Feed(name=name, url=a["url"], format=a["format"], enabled=enabled, local=local,
                    interval=interval, columns=dict(columns), max_bytes=max_bytes, source="user")
        await self.manager.add(feed)
        return self.manager.describe(feed)

    async def remove(self, req: Request) -> dict[str, Any]:
        name = self._feed(req).name
        await self.manager.remove(name)
        return {"removed": name}

    async def sync(self, req: Request) -> list[dict[str, Any]]:
        if req.args.get("name") is None:
            names = [f.name for f in self.manager.feeds.values() if f.enabled]
        else:
            feed = self._feed(req)
            if not feed.enabled:
                raise OpError(f"feed {feed.name} is disabled; enable it first", "conflict")
            names = [feed.name]
        results = await asyncio.gather(*(self.manager.sync(n) for n in names))
        return [r.to_dict() for r in results]

    async def set(self, req: Request) -> dict[str, Any]:
        feed = self._feed(req)
        values: dict[str, Any] = {}
        if "enabled" in req.args:
            values["enabled"] = _bool(req.args, "enabled", feed.enabled)
        if "local" in req.args:
            values["local"] = _bool(req.args, "local", feed.local)
        if "interval" in req.args:
            values["interval"] = _number(req.args, "interval", feed.interval, MIN_INTERVAL, MAX_INTERVAL)
        if not values:
            raise OpError("say what to change: enabled, local or interval", "bad_request")
        await self.manager.change(feed, **values)
        return self.manager.describe(feed)

    async def hits(self, req: Request) -> list[dict[str, Any]]:
        limit = int(_number(req.args, "limit", 200, 1, 10_000))
        feed = req.args.get("feed")
        rows = [h for h in self.manager.recent_hits if feed is None or h["feed"] == feed]
        return rows[:limit]

    async def check(self, req: Request) -> dict[str, Any]:
        """Is this address, name or digest on a loaded feed? (What the detector asks.)"""
        value = req.args.get("value")
        if not isinstance(value, str) or not value or len(value) > 512:
            raise OpError("give a value: an IP address, a domain name or a hex digest", "bad_request")
        value = value.strip()
        hit = self.manager.match_ip(value)
        if hit is None and len(value) in (32, 40, 64) and all(c in "0123456789abcdefABCDEF" for c in value):
            hit = self.manager.match_hash(value)
        if hit is None:
            hit = self.manager.match_domain(value)
        return {"value": value, "hit": hit.to_dict() if hit else None}

    def _feed(self, req: Request) -> Feed:
        name = req.args.get("name")
        if not isinstance(name, str) or not name:
            raise OpError("name a feed", "bad_request")
        feed = self.manager.feeds.get(name)
        if feed is None:
            raise OpError(f"no feed named {name[:64]!r}", "not_found")
        return feed


def _bool(args: dict[str, Any], key: str, default: bool) -> bool:
    value = args.get(key, default)
    if not isinstance(value, bool):
        raise OpError(f"{key} must be true or false", "bad_request")
    return value


def _number(args: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise OpError(f"{key} must be a number from {lo:g} to {hi:g}", "bad_request")
    return float(value)
