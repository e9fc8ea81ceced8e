"""The one SQLite connection: opening, migrations, and a batched write-behind queue.

Hot paths (events, alerts) never await the database per event: they `enqueue` writes and
a background task commits them in batches. A failed batch (disk full, database locked)
is kept and retried, so nothing is lost while the enforcer is up; `pending` and
`last_error` say how far behind the store is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Sequence

import aiosqlite

from .schema import LATEST_VERSION, MIGRATIONS

log = logging.getLogger(__name__)

Params = Sequence[Any] | dict[str, Any]


class StoreError(Exception):
    """The database cannot be used; the message is one line for the user."""


class Database:
    """Owns the aiosqlite connection. Repositories (inventory, profiles, ...) use it."""

    FLUSH_INTERVAL = 0.2
    MAX_BATCH = 5000

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: aiosqlite.Connection | None = None
        self._queue: deque[tuple[str, Params]] = deque()
        self._wake = asyncio.Event()
        # One write at a time: a statement run while a batch's BEGIN..COMMIT is open would
        # join (or break) that transaction ("cannot start a transaction within a transaction").
        self._write_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.last_error = ""
        self.last_error_time = 0.0
        self.writes_committed = 0

    # -- life cycle -------------------------------------------------------------------
    async def open(self) -> None:
        if self.path != ":memory:":
            parent = Path(self.path).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create database folder {parent}: {e.strerror}") from None
        try:
            self.conn = await aiosqlite.connect(self.path, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            await self.conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a power cut may lose the last transactions but never
            # corrupts the file; kill -9 of the process loses nothing committed.
            await self.conn.execute("PRAGMA synchronous=NORMAL")
            await self.conn.execute("PRAGMA foreign_keys=ON")
            await self.conn.execute("PRAGMA busy_timeout=5000")
            await self._migrate()
        except BaseException as e:
            if self.conn is not None:  # its worker thread would keep the process alive
                await self.conn.close()
                self.conn = None
            if isinstance(e, sqlite3.DatabaseError):
                raise StoreError(f"cannot open database {self.path}: {e}") from None
            raise
        if self.path != ":memory:":
            try:
                os.chmod(self.path, 0o600)
            except OSError:
                pass
        self._flusher = asyncio.create_task(self._flush_loop(), name="store-flush")

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._flusher:
            try:
                await asyncio.wait_for(self._flusher, timeout=10)
            except (asyncio.TimeoutError, Exception) as e:  # noqa: BLE001 - shutting down
                log.warning("store: final flush incomplete (%s); %d writes pending", e, len(self._queue))
        if self.conn:
            await self.conn.close()
            self.conn = None

    async def _migrate(self) -> None:
        assert self.conn
        async with self.conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = row[0] if row else 0
        if version > LATEST_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, newer than this "
                f"Stockade ({LATEST_VERSION}); upgrade Stockade"
            )
        for number, sql in MIGRATIONS:
            if number <= version:
                continue
            log.info("store: migrating schema to version %d", number)
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(sql):
                    await self.conn.execute(statement)
                await self.conn.execute(f"PRAGMA user_version={number}")
                await self.conn.execute("COMMIT")
            except Exception:
                await self.conn.execute("ROLLBACK")
                raise

    # -- queries ----------------------------------------------------------------------
    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        assert self.conn, "database not open"
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        assert self.conn, "database not open"
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one write now, in its own transaction; returns lastrowid."""
        assert self.conn, "database not open"
        try:
            async with self._write_lock, self.conn.execute(sql, params) as cur:
                return cur.lastrowid or 0
        except sqlite3.OperationalError as e:
            self._note_error(e)
            raise StoreError(f"database write failed: {e}") from None

    async def execute_many(self, statements: Iterable[tuple[str, Params]]) -> None:
        """Run several writes now, in one transaction."""
        assert self.conn, "database not open"
        try:
            async with self._write_lock:
                await self.conn.execute("BEGIN IMMEDIATE")
                try:
                    for sql, params in statements:
                        await self.conn.execute(sql, params)
                    await self.conn.execute("COMMIT")
                except BaseException:
                    await self.conn.execute("ROLLBACK")
                    raise
        except sqlite3.OperationalError as e:
            self._note_error(e)
            raise StoreError(f"database write failed: {e}") from None

    # -- write-behind -----------------------------------------------------------------
    def enqueue(self, sql: str, params: Params = ()) -> None:
        """Queue a write for the next batch; never blocks, never raises."""
        self._queue.append((sql, params))
        if len(self._queue) >= self.MAX_BATCH:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> bool:
        """Commit everything queued so far; False (and kept) if the database refused."""
        while self._queue:
            batch = [self._queue[i] for i in range(min(len(self._queue), self.MAX_BATCH))]
            try:
                await self.execute_many(batch)
            except StoreError:
                return False
            except sqlite3.DatabaseError as e:
                # A statement that can never succeed (a bug) must not block the queue forever.
                self._note_error(e)
                log.error("store: dropping a batch that cannot be written: %s", e)
            for _ in batch:
                self._queue.popleft()
            self.writes_committed += len(batch)
        if self.last_error and time.time() - self.last_error_time > 0:
            self.last_error = ""
        return True

    async def _flush_loop(self) -> None:
        backoff = self.FLUSH_INTERVAL
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            ok = await self.flush()
            if self._closing:
                return
            # Disk full or locked: retry, but not in a tight loop.
            backoff = self.FLUSH_INTERVAL if ok else min(backoff * 2, 5.0)

    def _note_error(self, e: Exception) -> None:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if msg != self.last_error:
            log.warning("store: %s", msg)
        self.last_error = msg
        self.last_error_time = time.time()


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (sqlite3 runs one per execute)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines():
        stripped = line.split("--", 1)[0]
        buf += stripped + "\n"
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
