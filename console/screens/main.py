"""The main screen: header, view tabs, the five views in a switcher, command line, footer."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import ContentSwitcher, Footer, Static

from enforcer.models import SEVERITIES

from ..format import esc
from ..state import DOMAINS
from ..widgets.alerts_view import AlertsView
from ..widgets.apps_view import AppsView
from ..widgets.audit_view import AuditView
from ..widgets.command_bar import VIEW_NAMES, CommandBar, resolve_command
from ..widgets.containers_view import ContainersView
from ..widgets.feeds_view import FeedsView
from ..widgets.header import ConnectionBanner, StatusHeader
from ..widgets.live_table import LiveTable
from ..widgets.view import Target, View
from .base import ConsoleScreen

VIEW_TITLES = {"apps": "Apps", "containers": "Containers", "alerts": "Alerts", "feeds": "Feeds", "audit": "Audit"}


class ViewTabs(Static):
    DEFAULT_CSS = "ViewTabs { height: 1; background: $boost; }"

    def show(self, current: str, table: LiveTable | None, counts: dict[str, int]) -> None:
        out = Text(end="")
        for i, name in enumerate(VIEW_NAMES, 1):
            label = f" {i} {VIEW_TITLES[name]}"
            if name in counts:
                label += f" {counts[name]}"
            label += " "
            out.append(label, style="bold reverse" if name == current else "")
            out.append(" ")
        if table is not None and table.filter_text:
            out.append("  /", style="bold yellow")
            out.append(esc(table.filter_text, 64), style="bold yellow")
            out.append(f" ({table.row_count} of {len(table.rows)})", style="dim")
        self.update(out)


class MainScreen(ConsoleScreen):
    BINDINGS = [Binding("q", "quit_console", "Quit", id="quit")]

    def __init__(self, initial_view: str = "containers") -> None:
        super().__init__()
        self.current_view = initial_view
        self.history: list[str] = []

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status-header")
        yield ConnectionBanner(id="connection-banner")
        yield ViewTabs(id="view-tabs")
        with ContentSwitcher(initial=self.current_view, id="views"):
            yield AppsView(id="apps")
            yield ContainersView(id="containers")
            yield AlertsView(id="alerts")
            yield FeedsView(id="feeds", clock=self.stockade.clock)
            yield AuditView(id="audit")
        with Horizontal(id="command-line"):
            yield Static(":", id="command-prompt")
            yield CommandBar(id="command-bar")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.repaint(set(DOMAINS))
        self.view.focus_table()

    # -- views -----------------------------------------------------------------------------
    @property
    def view(self) -> View:
        return self.query_one(f"#{self.current_view}", View)

    def current_table(self) -> LiveTable | None:
        return self.view.table

    def current_target(self) -> Target:
        return self.view.target(self.stockade.state)

    def current_actions(self) -> frozenset[str]:
        return self.view.ACTIONS

    def switch_view(self, name: str, remember: bool = True) -> None:
        if name not in VIEW_NAMES:
            return
        if name != self.current_view and remember:
            self.history.append(self.current_view)
            del self.history[:-20]
        self.current_view = name
        self.query_one("#views", ContentSwitcher).current = name
        view = self.view
        if view.stale:
            view.repaint(self.stockade.state)
        view.focus_table()
        self._show_tabs()
        self.refresh_bindings()

    def action_view(self, name: str) -> None:
        if name == "alerts" and self.current_view == "alerts":
            return
        self.switch_view(name)

    def action_back(self) -> None:
        table = self.current_table()
        if table is not None and table.filter_text:
            table.set_filter("")
            self.filter_changed()
            return
        if isinstance(self.view, AlertsView) and self.view.close_story():
            return
        if self.history:
            self.switch_view(self.history.pop(), remember=False)

    def action_quit_console(self) -> None:
        self.app.exit()

    def on_command_bar_command(self, event: CommandBar.Command) -> None:
        name, args = resolve_command(event.text)
        if name == "quit":
            self.app.exit()
        elif name == "help":
            self.action_help()
        elif name in VIEW_NAMES:
            self.switch_view(name)
            if name == "alerts" and args:
                self._alert_filters(args)
        elif event.text.strip():
            self.notify(f"no view {printable_cmd(event.text)!r}: try apps, containers, alerts, feeds, audit",
                        severity="warning")

    def _alert_filters(self, args: list[str]) -> None:
        kinds: dict[str, str] = {}
        for arg in args:
            key, _, value = arg.partition("=")
            kinds[key.lower()] = value
        severity = kinds.get("sev") or kinds.get("severity")
        self.query_one(AlertsView).set_filters(
            kind=kinds.get("kind") or None,
            severity=severity if severity in SEVERITIES else None,
            app=kinds.get("app") or None)

    def filter_changed(self) -> None:
        self._show_tabs()
        if isinstance(self.view, AlertsView) and self.view._state is not None:
            self.view._show_filters()

    # -- drill down ------------------------------------------------------------------------
    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        key: Any = event.key
        if self.current_view == "containers" and isinstance(key, str):
            self.stockade.open_detail(key)
        elif self.current_view == "apps" and isinstance(key, tuple):
            if key[0] == "ctr":
                self.stockade.open_detail(key[1])
            else:
                self.switch_view("containers")
                self.view.table.set_filter(str(key[1]))
                self.filter_changed()
        elif self.current_view == "alerts" and isinstance(key, str) and key.startswith("story:"):
            self.query_one(AlertsView).open_story(key)
        elif self.current_view == "alerts" and isinstance(key, int):
            alert = self.stockade.state.incidents.get(key) or {}
            if alert.get("container_id"):
                self.stockade.open_detail(str(alert["container_id"]), tab="incidents")

    # -- repaint (method calls down from the app) ------------------------------------------
    def repaint(self, dirty: set[str]) -> None:
        app = self.stockade
        state = app.state
        if dirty & {"status", "hello", "connection", "alerts"}:
            self.query_one(StatusHeader).show(state, app.read_only, app.clock)
            self.query_one(ConnectionBanner).show(state, app.retry_seconds)
        for view in self.query(View):
            if view.DOMAINS & dirty or "connection" in dirty:
                view.stale = True
        view = self.view
        if view.stale:
            view.repaint(state)
        if "hello" in dirty:
            self.refresh_bindings()
        self._show_tabs()

    def _show_tabs(self) -> None:
        state = self.stockade.state
        counts = {"containers": len(state.containers), "apps": len(state.apps) or len(
            {c.get("app") for c in state.containers.values()}),
            "alerts": len(state.incidents), "feeds": len(state.feeds)}
        self.query_one(ViewTabs).show(self.current_view, self.current_table(), counts)


def printable_cmd(text: str) -> str:
    return esc(text, 40)
