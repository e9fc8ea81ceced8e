"""Queries for profiles and their entries.

Profiles are read whole at start (they live in memory while the enforcer runs) and
written behind: the profiles layer allocates ids itself so that a new profile or entry
never waits for the database. The write-behind queue is FIFO, so a profile row is always
committed before the entries that reference it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .database import Database


@dataclass(slots=True)
class ProfileRow:
    id: int
    app: str
    service: str
    image_digest: str
    state: str
    created: float
    learn_until: float
    activated: float | None
    entries: list["EntryRow"] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    last_change: float = 0.0


@dataclass(slots=True)
class EntryRow:
    kind: str
    key: str
    data: dict[str, Any]
    source: str
    first_seen: float
    used: bool = True  # a seed seen in use while its profile learned (False: seeded, never used)


class ProfilesRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def load_all(self) -> list[ProfileRow]:
        """Every profile with its entries (called once, at start)."""
        profiles: dict[int, ProfileRow] = {}
        for r in await self.db.fetchall("SELECT * FROM profiles ORDER BY id"):
            profiles[r["id"]] = ProfileRow(
                id=r["id"], app=r["app"], service=r["service"], image_digest=r["image_digest"],
                state=r["state"], created=r["created"], learn_until=r["learn_until"],
                activated=r["activated"], gaps=_gaps(r["gaps"]), last_change=r["last_change"],
            )
        for r in await self.db.fetchall(
            "SELECT profile_id, kind, key, data, source, first_seen, used FROM profile_entries"
        ):
            p = profiles.get(r["profile_id"])
            if p is None:
                continue
            try:
                data = json.loads(r["data"])
            except ValueError:
                data = {}
            p.entries.append(EntryRow(r["kind"], r["key"], data if isinstance(data, dict) else {},
                                      r["source"], r["first_seen"], bool(r["used"])))
        return list(profiles.values())

    async def max_id(self) -> int:
        row = await self.db.fetchone("SELECT COALESCE(MAX(id), 0) AS m FROM profiles")
        seq = await self.db.fetchone("SELECT seq FROM sqlite_sequence WHERE name = 'profiles'")
        return max(int(row["m"]) if row else 0, int(seq["seq"]) if seq else 0)

    # -- write-behind ---------------------------------------------------------------------
    def insert_profile(self, p: ProfileRow) -> None:
        self.db.enqueue(
            """INSERT INTO profiles (id, app, service, image_digest, state, created, learn_until, activated)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO NOTHING""",
            (p.id, p.app, p.service, p.image_digest, p.state, p.created, p.learn_until, p.activated),
        )

    def save_state(self, profile_id: int, state: str, learn_until: float, activated: float | None,
                   gaps: list[str] | None = None, last_change: float = 0.0) -> None:
        self.db.enqueue(
            "UPDATE profiles SET state = ?, learn_until = ?, activated = ?, gaps = ?, last_change = ? WHERE id = ?",
            (state, learn_until, activated, json.dumps(gaps or []), last_change, profile_id),
        )

    def remove_entry(self, profile_id: int, kind: str, key: str) -> None:
        self.db.enqueue("DELETE FROM profile_entries WHERE profile_id = ? AND kind = ? AND key = ?",
                        (profile_id, kind, key))

    def mark_pruned(self, profile_id: int, kind: str, key: str) -> None:
        """A seed pruned: its row stays as a tombstone (source 'pruned') so that seeding does
        not add it again after a restart."""
        self.db.enqueue("UPDATE profile_entries SET source = 'pruned', used = 0 "
                        "WHERE profile_id = ? AND kind = ? AND key = ?", (profile_id, kind, key))

    def add_tombstone(self, profile_id: int, kind: str, key: str, when: float) -> None:
        """A pruned seed's tombstone without its entry (an imported profile's `pruned`)."""
        self.db.enqueue(
            """INSERT INTO profile_entries (profile_id, kind, key, data, source, first_seen, used)
               VALUES (?, ?, ?, '{}', 'pruned', ?, 0) ON CONFLICT(profile_id, kind, key) DO NOTHING""",
            (profile_id, kind, key, when))

    def replace_entries(self, profile_id: int, rows: list[EntryRow]) -> None:
        """Every entry of a profile replaced (an import). Queued as one run, so the flusher
        commits it in one transaction."""
        self.db.enqueue("DELETE FROM profile_entries WHERE profile_id = ?", (profile_id,))
        for e in rows:
            self.add_entry(profile_id, e)

    def add_entry(self, profile_id: int, e: EntryRow) -> None:
        """Insert one entry; a seed outranks a learned entry of the same key (relearn keeps seeds),
        and any entry replaces the tombstone of a pruned seed (learned or allowed since)."""
        self.db.enqueue(
            """INSERT INTO profile_entries (profile_id, kind, key, data, source, first_seen, used)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(profile_id, kind, key) DO UPDATE SET
                 source = excluded.source,
                 data = CASE WHEN profile_entries.source = 'pruned' THEN excluded.data ELSE profile_entries.data END,
                 first_seen = CASE WHEN profile_entries.source = 'pruned' THEN excluded.first_seen
                                   ELSE profile_entries.first_seen END,
                 used = CASE WHEN profile_entries.source = 'pruned' THEN excluded.used ELSE profile_entries.used END
               WHERE excluded.source = 'seed' OR profile_entries.source = 'pruned'""",
            (profile_id, e.kind, e.key, json.dumps(e.data, separators=(",", ":")), e.source, e.first_seen,
             int(e.used)),
        )

    def set_used(self, profile_id: int, kind: str, key: str, used: bool = True) -> None:
        self.db.enqueue("UPDATE profile_entries SET used = ? WHERE profile_id = ? AND kind = ? AND key = ?",
                        (int(used), profile_id, kind, key))

    def clear_learned(self, profile_id: int) -> None:
        self.db.enqueue(
            "DELETE FROM profile_entries WHERE profile_id = ? AND source = 'learned'", (profile_id,)
        )
        # Learning again: every seed is unused until it is seen again.
        self.db.enqueue("UPDATE profile_entries SET used = 0 WHERE profile_id = ? AND source = 'seed'",
                        (profile_id,))


def _gaps(text: str) -> list[str]:
    try:
        gaps = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(g) for g in gaps] if isinstance(gaps, list) else []
