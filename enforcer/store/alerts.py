"""Queries for alerts (incidents: repeats of one alert key folded into one row).

The alert book allocates incident ids itself and writes behind, so raising an alert never
waits for the database. Reads are for the `alerts` / `alert` ops and for loading at start.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ..models import SEVERITIES, Alert, iso_time
from .database import Database

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AlertQuery:
    since: int = 0  # only incidents with a larger id
    limit: int = 1000
    kind: str = ""
    min_severity: str = ""
    app: str = ""
    container: str = ""  # name, full id or id prefix


@dataclass(slots=True)
class StoredIncident:
    alert: Alert
    fold_key: str
    first_seen: float
    last_seen: float


class AlertsRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- incident ids ---------------------------------------------------------------------
    def reserve_ids(self, upto: int) -> None:
        """Queue the mark up to which incident ids are handed out (alerts' sqlite_sequence
        row, which max_id reads). It is queued before the incidents that use those ids, so
        whatever of them a crash keeps, the mark is kept too, and an id a crash lost is never
        handed out again."""
        self.db.enqueue("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'alerts'", (upto,))
        self.db.enqueue("INSERT INTO sqlite_sequence (name, seq) SELECT 'alerts', ? "
                        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'alerts')", (upto,))

    def release_ids(self, last_used: int) -> None:
        """At a clean stop: the mark goes back to the last id used."""
        self.db.enqueue("UPDATE sqlite_sequence SET seq = ? WHERE name = 'alerts'", (last_used,))

    # -- reads ----------------------------------------------------------------------------
    async def max_id(self) -> int:
        row = await self.db.fetchone("SELECT COALESCE(MAX(id), 0) AS m FROM alerts")
        seq = await self.db.fetchone("SELECT seq FROM sqlite_sequence WHERE name = 'alerts'")
        return max(int(row["m"]) if row else 0, int(seq["seq"]) if seq else 0)

    async def query(self, q: AlertQuery) -> list[StoredIncident]:
        where = ["id > ?"]
        params: list[Any] = [q.since]
        if q.kind:
            where.append("kind = ?")
            params.append(q.kind)
        if q.min_severity:
            allowed = SEVERITIES[SEVERITIES.index(q.min_severity):]
            where.append(f"severity IN ({','.join('?' * len(allowed))})")
            params.extend(allowed)
        if q.app:
            where.append("app = ?")
            params.append(q.app)
        if q.container:
            where.append("(container = ? OR container_id = ? OR container_id LIKE ?)")
            prefix = q.container.replace("%", "").replace("_", "") + "%" if len(q.container) >= 4 else q.container
            params.extend([q.container, q.container, prefix])
        params.append(q.limit)
        rows = await self.db.fetchall(
            f"SELECT * FROM alerts WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", params
        )
        return [_incident(r) for r in rows]

    async def get(self, alert_id: int) -> StoredIncident | None:
        row = await self.db.fetchone("SELECT * FROM alerts WHERE id = ?", (alert_id,))
        return _incident(row) if row else None

    async def recent_folds(self, since: float) -> list[StoredIncident]:
        """Incidents seen since `since`: a restarted enforcer keeps folding into them."""
        rows = await self.db.fetchall("SELECT * FROM alerts WHERE last_seen >= ? ORDER BY id", (since,))
        return [_incident(r) for r in rows]

    async def counts(self) -> list[tuple[str, str, str, int]]:
        """(container_id, app, severity, incidents) for every group."""
        rows = await self.db.fetchall(
            "SELECT container_id, app, severity, COUNT(*) AS n FROM alerts "
            "GROUP BY container_id, app, severity"
        )
        return [(r["container_id"], r["app"], r["severity"], int(r["n"])) for r in rows]

    # -- write-behind ---------------------------------------------------------------------
    def insert(self, inc: StoredIncident) -> None:
        a = inc.alert
        # The log gets every new incident before the database does: a full disk or a crash
        # of the write-behind window does not lose its trace (docs/failsafe.md).
        log.info("alert %d %s %s %s/%s: %s", a.id, a.severity, a.kind, _printable(a.app, 64),
                 _printable(a.container, 64), _printable(a.summary, 300))
        self.db.enqueue(
            """INSERT INTO alerts (id, fold_key, first_seen, last_seen, count, host, app, service,
                                   container, container_id, image, kind, severity, summary, detail,
                                   action, subject, rule, would, tags, lineage)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO NOTHING""",
            (a.id, inc.fold_key, inc.first_seen, inc.last_seen, a.count, a.host, a.app, a.service,
             a.container, a.container_id, a.image, a.kind, a.severity, a.summary,
             json.dumps(a.detail, separators=(",", ":"), default=str), a.action, a.subject, a.rule,
             a.would, json.dumps(a.tags), json.dumps(a.lineage) if a.lineage else None),
        )

    def update(self, inc: StoredIncident) -> None:
        a = inc.alert
        self.db.enqueue(
            "UPDATE alerts SET last_seen = ?, count = ?, severity = ?, action = ?, summary = ?, detail = ?, would = ?, "
            "tags = ?, resolved = ?, lineage = COALESCE(lineage, ?) WHERE id = ?",
            (inc.last_seen, a.count, a.severity, a.action, a.summary,
             json.dumps(a.detail, separators=(",", ":"), default=str), a.would, json.dumps(a.tags), a.resolved,
             json.dumps(a.lineage) if a.lineage else None, a.id),
        )


def _printable(text: str, limit: int) -> str:
    """Attacker-controlled text for a log line: control characters and escapes as \\x.. ."""
    text = str(text)[:limit]
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _tags(text: str) -> list[str]:
    try:
        tags = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(t) for t in tags] if isinstance(tags, list) else []


def _lineage(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _incident(r: Any) -> StoredIncident:
    try:
        detail = json.loads(r["detail"])
    except ValueError:
        detail = {}
    alert = Alert(
        id=r["id"], time=iso_time(r["last_seen"]), host=r["host"], app=r["app"], service=r["service"],
        container=r["container"], container_id=r["container_id"], image=r["image"], kind=r["kind"],
        severity=r["severity"], summary=r["summary"], detail=detail if isinstance(detail, dict) else {},
        action=r["action"], count=r["count"], first_seen=iso_time(r["first_seen"]),
        last_seen=iso_time(r["last_seen"]), subject=r["subject"], rule=r["rule"],
        would=r["would"], tags=_tags(r["tags"]), resolved=r["resolved"], lineage=_lineage(r["lineage"]),
    )
    return StoredIncident(alert, r["fold_key"], r["first_seen"], r["last_seen"])
