"""Queries for threat feeds: the registry, the last good body of each feed (so a restart
loads what was last downloaded without asking the publisher again) and the hits."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import zlib
from typing import Any

from ..feeds.models import Feed
from .database import Database

_SETTINGS = ("url", "format", "enabled", "local", "interval", "columns", "max_bytes", "source", "description",
             "configured")


def _feed(row: sqlite3.Row) -> Feed:
    return Feed(
        name=row["name"], url=row["url"], format=row["format"], enabled=bool(row["enabled"]),
        local=bool(row["local"]), interval=row["interval"], columns=json.loads(row["columns"] or "{}"),
        max_bytes=row["max_bytes"], source=row["source"], configured=bool(row["configured"]),
        description=row["description"],
        created=row["created"], last_sync=row["last_sync"], last_attempt=row["last_attempt"],
        status=row["status"], etag=row["etag"], last_modified=row["last_modified"], entries=row["entries"],
        rejected=row["rejected"], dropped=row["dropped"], error=row["error"], hits=row["hits"],
    )


class FeedRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- registry -------------------------------------------------------------------------
    async def all(self) -> list[Feed]:
        return [_feed(r) for r in await self.db.fetchall("SELECT * FROM feeds ORDER BY name")]

    async def get(self, name: str) -> Feed | None:
        row = await self.db.fetchone("SELECT * FROM feeds WHERE name = ?", (name,))
        return _feed(row) if row else None

    async def add(self, feed: Feed) -> None:
        await self.db.execute(
            "INSERT INTO feeds (name, url, format, enabled, local, interval, columns, max_bytes, source,"
            " configured, description, created, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (feed.name, feed.url, feed.format, int(feed.enabled), int(feed.local), feed.interval,
             json.dumps(feed.columns), feed.max_bytes, feed.source, int(feed.configured), feed.description,
             feed.created or time.time(), feed.status),
        )

    async def update_settings(self, name: str, **values: Any) -> None:
        """Change what a person or the config decides (not sync state)."""
        unknown = set(values) - set(_SETTINGS)
        if unknown:
            raise ValueError(f"not feed settings: {sorted(unknown)}")
        if not values:
            return
        params = [json.dumps(v) if k == "columns" else int(v) if isinstance(v, bool) else v
                  for k, v in values.items()]
        assignments = ", ".join(f"{k} = ?" for k in values)
        await self.db.execute(f"UPDATE feeds SET {assignments} WHERE name = ?", (*params, name))

    async def remove(self, name: str) -> bool:
        existed = await self.get(name) is not None
        await self.db.execute_many([
            ("DELETE FROM feed_bodies WHERE name = ?", (name,)),
            ("DELETE FROM feeds WHERE name = ?", (name,)),
        ])
        return existed

    # -- sync state and the last good body ------------------------------------------------
    async def record_sync(self, feed: Feed, body: bytes | None = None) -> None:
        """Store the outcome of a sync; with `body`, the new last good body in the same
        transaction (its ETag and the body it names never disagree)."""
        statements: list[tuple[str, Any]] = [(
            "UPDATE feeds SET last_sync = ?, last_attempt = ?, status = ?, etag = ?, last_modified = ?,"
            " entries = ?, rejected = ?, dropped = ?, error = ? WHERE name = ?",
            (feed.last_sync, feed.last_attempt, feed.status, feed.etag, feed.last_modified, feed.entries,
             feed.rejected, feed.dropped, feed.error, feed.name),
        )]
        if body is not None:
            # Off the loop: deflating tens of megabytes would stall every event behind it.
            compressed = await asyncio.to_thread(zlib.compress, body, 6)
            statements.append((
                "INSERT INTO feed_bodies (name, body, size, fetched) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET body = excluded.body, size = excluded.size,"
                " fetched = excluded.fetched",
                (feed.name, compressed, len(body), time.time()),
            ))
        await self.db.execute_many(statements)

    async def last_body(self, name: str) -> bytes | None:
        row = await self.db.fetchone("SELECT body FROM feed_bodies WHERE name = ?", (name,))
        if row is None:
            return None
        try:
            return await asyncio.to_thread(zlib.decompress, row["body"])
        except zlib.error:
            return None

    # -- hits -----------------------------------------------------------------------------
    def record_hit(self, hit: dict[str, Any]) -> None:
        """Write-behind: called on the detector's hot path."""
        self.db.enqueue(
            "INSERT INTO feed_hits (time, feed, indicator, type, matched, container, container_id, alert_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (hit["time_epoch"], hit["feed"], hit["indicator"], hit["type"], hit["matched"], hit["container"],
             hit["container_id"], hit["alert_id"]),
        )
        self.count_hit(hit["feed"])

    def count_hit(self, feed: str) -> None:
        self.db.enqueue("UPDATE feeds SET hits = hits + 1 WHERE name = ?", (feed,))

    async def recent_hits(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM feed_hits ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]
