"""Queries of the alert outputs: their registry and the durable outbox (docs/outputs.md).

Rows go into the outbox through the write-behind queue (the alert path never waits for the
database); the delivery worker reads them back in id order and deletes what was delivered.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from .database import Database


@dataclass
class OutputConfig:
    name: str
    url: str
    format: str
    min_severity: str = "low"
    headers: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    delivered: int = 0
    dropped: int = 0
    deadline: float | None = None  # http: seconds for one POST in all (None: the default)


def _config(row: sqlite3.Row) -> OutputConfig:
    return OutputConfig(name=row["name"], url=row["url"], format=row["format"], min_severity=row["min_severity"],
                        headers=json.loads(row["headers"] or "{}"), created=row["created"],
                        delivered=row["delivered"], dropped=row["dropped"], deadline=row["deadline"])


class OutputsRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[OutputConfig]:
        return [_config(r) for r in await self.db.fetchall("SELECT * FROM outputs ORDER BY name")]

    async def add(self, o: OutputConfig) -> None:
        await self.db.execute(
            "INSERT INTO outputs (name, url, format, min_severity, headers, created, deadline)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (o.name, o.url, o.format, o.min_severity, json.dumps(o.headers), o.created, o.deadline))

    async def remove(self, name: str) -> None:
        await self.db.flush()  # queued outbox rows of this output must not land after it is gone
        await self.db.execute_many([("DELETE FROM outbox WHERE output = ?", (name,)),
                                    ("DELETE FROM outputs WHERE name = ?", (name,))])

    async def backlog(self) -> dict[str, tuple[int, int]]:
        """Output -> (rows waiting, largest id)."""
        rows = await self.db.fetchall("SELECT output, COUNT(*) AS n, MAX(id) AS top FROM outbox GROUP BY output")
        return {r["output"]: (r["n"], r["top"] or 0) for r in rows}

    # -- the outbox -----------------------------------------------------------------------
    def queue(self, output: str, queued: float, alert_json: str) -> None:
        """Write-behind: on the alert path."""
        self.db.enqueue("INSERT INTO outbox (output, queued, alert) VALUES (?, ?, ?)", (output, queued, alert_json))

    def drop_oldest(self, output: str, n: int, after_id: int) -> None:
        """Drop the n oldest rows not yet delivered (ids past `after_id`: a delivered row whose
        delete is still queued is not one)."""
        self.db.enqueue("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE output = ? AND id > ?"
                        " ORDER BY id LIMIT ?)", (output, after_id, n))
        self.db.enqueue("UPDATE outputs SET dropped = dropped + ? WHERE name = ?", (n, output))

    async def pending(self, output: str, after_id: int, limit: int) -> list[tuple[int, float, str]]:
        """(id, queued, the incident's JSON text): decoded by the delivery thread, not the loop."""
        rows = await self.db.fetchall(
            "SELECT id, queued, alert FROM outbox WHERE output = ? AND id > ? ORDER BY id LIMIT ?",
            (output, after_id, limit))
        return [(r["id"], r["queued"], r["alert"]) for r in rows]

    def delivered(self, output: str, ids: list[int]) -> None:
        """Write-behind: the worker remembers the last id it delivered, so a row whose delete is
        still queued is not sent twice by this process (a crash may send it again)."""
        for i in ids:
            self.db.enqueue("DELETE FROM outbox WHERE id = ?", (i,))
        self.db.enqueue("UPDATE outputs SET delivered = delivered + ? WHERE name = ?", (len(ids), output))
