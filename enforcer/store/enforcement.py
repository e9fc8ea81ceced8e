"""Queries for enforcement state: network blocks and freezes (schema version 4).

Both are written at once (awaited), not behind: an action is reported done only once the
intent is on disk, so a crash right after it cannot lose it and the next start re-applies it.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from .database import Database, StoreError


@dataclass(slots=True)
class BlockRow:
    id: int
    container_name: str
    container_id: str
    peer: str  # a container name, or a network in CIDR form ("10.0.0.5/32")
    peer_kind: str  # container | network
    port: int  # 0: every port
    proto: str  # tcp | udp | any
    created: float
    reason: str = ""
    source: str = "manual"  # manual | protect
    alert_id: int | None = None


@dataclass(slots=True)
class FreezeRow:
    container_id: str
    container_name: str
    frozen_at: float
    backend: str = ""
    reason: str = ""


class DuplicateBlock(StoreError):
    """The same (container, peer, port, proto) block is already stored."""


class EnforcementRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- blocks ---------------------------------------------------------------------------
    async def blocks(self) -> list[BlockRow]:
        rows = await self.db.fetchall("SELECT * FROM blocks ORDER BY id")
        return [_block(r) for r in rows]

    async def add_block(self, container_name: str, container_id: str, peer: str, peer_kind: str,
                        port: int, proto: str, reason: str = "", source: str = "manual",
                        alert_id: int | None = None) -> BlockRow:
        now = time.time()
        try:
            row_id = await self.db.execute(
                "INSERT INTO blocks (container_name, container_id, peer, peer_kind, port, proto, created,"
                " reason, source, alert_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (container_name, container_id, peer, peer_kind, port, proto, now, reason, source, alert_id))
        except sqlite3.IntegrityError:
            raise DuplicateBlock(f"{container_name} is already blocked from {peer}") from None
        return BlockRow(row_id, container_name, container_id, peer, peer_kind, port, proto, now,
                        reason, source, alert_id)

    async def find_block(self, container_name: str, peer: str, port: int, proto: str) -> BlockRow | None:
        row = await self.db.fetchone(
            "SELECT * FROM blocks WHERE container_name = ? AND peer = ? AND port = ? AND proto = ?",
            (container_name, peer, port, proto))
        return _block(row) if row else None

    async def remove_blocks(self, ids: list[int]) -> int:
        if not ids:
            return 0
        await self.db.execute(f"DELETE FROM blocks WHERE id IN ({','.join('?' * len(ids))})", tuple(ids))
        return len(ids)

    async def set_block_container_id(self, block_id: int, container_id: str) -> None:
        self.db.enqueue("UPDATE blocks SET container_id = ? WHERE id = ?", (container_id, block_id))

    # -- freezes --------------------------------------------------------------------------
    async def freezes(self) -> list[FreezeRow]:
        rows = await self.db.fetchall("SELECT * FROM freezes ORDER BY frozen_at")
        return [FreezeRow(r["container_id"], r["container_name"], r["frozen_at"], r["backend"], r["reason"])
                for r in rows]

    async def add_freeze(self, container_id: str, container_name: str, backend: str, reason: str = "") -> FreezeRow:
        now = time.time()
        await self.db.execute(
            "INSERT INTO freezes (container_id, container_name, frozen_at, backend, reason) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(container_id) DO UPDATE SET backend = excluded.backend",
            (container_id, container_name, now, backend, reason))
        return FreezeRow(container_id, container_name, now, backend, reason)

    async def remove_freeze(self, container_id: str) -> None:
        sql, params = "DELETE FROM freezes WHERE container_id = ?", (container_id,)
        try:
            await self.db.execute(sql, params)
        except StoreError:
            # Disk full: the container is already thawed; the record goes when writing resumes
            # (a crash before that re-freezes it at the next start: frozen never without a record).
            self.db.enqueue(sql, params)


def _block(r: sqlite3.Row) -> BlockRow:
    return BlockRow(id=r["id"], container_name=r["container_name"], container_id=r["container_id"],
                    peer=r["peer"], peer_kind=r["peer_kind"], port=r["port"], proto=r["proto"],
                    created=r["created"], reason=r["reason"], source=r["source"], alert_id=r["alert_id"])
