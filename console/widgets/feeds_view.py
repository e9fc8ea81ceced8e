"""Threat feeds: each feed's health and counts, and the most recent hits."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import Static

from ..fleet import columns_for, fleet_rows, unqualify
from ..format import Clock, date_time, esc, since
from ..state import ConsoleState
from .live_table import Column, LiveTable, Row
from .view import Target, View

FEED_COLUMNS = [
    Column("name", "FEED", max_width=24),
    Column("format", "FORMAT", max_width=12),
    Column("enabled", "ON", min_width=3, max_width=3),
    Column("status", "STATUS", max_width=10),
    Column("last_sync", "LAST SYNC", min_width=9, max_width=14),
    Column("entries", "ENTRIES", min_width=7, max_width=9, align="right"),
    Column("rejected", "REJECTED", min_width=8, max_width=9, align="right"),
    Column("dropped", "DROPPED", min_width=7, max_width=9, align="right"),
    Column("hits", "HITS", min_width=4, max_width=8, align="right"),
    Column("url", "URL / ERROR", min_width=10, max_width=200, flex=True),
]
HIT_COLUMNS = [
    Column("time", "TIME", min_width=14, max_width=14),
    Column("feed", "FEED", max_width=20),
    Column("type", "TYPE", max_width=8),
    Column("indicator", "INDICATOR", max_width=40),
    Column("matched", "MATCHED", max_width=40, flex=True),
    Column("container", "CONTAINER", max_width=24),
    Column("alert", "ALERT", min_width=5, max_width=8, align="right"),
]
STATUS_STYLE = {"ok": "green", "error": "bold bright_red", "syncing": "yellow", "never": "dim"}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def feed_row(f: dict[str, Any], clock: Clock) -> Row:
    status = str(f.get("status") or "")
    error = f.get("error")
    last = f.get("last_sync")
    last_text = since(last, clock) if isinstance(last, (int, float)) else date_time(last) if last else "never"
    cells = (esc(f.get("name"), 64), esc(f.get("format"), 16), "yes" if f.get("enabled", True) else "no",
             esc(status, 16), last_text, str(_int(f.get("entries"))), str(_int(f.get("rejected"))),
             str(_int(f.get("dropped"))), str(_int(f.get("hits"))),
             esc(error, 300) if error else esc(f.get("url"), 300))
    styles = ("bold", "", "" if f.get("enabled", True) else "dim", STATUS_STYLE.get(status, ""), "", "",
              "yellow" if _int(f.get("rejected")) else "dim", "dim", "bold bright_red" if _int(f.get("hits")) else "dim",
              "bright_red" if error else "dim")
    sort = (cells[0], cells[1], cells[2], cells[3], str(last or ""), _int(f.get("entries")),
            _int(f.get("rejected")), _int(f.get("dropped")), _int(f.get("hits")), cells[9])
    return Row(key=str(f.get("name")), cells=cells, styles=styles, sort=sort)


def hit_row(i: int, h: dict[str, Any]) -> Row:
    alert = h.get("alert_id")
    cells = (date_time(h.get("time")), esc(h.get("feed"), 64), esc(h.get("type"), 16), esc(h.get("indicator"), 256),
             esc(h.get("matched"), 256), esc(h.get("container"), 128), str(alert) if alert else "-")
    styles = ("", "bold", "", "bold bright_red", "", "bold", "dim")
    return Row(key=i, cells=cells, styles=styles, sort=(str(h.get("time") or ""),) + cells[1:])


class FeedsView(View):
    VIEW_NAME = "feeds"
    TITLE = "Threat feeds"
    DOMAINS = frozenset({"feeds"})
    ACTIONS = frozenset({"sync", "sort"})

    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield LiveTable(columns_for(FEED_COLUMNS, self.multi_host), sort_column="name", empty_text="no feeds configured (stockade feeds add …)",
                        id="feeds-table")
        yield Static(" Recent hits", classes="section-title")
        yield LiveTable(columns_for(HIT_COLUMNS, self.multi_host), sort_column="time", sort_reverse=True, empty_text="no feed hits",
                        id="hits-table")

    @property
    def table(self) -> LiveTable:
        return self.query_one("#feeds-table", LiveTable)

    def repaint(self, state: ConsoleState) -> None:
        feeds = self.table
        hits = self.query_one("#hits-table", LiveTable)
        errors = [hs.errors["feeds"] for _, hs in state.per_host() if "feeds" in hs.errors]
        if errors:
            feeds.set_empty_text(f"feeds: {esc(errors[0], 200)}")
        feeds.set_rows(fleet_rows(state, lambda hs: [feed_row(f, self.clock) for f in hs.feeds]))
        hits.set_rows(fleet_rows(state, lambda hs: [hit_row(i, h) for i, h in enumerate(hs.feed_hits)]))
        self.stale = False

    def target(self, state: ConsoleState) -> Target:
        host, key = unqualify(self.table.cursor_key)
        return Target(feed=key if isinstance(key, str) else None, host=host)
