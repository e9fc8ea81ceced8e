"""Queries for the audit log: every action that changes state, who asked and the result."""

from __future__ import annotations

import json
import time
from typing import Any

from ..models import AuditEntry, iso_time
from .database import Database, StoreError


class AuditRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, uid: int, user: str, action: str, target: str,
                     args: dict[str, Any], result: str) -> AuditEntry:
        now = time.time()
        values = (now, uid, user, action, target, json.dumps(args, default=str), result)
        sql = ("INSERT INTO audit (time, uid, user, action, target, args, result) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)")
        try:
            row_id = await self.db.execute(sql, values)
        except StoreError:
            # Disk full: the action happened; its record must not be lost with it.
            self.db.enqueue(sql, values)
            row_id = 0
        return AuditEntry(id=row_id, time=iso_time(now), uid=uid, user=user, action=action,
                          target=target, args=args, result=result)

    async def recent(self, limit: int = 500, since_id: int = 0) -> list[AuditEntry]:
        rows = await self.db.fetchall(
            "SELECT * FROM audit WHERE id > ? ORDER BY id DESC LIMIT ?", (since_id, limit)
        )
        return [
            AuditEntry(id=r["id"], time=iso_time(r["time"]), uid=r["uid"], user=r["user"],
                       action=r["action"], target=r["target"], args=json.loads(r["args"]),
                       result=r["result"])
            for r in rows
        ]
