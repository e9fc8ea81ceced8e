"""The store's write-behind flush: how long committing a flood's queue takes.

A flood queues thousands of writes (new incidents, growing counts, profile entries); until
they are committed, a crash loses them. Compares, on the same real SQLite file in WAL mode,
the baseline of one aiosqlite round trip per statement with `Database.flush`, which sends a
run of the same statement as one executemany. Prints figures and the ratio; asserts nothing.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from enforcer.store.database import Database  # noqa: E402

N = 20_000
INSERT = "INSERT INTO audit (time, uid, user, action, target, args, result) VALUES (?, ?, ?, ?, ?, ?, ?)"


def rows(start: int) -> list[tuple[str, tuple[object, ...]]]:
    # Mostly new incidents with count updates between them, as a flood queues them.
    out: list[tuple[str, tuple[object, ...]]] = []
    for i in range(start, start + N):
        out.append((INSERT, (time.time(), 0, "bench", "alert", f"c{i % 50}", "{}", "ok")))
        if i % 4 == 0:
            out.append(("UPDATE audit SET result = ? WHERE id = ?", (f"count {i}", i // 2 + 1)))
    return out


async def per_statement(db: Database, batch: list[tuple[str, tuple[object, ...]]]) -> float:
    assert db.conn is not None
    t0 = time.perf_counter()
    async with db._write_lock:  # the background flusher shares the connection
        await db.conn.execute("BEGIN IMMEDIATE")
        for sql, params in batch:
            await db.conn.execute(sql, params)
        await db.conn.execute("COMMIT")
    return time.perf_counter() - t0


async def flushed(db: Database, batch: list[tuple[str, tuple[object, ...]]]) -> float:
    t0 = time.perf_counter()
    for sql, params in batch:
        db.enqueue(sql, params)
    await db.flush()
    return time.perf_counter() - t0


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="stockade-bench-store-") as tmp:
        db = Database(str(Path(tmp) / "bench.db"))
        await db.open()
        try:
            best_base = best_flush = float("inf")
            for round_ in range(3):
                batch = rows(round_ * 2 * N)
                best_base = min(best_base, await per_statement(db, batch))
                best_flush = min(best_flush, await flushed(db, rows(round_ * 2 * N + N)))
            n = len(batch)
            print(f"== committing {n} queued writes (best of 3, same SQLite file, WAL)")
            print(f"one round trip per statement   {best_base * 1000:8.1f} ms  {n / best_base:10.0f} writes/s")
            print(f"Database.flush (executemany)   {best_flush * 1000:8.1f} ms  {n / best_flush:10.0f} writes/s")
            print(f"ratio flush / baseline throughput: {best_base / best_flush:.1f}x")
        finally:
            await db.close()


if __name__ == "__main__":
    asyncio.run(main())
