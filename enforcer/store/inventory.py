"""Queries for the inventory: container snapshots, apps and their modes."""

from __future__ import annotations

import json
import time

from ..models import Container
from .database import Database


class InventoryRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save_container(self, c: Container, removed: bool = False) -> None:
        """Write-behind upsert of the latest snapshot of a container."""
        now = time.time()
        self.db.enqueue(
            """INSERT INTO containers (id, name, app, service, image, image_id, state,
                                       first_seen, last_seen, removed_at, data)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET name=excluded.name, app=excluded.app,
                   service=excluded.service, image=excluded.image, image_id=excluded.image_id,
                   state=excluded.state, last_seen=excluded.last_seen,
                   removed_at=excluded.removed_at, data=excluded.data""",
            (c.id, c.name, c.app, c.service, c.image, c.image_id, c.state, now, now,
             now if removed else None, json.dumps(c.to_dict())),
        )

    async def known_containers(self, include_removed: bool = False) -> list[Container]:
        sql = "SELECT data FROM containers"
        if not include_removed:
            sql += " WHERE removed_at IS NULL"
        return [Container.from_dict(json.loads(r["data"])) for r in await self.db.fetchall(sql)]

    async def get_container(self, ref: str) -> Container | None:
        """A container by id, id prefix or name, live or removed (newest first)."""
        row = await self.db.fetchone(
            "SELECT data FROM containers WHERE id = ? OR name = ? OR id LIKE ? "
            "ORDER BY last_seen DESC LIMIT 1",
            (ref, ref, ref.replace("%", "") + "%" if len(ref) >= 4 else ref),
        )
        return Container.from_dict(json.loads(row["data"])) if row else None

    def mark_removed(self, container_id: str) -> None:
        self.db.enqueue(
            "UPDATE containers SET removed_at = ?, state = 'removed' WHERE id = ?",
            (time.time(), container_id),
        )

    # -- apps and modes ---------------------------------------------------------------
    async def ensure_app(self, name: str, default_mode: str) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO apps (name, mode, first_seen) VALUES (?, ?, ?)",
            (name, default_mode, time.time()),
        )

    async def app_settings(self) -> dict[str, dict[str, object]]:
        rows = await self.db.fetchall("SELECT name, mode, learn_seconds, mode_set FROM apps")
        return {
            r["name"]: {"mode": r["mode"], "learn_seconds": r["learn_seconds"],
                        "mode_set": bool(r["mode_set"])}
            for r in rows
        }

    async def set_app_mode(self, app: str, mode: str) -> None:
        await self.db.execute(
            """INSERT INTO apps (name, mode, mode_set, first_seen) VALUES (?, ?, 1, ?)
               ON CONFLICT(name) DO UPDATE SET mode = excluded.mode, mode_set = 1""",
            (app, mode, time.time()),
        )

    async def set_app_learn_seconds(self, app: str, seconds: float | None) -> None:
        await self.db.execute(
            """INSERT INTO apps (name, learn_seconds, first_seen) VALUES (?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET learn_seconds = excluded.learn_seconds""",
            (app, seconds, time.time()),
        )

    async def container_modes(self) -> dict[str, str]:
        rows = await self.db.fetchall("SELECT container_name, mode FROM container_modes")
        return {r["container_name"]: r["mode"] for r in rows}

    async def set_container_mode(self, name: str, mode: str | None) -> None:
        """A per-container override; None removes it (the app's mode applies again)."""
        if mode is None:
            await self.db.execute("DELETE FROM container_modes WHERE container_name = ?", (name,))
        else:
            await self.db.execute(
                """INSERT INTO container_modes (container_name, mode, set_at) VALUES (?, ?, ?)
                   ON CONFLICT(container_name) DO UPDATE SET mode = excluded.mode,
                   set_at = excluded.set_at""",
                (name, mode, time.time()),
            )
