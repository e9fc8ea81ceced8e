"""Audit: every action taken through the enforcer, by whom, and how it ended."""

from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult

from ..fleet import columns_for, fleet_rows
from ..format import as_dict, date_time, esc
from ..state import ConsoleState
from .live_table import Column, LiveTable, Row
from .view import View

COLUMNS = [
    Column("id", "ID", min_width=4, max_width=8, align="right"),
    Column("time", "TIME", min_width=14, max_width=14),
    Column("user", "USER", max_width=16),
    Column("uid", "UID", min_width=3, max_width=7, align="right"),
    Column("action", "ACTION", max_width=14),
    Column("target", "TARGET", max_width=32),
    Column("result", "RESULT", max_width=48),
    Column("args", "ARGS", min_width=8, max_width=300, flex=True),
]


def audit_row(e: dict[str, Any], names: dict[str, str] | None = None) -> Row:
    result = str(e.get("result") or "")
    args = as_dict(e.get("args"))
    args_text = json.dumps(args, ensure_ascii=True, separators=(",", ":"), default=str) if args else ""
    target = str(e.get("target") or "")
    # Actions name containers by id (the console sends ids): show the name beside it.
    shown = f"{names[target]} ({target[:12]})" if names and target in names else target
    cells = (str(e["id"]), date_time(e.get("time")), esc(e.get("user"), 64), esc(e.get("uid"), 12),
             esc(e.get("action"), 32), esc(shown, 256), esc(result, 300), esc(args_text, 600))
    styles = ("dim", "", "bold", "dim", "bold", "", "green" if result == "ok" else "bright_red", "dim")
    return Row(key=e["id"], cells=cells, styles=styles, sort=(e["id"],) + cells[1:])


class AuditView(View):
    VIEW_NAME = "audit"
    TITLE = "Audit"
    DOMAINS = frozenset({"audit", "containers"})
    ACTIONS = frozenset({"sort"})

    def compose(self) -> ComposeResult:
        yield LiveTable(columns_for(COLUMNS, self.multi_host), sort_column="id", sort_reverse=True, empty_text="no actions taken yet",
                        id="audit-table")

    def repaint(self, state: ConsoleState) -> None:
        def build(hs: ConsoleState) -> list[Row]:
            names = {cid: str(c.get("name") or "") for cid, c in hs.containers.items()}
            return [audit_row(e, names) for e in hs.audit.values()]

        self.table.set_rows(fleet_rows(state, build))
        self.stale = False
