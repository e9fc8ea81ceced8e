"""Ops of the threat feeds (docs/protocol.md, "Threat feeds"): argument checks and
one-line errors; the work is the feed manager's."""

from __future__ import annotations

import asyncio
from typing import Any

from ..feeds.catalogue import MIN_INTERVAL, format_problem, name_problem, url_problem
from ..feeds.manager import FeedManager
from ..feeds.models import Feed
from ..feeds.parsers import check_columns
from ..server import OpError, Request, Server
from . import args

MAX_INTERVAL = 30 * 86400.0
MAX_BYTES_LIMIT = 1 << 30


def register(server: Server, manager: FeedManager) -> None:
    ops = FeedOps(manager)
    server.register("feeds", ops.list)
    server.register("feeds.add", ops.add, mutates=True, target_arg="name")
    server.register("feeds.remove", ops.remove, mutates=True, target_arg="name")
    server.register("feeds.sync", ops.sync, mutates=True, target_arg="name")
    server.register("feeds.set", ops.set, mutates=True, target_arg="name")
    server.register("feeds.hits", ops.hits)
    server.register("feeds.check", ops.check)


class FeedOps:
    """The handlers over one manager (methods, as they share `_feed`)."""

    def __init__(self, manager: FeedManager) -> None:
        self.manager = manager

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
            raise OpError(problem, args.BAD_REQUEST)
        local = args.boolean(a, "local", False)
        enabled = args.boolean(a, "enabled", True)
        interval = args.number(a, "interval", 3600.0, MIN_INTERVAL, MAX_INTERVAL)
        max_bytes = int(args.number(a, "max_bytes", 0, 0, MAX_BYTES_LIMIT))
        existing = self.manager.feeds.get(name)
        if existing is not None and existing.source == "catalogue":
            raise OpError(f"{name} is a catalogue feed: turn it on with `stockade feeds enable {name}` "
                          "(its URL and key come from the config)", args.CONFLICT)
        if existing is not None:
            raise OpError(f"a feed named {name} exists; remove it first", args.CONFLICT)
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
                raise OpError(f"feed {feed.name} is disabled; enable it first", args.CONFLICT)
            names = [feed.name]
        results = await asyncio.gather(*(self.manager.sync(n) for n in names))
        return [r.to_dict() for r in results]

    async def set(self, req: Request) -> dict[str, Any]:
        feed = self._feed(req)
        values: dict[str, Any] = {}
        if "enabled" in req.args:
            values["enabled"] = args.boolean(req.args, "enabled", feed.enabled)
        if "local" in req.args:
            values["local"] = args.boolean(req.args, "local", feed.local)
        if "interval" in req.args:
            values["interval"] = args.number(req.args, "interval", feed.interval, MIN_INTERVAL, MAX_INTERVAL)
        if not values:
            raise OpError("say what to change: enabled, local or interval", args.BAD_REQUEST)
        await self.manager.change(feed, **values)
        return self.manager.describe(feed)

    async def hits(self, req: Request) -> list[dict[str, Any]]:
        limit = int(args.number(req.args, "limit", 200, 1, 10_000))
        feed = req.args.get("feed")
        rows = [h for h in self.manager.recent_hits if feed is None or h["feed"] == feed]
        return rows[:limit]

    async def check(self, req: Request) -> dict[str, Any]:
        """Is this address, name or digest on a loaded feed? (What the detector asks.)"""
        value = req.args.get("value")
        if not isinstance(value, str) or not value or len(value) > 512:
            raise OpError("give a value: an IP address, a domain name or a hex digest", args.BAD_REQUEST)
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
            raise OpError("name a feed", args.BAD_REQUEST)
        feed = self.manager.feeds.get(name)
        if feed is None:
            raise OpError(f"no feed named {name[:64]!r}", args.NOT_FOUND)
        return feed

