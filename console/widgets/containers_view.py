"""Containers: a live, sortable table keyed by container id."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult

from ..fleet import columns_for, fleet_rows, unqualify
from ..format import MODE_STYLE, STATE_STYLE, as_list, esc
from ..output import duration
from ..state import ConsoleState
from .live_table import Column, LiveTable, Row
from .view import Target, View

COLUMNS = [
    Column("name", "NAME", min_width=8, max_width=32, flex=True),
    Column("app", "APP", max_width=18, hide_below=100),
    Column("service", "SERVICE", max_width=16, hide_below=120),
    Column("image", "IMAGE", min_width=8, max_width=40, flex=True, hide_below=90),
    Column("mode", "MODE", min_width=7, max_width=8),
    Column("profile", "PROFILE", min_width=8, max_width=18),
    Column("alerts", "ALERTS", min_width=6, max_width=7, align="right"),
    Column("status", "STATUS", min_width=7, max_width=10),
    Column("pids", "PIDS", min_width=4, max_width=6, align="right", hide_below=110),
    Column("ip", "ADDRESS", min_width=7, max_width=16, hide_below=100),
    Column("id", "ID", min_width=12, max_width=12, hide_below=130),
]


def learning_left(c: dict[str, Any], now: float | None = None) -> float:
    """Seconds of learning left now: the enforcer's figure minus the time since it said so."""
    left = c.get("learning_left")
    if not isinstance(left, (int, float)) or isinstance(left, bool):
        return 0.0
    received = c.get("_received")
    if now is not None and isinstance(received, (int, float)):
        left -= max(0.0, now - received)
    return max(0.0, float(left))


def profile_str(c: dict[str, Any], now: float | None = None) -> tuple[str, str]:
    state = c.get("profile_state") or ""
    if not state:
        return "-", "dim"
    if state == "learning":
        left = learning_left(c, now)
        if left > 0:
            return f"learning {duration(left)}", "cyan"
        return "learning", "cyan"
    return esc(state, 20), "green" if state == "active" else ""


def status_str(c: dict[str, Any]) -> tuple[str, str]:
    if c.get("frozen"):
        return "FROZEN", STATE_STYLE["frozen"]
    state = str(c.get("state") or "")
    return esc(state, 12), STATE_STYLE.get(state, "")


def container_row(c: dict[str, Any], alerts: int, now: float | None = None) -> Row:
    ips = [n.get("ip") for n in as_list(c.get("networks")) if isinstance(n, dict) and n.get("ip")]
    profile, profile_style = profile_str(c, now)
    status, status_style = status_str(c)
    mode = str(c.get("mode") or "")
    pids = as_list(c.get("pids"))
    cells = (esc(c.get("name"), 128), esc(c.get("app"), 128), esc(c.get("service"), 128),
             esc(c.get("image"), 256), esc(mode, 12), profile, str(alerts), status,
             str(len(pids)) if pids else "-", esc(ips[0] if ips else "", 46), esc(str(c.get("id", ""))[:12]))
    styles = ("bold", "", "", "", MODE_STYLE.get(mode, "dim"), profile_style,
              "bold bright_red" if alerts else "dim", status_style, "", "", "dim")
    sort = (cells[0], cells[1], cells[2], cells[3], cells[4],
            (profile_style, learning_left(c, now)), alerts, status, len(pids), cells[9], cells[10])
    return Row(key=c["id"], cells=cells, styles=styles, sort=sort)


class ContainersView(View):
    VIEW_NAME = "containers"
    TITLE = "Containers"
    DOMAINS = frozenset({"containers", "alerts"})
    ACTIONS = frozenset({"block", "freeze", "unfreeze", "mode", "relearn", "forensics", "sort"})

    def compose(self) -> ComposeResult:
        yield LiveTable(columns_for(COLUMNS, self.multi_host), sort_column="name", empty_text="no containers on this host",
                        id="containers-table")

    def repaint(self, state: ConsoleState) -> None:
        now = state.clock()

        def build(hs: ConsoleState) -> list[Row]:
            loaded = hs.incidents_by_container()
            return [container_row(c, hs.container_alerts(c, loaded), now) for c in hs.containers.values()]

        rows = fleet_rows(state, build)
        table = self.table
        if not rows and state.connection.state != "connected":
            table.set_empty_text("waiting for the enforcer…")
        else:
            table.set_empty_text("no containers on this host")
        table.set_rows(rows)
        self.stale = False

    def target(self, state: ConsoleState) -> Target:
        host, key = unqualify(self.table.cursor_key)
        c = state.host_state(host).containers.get(key) if isinstance(key, str) else None
        if c is None:
            return Target()
        return Target(container_id=c["id"], app=c.get("app"), host=host)
