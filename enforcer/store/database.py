"""The one SQLite connection: opening, migrations, and a batched write-behind queue.

Hot paths (events, alerts) never await the database per event: they `enqueue` writes and
a background task commits them every FLUSH_INTERVAL in batches (one transaction each).

What a crash can lose (docs/failsafe.md): a kill -9 loses the writes still queued, i.e. at
most about FLUSH_INTERVAL of them plus the batch whose COMMIT had not returned; a
committed batch survives (WAL, synchronous=NORMAL: only a power cut may lose the last ones).

When the database refuses writes (disk full, read-only, locked), the batch is kept and
retried with back-off; the queue is bounded (MAX_PENDING): beyond it new writes are
dropped and counted (`dropped`), never silently. The store says once that it cannot write
and once that it writes again. Alerts do not depend on it: they are published to socket
subscribers and logged before they are queued here.
"""

from __future__ import annotations

import asyncio
import itertools
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
    MAX_PENDING = 200_000  # writes held while the database refuses them (~100 MB at most)

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: aiosqlite.Connection | None = None
        self._queue: deque[tuple[str, Params]] = deque()
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        # One write at a time: a statement run while a batch's BEGIN..COMMIT is open would
        # join (or break) that transaction ("cannot start a transaction within a transaction").
        self._write_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.last_error = ""
        self.last_error_time = 0.0
        self.writes_committed = 0
        self.dropped = 0  # writes refused because the queue was full (the database could not write)
        self.rejected = 0  # statements the database refused for good (a bug): dropped alone
        self.failing_since = 0.0  # when the database last started refusing writes; 0 when it writes
        self._committed_at_failure = 0
        self._dropped_at_failure = 0
        self._drop_logged = False

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
                row_id = cur.lastrowid or 0
        except sqlite3.OperationalError as e:
            self._note_error(e)
            self._failing()
            raise StoreError(f"database write failed: {e}") from None
        self._writing_again()
        return row_id

    async def execute_many(self, statements: Iterable[tuple[str, Params]]) -> None:
        """Run several writes now, in one transaction."""
        assert self.conn, "database not open"
        try:
            async with self._write_lock:
                await self.conn.execute("BEGIN IMMEDIATE")
                try:
                    # A run of the same statement is one executemany: one trip to the
                    # database thread instead of one per row (a flood queues thousands).
                    for sql, run in itertools.groupby(statements, key=lambda st: st[0]):
                        await self.conn.executemany(sql, [params for _, params in run])
                    await self.conn.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
        except sqlite3.OperationalError as e:
            self._note_error(e)
            self._failing()
            raise StoreError(f"database write failed: {e}") from None

    async def _rollback(self) -> None:
        # After SQLITE_FULL (and some I/O errors) SQLite has already rolled back: a second
        # ROLLBACK would fail and hide the real error.
        assert self.conn
        if self.conn.in_transaction:
            try:
                await self.conn.execute("ROLLBACK")
            except sqlite3.OperationalError as e:
                log.debug("store: rollback: %s", e)

    # -- write-behind -----------------------------------------------------------------
    def enqueue(self, sql: str, params: Params = ()) -> None:
        """Queue a write for the next batch; never blocks, never raises. Beyond MAX_PENDING
        (the database has been refusing writes for a while) the write is dropped and counted."""
        if len(self._queue) >= self.MAX_PENDING:
            if not self._drop_logged:
                self._drop_logged = True
                log.error("store: %d writes are waiting for the database; dropping new ones (counted in "
                          "status store.dropped_writes) until it accepts writes again", len(self._queue))
            self.dropped += 1
            return
        self._queue.append((sql, params))
        if len(self._queue) >= self.MAX_BATCH:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> bool:
        """Commit everything queued so far; False (and kept) if the database refused."""
        async with self._flush_lock:  # two flushes would commit the same batch twice
            return await self._flush()

    async def _flush(self) -> bool:
        wrote = False
        while self._queue:
            batch = [self._queue[i] for i in range(min(len(self._queue), self.MAX_BATCH))]
            try:
                await self.execute_many(batch)
            except StoreError:
                return False
            except sqlite3.DatabaseError as e:
                # A statement that can never succeed (a bug, a constraint) must not block the
                # queue forever, nor take the good writes of its batch with it: one by one.
                log.error("store: a batch was refused (%s); writing its statements one by one", e)
                try:
                    await self._write_one_by_one(batch)
                except StoreError:
                    return False
            for _ in batch:
                self._queue.popleft()
            self.writes_committed += len(batch)
            wrote = True
        if wrote:
            self._writing_again()
        return True

    async def _write_one_by_one(self, batch: list[tuple[str, Params]]) -> None:
        for sql, params in batch:
            try:
                await self.execute_many([(sql, params)])
            except StoreError:
                raise
            except sqlite3.DatabaseError as e:
                self.rejected += 1
                log.error("store: dropping a write the database refuses (%s): %s", e, " ".join(sql.split())[:120])

    def _failing(self) -> None:
        if self.failing_since:
            return
        self.failing_since = time.time()
        self._committed_at_failure = self.writes_committed
        self._dropped_at_failure = self.dropped
        log.error("store: cannot write to %s (%s); alerts still reach subscribers and this log; up to %d "
                  "writes are held and retried until it can", self.path, self.last_error or "refused",
                  self.MAX_PENDING)

    def _writing_again(self) -> None:
        if not self.failing_since:
            self.last_error = ""
            return
        self._drop_logged = False
        log.warning("store: writing to %s again after %.1f s: %d held writes committed, %d dropped",
                    self.path, time.time() - self.failing_since,
                    self.writes_committed - self._committed_at_failure, self.dropped - self._dropped_at_failure)
        self.failing_since = 0.0
        self.last_error = ""

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
        log.debug("store: %s", msg)  # _failing says it once, clearly
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
