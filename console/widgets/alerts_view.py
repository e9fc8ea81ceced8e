"""Alerts: the live stream of incidents, newest first, with filters and a detail pane.

Incidents arrive in bursts; the view only rebuilds the rows that changed since its last
repaint (the state keeps their ids), and the table re-orders by key, so the cursor stays
on the incident being read while new ones land above it.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from enforcer.models import ALERT_KINDS, SEVERITIES

from ..fleet import columns_for, fleet_rows, qualify, unqualify, with_host
from ..format import (KIND_STYLE, SEVERITY_RANK, SEVERITY_STYLE, as_dict, clock_time, date_time, detail_lines,
                      esc)
from ..state import ConsoleState
from .live_table import Column, LiveTable, Row
from .view import Target, View

COLUMNS = [
    Column("id", "ID", min_width=4, max_width=8, align="right"),
    Column("time", "LAST", min_width=8, max_width=8, hide_below=100),
    Column("severity", "SEV", min_width=4, max_width=8),
    Column("kind", "KIND", min_width=4, max_width=7),
    Column("app", "APP", max_width=16, hide_below=120),
    Column("container", "CONTAINER", max_width=24),
    Column("summary", "SUMMARY", min_width=10, max_width=200, flex=True),
    Column("count", "COUNT", min_width=5, max_width=7, align="right"),
    Column("action", "ACTION", min_width=6, max_width=8, hide_below=110),
]

# Most precise first: a container name or an address is what `block --peer` takes
# ("peer" may be "app/service", which is not).
PEER_KEYS = ("peer_container", "remote_ip", "daddr", "ip", "address", "remote", "dst", "indicator", "peer")
PORT_KEYS = ("remote_port", "dport", "port")


def incident_row(a: dict[str, Any]) -> Row:
    sev = str(a.get("severity") or "")
    kind = str(a.get("kind") or "")
    action = str(a.get("action") or "")
    raw_count = a.get("count")
    count = raw_count if isinstance(raw_count, int) and not isinstance(raw_count, bool) else 1
    cells = (str(a["id"]), clock_time(a.get("last_seen") or a.get("time")), esc(sev, 10), esc(kind, 10),
             esc(a.get("app"), 128), esc(a.get("container"), 128), esc(a.get("summary"), 512), str(count),
             esc(action, 10))
    styles = ("dim", "", SEVERITY_STYLE.get(sev, ""), KIND_STYLE.get(kind, ""), "", "bold", "",
              "bold" if count > 1 else "dim", "bold bright_red" if action not in ("alerted", "") else "dim")
    sort = (a["id"], str(a.get("last_seen") or a.get("time") or ""), SEVERITY_RANK.get(sev, -1), kind,
            cells[4], cells[5], cells[6], count, action)
    return Row(key=a["id"], cells=cells, styles=styles, sort=sort)


def alert_peer(alert: dict[str, Any]) -> str | None:
    """The remote end of a network or threat alert, as `block --peer` takes it."""
    detail = as_dict(alert.get("detail"))
    for key in PEER_KEYS:
        value = detail.get(key)
        if isinstance(value, str) and value:
            # Inbound: the remote port is ephemeral, blocking it would block nothing useful.
            inbound = detail.get("direction") in ("in", "inbound")
            port = None if inbound else next((detail[k] for k in PORT_KEYS if isinstance(detail.get(k), int)), None)
            return f"{value}:{port}" if port and ":" not in value else value
    return None


def alert_pid(alert: dict[str, Any]) -> int | None:
    detail = as_dict(alert.get("detail"))
    pid = detail.get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def story_key(a: dict[str, Any]) -> str:
    """The story an incident belongs to: its container and the root of its process lineage
    (pid 0: no process, e.g. an inbound connection to a listener)."""
    lineage = a.get("lineage") if isinstance(a.get("lineage"), dict) else {}
    pid = lineage.get("pid") if isinstance(lineage.get("pid"), int) else 0
    return f"story:{a.get('container_id') or ''}:{pid}"


def _count(a: dict[str, Any]) -> int:
    c = a.get("count")
    return c if isinstance(c, int) and not isinstance(c, bool) else 1


def story_rows(alerts: Any) -> list[Row]:
    """One row per story: its latest incident id and time, worst severity, kinds, findings."""
    stories: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        stories.setdefault(story_key(a), []).append(a)
    rows = []
    for key, members in stories.items():
        members.sort(key=lambda a: a["id"])
        last = members[-1]
        worst = max((str(a.get("severity") or "") for a in members), key=lambda s: SEVERITY_RANK.get(s, -1))
        kinds = sorted({str(a.get("kind") or "") for a in members})
        lineage = last.get("lineage") if isinstance(last.get("lineage"), dict) else {}
        root = _lineage_text(lineage) or "no process"
        subjects = ", ".join(dict.fromkeys(str(a.get("subject") or a.get("kind")) for a in members))
        summary = f"{root}: {len(members)} finding(s): {subjects}"
        stopped = [str(a.get("action")) for a in members if a.get("action") not in ("alerted", None, "")]
        action = stopped[-1] if stopped else "alerted"
        count = sum(_count(a) for a in members)
        cells = (str(last["id"]), clock_time(last.get("last_seen") or last.get("time")), esc(worst, 10),
                 esc("+".join(kinds), 40), esc(last.get("app"), 128), esc(last.get("container"), 128),
                 esc(summary, 512), str(count), esc(action, 10))
        styles = ("dim", "", SEVERITY_STYLE.get(worst, ""), "", "", "bold", "bold", "bold" if count > 1 else "dim",
                  "bold bright_red" if stopped else "dim")
        sort = (last["id"], str(last.get("last_seen") or ""), SEVERITY_RANK.get(worst, -1), cells[3], cells[4],
                cells[5], cells[6], count, action)
        rows.append(Row(key=key, cells=cells, styles=styles, sort=sort))
    return rows


def story_detail_text(members: list[dict[str, Any]]) -> Text:
    out = Text(end="")
    if not members:
        return Text("select a story to see its findings", style="dim italic")
    lineage = members[-1].get("lineage") if isinstance(members[-1].get("lineage"), dict) else {}
    out.append("story ", style="dim")
    out.append(esc(_lineage_text(lineage) or "no process", 200), style="bold")
    out.append("  in ", style="dim")
    out.append(esc(members[-1].get("container"), 128), style="bold")
    out.append(f"  {len(members)} finding(s); Enter lists them, Esc comes back\n", style="dim")
    for a in sorted(members, key=lambda a: a["id"]):
        sev = str(a.get("severity") or "")
        out.append(f"#{a['id']} ", style="bold")
        out.append(esc(sev, 10), style=SEVERITY_STYLE.get(sev, ""))
        out.append(" ")
        out.append(esc(a.get("kind"), 10), style=KIND_STYLE.get(str(a.get("kind")), ""))
        out.append("  " + esc(a.get("summary"), 300))
        if _count(a) > 1:
            out.append(f"  x{_count(a)}", style="bold")
        tags = a.get("tags") if isinstance(a.get("tags"), list) else []
        if tags:
            out.append("  " + esc(", ".join(str(t) for t in tags), 60), style="dim")
        out.append("\n")
    return out


def _lineage_text(lineage: Any) -> str:
    """The root of the alert's process lineage: the entrypoint or a docker exec."""
    if not isinstance(lineage, dict) or not lineage.get("pid"):
        return ""
    path = str(lineage.get("path") or "?")
    return f"{'entrypoint' if path == '(entrypoint)' else path} (pid {lineage.get('pid')})"


def alert_detail_text(a: dict[str, Any] | None, actions: bool = True) -> Text:
    if a is None:
        return Text("select an incident to see its detail", style="dim italic")
    sev = str(a.get("severity") or "")
    out = Text(end="")
    out.append(f"#{a.get('id')} ", style="bold")
    out.append(esc(sev, 10), style=SEVERITY_STYLE.get(sev, ""))
    out.append(" ")
    out.append(esc(a.get("kind"), 10), style=KIND_STYLE.get(str(a.get("kind")), ""))
    out.append("  ")
    out.append(esc(a.get("summary"), 1024), style="bold")
    out.append("\n")
    facts = [("app", a.get("app")), ("service", a.get("service")), ("container", a.get("container")),
             ("id", str(a.get("container_id") or "")[:12]), ("image", a.get("image")),
             ("count", a.get("count")), ("first", date_time(a.get("first_seen"))),
             ("last", date_time(a.get("last_seen") or a.get("time"))), ("action", a.get("action")),
             ("protect would have", a.get("would")), ("resolved", a.get("resolved")), ("rule", a.get("rule")),
             ("ATT&CK", ", ".join(str(t) for t in a.get("tags") or []) if isinstance(a.get("tags"), list) else ""),
             ("story", _lineage_text(a.get("lineage"))), ("host", a.get("host"))]
    first = True
    for label, value in facts:
        if value in (None, ""):
            continue
        if not first:
            out.append("  ")
        first = False
        out.append(f"{label} ", style="dim")
        out.append(esc(value, 200))
    out.append("\n")
    detail = a.get("detail")
    if detail:
        for line in detail_lines(detail):
            out.append_text(line)
            out.append("\n")
    if not actions:
        return out
    hints = []
    if alert_peer(a):
        hints.append(f"b blocks {esc(alert_peer(a), 80)}")
    if alert_pid(a):
        hints.append(f"k kills pid {alert_pid(a)}")
    hints.append("f freezes the container")
    if a.get("rule") == "profile" and a.get("subject") != "burst" and not a.get("resolved"):
        hints.append("A allows it into the profile")
    out.append("  ·  ".join(hints), style="dim italic")
    return out


class AlertsView(View):
    VIEW_NAME = "alerts"
    TITLE = "Alerts"
    DOMAINS = frozenset({"alerts"})
    ACTIONS = frozenset({"block", "freeze", "unfreeze", "kill", "mode", "relearn", "forensics", "allow", "sort"})
    BINDINGS = [
        Binding("t", "cycle_kind", "Kind", id="alerts.kind"),
        Binding("v", "cycle_severity", "Severity", id="alerts.severity"),
        Binding("a", "cycle_app", "App", id="alerts.app"),
        Binding("g", "toggle_stories", "Stories", id="alerts.stories"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind: str | None = None
        self.min_severity: str | None = None
        self.app_filter: str | None = None
        self._shown_detail: tuple[Any, ...] | None = None
        self._state: ConsoleState | None = None
        # Stories: one row per process lineage (the entrypoint or a docker exec) of a
        # container, so an intrusion is one row; Enter opens it, Esc goes back.
        self.grouped = False
        self.story: str | None = None  # the story key shown ungrouped, or None

    def compose(self) -> ComposeResult:
        yield Static(id="alerts-filters")
        yield LiveTable(columns_for(COLUMNS, self.multi_host), sort_column="id", sort_reverse=True,
                        empty_text="no incidents", id="alerts-table")
        with VerticalScroll(id="alert-detail-pane"):
            yield Static(id="alert-detail")

    def _passes(self, a: dict[str, Any], host: int | None = None) -> bool:
        if self.kind and a.get("kind") != self.kind:
            return False
        if self.min_severity and SEVERITY_RANK.get(str(a.get("severity")), -1) < SEVERITY_RANK[self.min_severity]:
            return False
        if self.app_filter and a.get("app") != self.app_filter:
            return False
        if self.story and qualify(host, story_key(a)) != self.story:
            return False
        return True

    def repaint(self, state: ConsoleState, full: bool = False) -> None:
        self._state = state
        table = self.table
        hosts = list(state.per_host())
        errors = [hs.errors["alerts"] for _, hs in hosts if "alerts" in hs.errors]
        if errors:
            table.set_empty_text(f"alerts: {esc(errors[0], 200)}")
        elif state.connection.state != "connected" and not state.count("incidents"):
            table.set_empty_text("waiting for the enforcer…")
        else:
            table.set_empty_text("no incidents" + (" match the filters" if self._filtering else ""))
        reloaded = any(hs.incidents_reloaded for _, hs in hosts)
        if self.grouped and not self.story:
            def stories(hs: ConsoleState) -> list[Row]:
                index = self._index_of(state, hs)
                return story_rows(a for a in hs.incidents.values() if self._passes(a, index))

            table.set_rows(fleet_rows(state, stories))
        elif full or self.stale or reloaded:
            def incidents(hs: ConsoleState) -> list[Row]:
                index = self._index_of(state, hs)
                return [incident_row(a) for a in hs.incidents.values() if self._passes(a, index)]

            table.set_rows(fleet_rows(state, incidents))
        elif any(hs.changed_incidents for _, hs in hosts):
            upserts, removed = [], []
            for index, hs in hosts:
                for alert_id in hs.changed_incidents:
                    a = hs.incidents.get(alert_id)
                    if a is not None and self._passes(a, index):
                        row = incident_row(a)
                        upserts.append(row if index is None else with_host(row, state.host(index)))
                    else:
                        removed.append(qualify(index, alert_id))
            table.upsert(upserts, remove=removed)
        for _, hs in hosts:
            hs.incidents_reloaded = False
            hs.changed_incidents.clear()
        self.stale = False
        self._show_filters()
        self.show_detail()

    @staticmethod
    def _index_of(state: Any, hs: ConsoleState) -> int | None:
        return next((i for i, x in state.per_host() if x is hs), None)

    @property
    def _filtering(self) -> bool:
        return bool(self.kind or self.min_severity or self.app_filter or self.table.filter_text)

    def _show_filters(self) -> None:
        out = Text(" filters: ", style="dim", end="")
        parts = [("t kind", self.kind), ("v severity ≥", self.min_severity), ("a app", self.app_filter)]
        for i, (label, value) in enumerate(parts):
            if i:
                out.append("   ")
            out.append(label + " ", style="dim")
            out.append(esc(value, 64) if value else "all", style="bold" if value else "")
        out.append("   g ", style="dim")
        out.append("stories" if self.grouped else "incidents", style="bold" if self.grouped else "")
        if self.story:
            out.append("   story ", style="dim")
            out.append(esc(str(unqualify(self.story)[1]).split(":", 2)[2], 16), style="bold")
            out.append(" (Esc: all stories)", style="dim")
        if self.table.filter_text:
            out.append("   / ", style="dim")
            out.append(esc(self.table.filter_text, 64), style="bold")
        out.append(f"   {self.table.row_count} shown", style="dim")
        self.query_one("#alerts-filters", Static).update(out)

    def show_detail(self) -> None:
        state = self._state
        host, key = unqualify(self.table.cursor_key)
        if state is not None and isinstance(key, str) and key.startswith("story:"):
            members = [a for a in state.host_state(host).incidents.values()
                       if story_key(a) == key and self._passes(a, host)]
            signature: tuple[Any, ...] = (host, key, len(members), sum(_count(a) for a in members))
            if signature != self._shown_detail:
                self._shown_detail = signature
                self.query_one("#alert-detail", Static).update(story_detail_text(members))
            return
        alert = state.host_state(host).incidents.get(key) if state is not None and isinstance(key, int) else None
        signature = (host, key, alert.get("count") if alert else None, alert.get("last_seen") if alert else None)
        if signature == self._shown_detail:
            return
        self._shown_detail = signature
        read_only_for = getattr(self.app, "read_only_for", None)
        read_only = bool(read_only_for(host)) if read_only_for is not None else False
        self.query_one("#alert-detail", Static).update(alert_detail_text(alert, actions=not read_only))

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        self.show_detail()

    def _refilter(self) -> None:
        if self._state is not None:
            self.repaint(self._state, full=True)

    def action_cycle_kind(self) -> None:
        self.kind = _next(self.kind, ALERT_KINDS)
        self._refilter()

    def action_cycle_severity(self) -> None:
        self.min_severity = _next(self.min_severity, SEVERITIES[1:])
        self._refilter()

    def action_cycle_app(self) -> None:
        apps = sorted({str(a.get("app")) for _, hs in (self._state.per_host() if self._state else [])
                       for a in hs.incidents.values() if a.get("app")})
        self.app_filter = _next(self.app_filter, tuple(apps))
        self._refilter()

    def action_toggle_stories(self) -> None:
        self.grouped = not self.grouped
        self.story = None
        self._refilter()

    def open_story(self, key: Any) -> None:
        """Enter on a story: its incidents, one per row (Esc comes back)."""
        self.story = key
        self._refilter()

    def close_story(self) -> bool:
        """Esc inside a story: back to the stories; False if no story was open."""
        if not self.story:
            return False
        self.story = None
        self._refilter()
        return True

    def set_filters(self, kind: str | None = None, severity: str | None = None, app: str | None = None) -> None:
        self.kind, self.min_severity, self.app_filter = kind, severity, app
        self._refilter()

    def target(self, state: ConsoleState) -> Target:
        host, key = unqualify(self.table.cursor_key)
        hs = state.host_state(host)
        if isinstance(key, str) and key.startswith("story:"):
            cid = key.split(":", 2)[1]
            return Target(container_id=cid or None, app=(hs.containers.get(cid) or {}).get("app"), host=host)
        alert = hs.incidents.get(key) if isinstance(key, int) else None
        if alert is None:
            return Target()
        cid = str(alert.get("container_id") or "") or None
        return Target(container_id=cid, app=alert.get("app"), alert=alert, pid=alert_pid(alert),
                      peer=alert_peer(alert), host=host)


def _next(current: str | None, choices: tuple[str, ...]) -> str | None:
    """None -> first -> ... -> last -> None (all)."""
    if not choices:
        return None
    if current not in choices:
        return choices[0]
    i = choices.index(current) + 1
    return choices[i] if i < len(choices) else None
