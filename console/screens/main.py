"""The main screen: header, view tabs, the five views in a switcher, command line, footer."""

from __future__ import annotations


from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import ContentSwitcher, Footer, Static

from enforcer.models import SEVERITIES

from ..fleet import unqualify
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

    def show(self, current: str, table: LiveTable | None, counts: dict[str, int], host: str | None = None) -> None:
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
        if host is not None:
            out.append("  host ", style="bold yellow")
            out.append(esc(host, 64), style="bold yellow")
            out.append(" (h: next)", style="dim")
        self.update(out)


class MainScreen(ConsoleScreen):
    BINDINGS = [Binding("q", "quit_console", "Quit", id="quit"),
                Binding("h", "next_host", "Host", id="view.host")]

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

    def action_next_host(self) -> None:
        """Fleet console: show one host's rows, the next host's, ..., then every host's again."""
        app = self.stockade
        if not app.multi_host:
            return
        current = app.host_filter
        app.host_filter = 0 if current is None else current + 1 if current + 1 < len(app.hosts) else None
        self._apply_host_filter()
        label = app.host_label(app.host_filter) if app.host_filter is not None else "every host"
        self.notify(f"showing {label}", timeout=1.5)

    def _apply_host_filter(self) -> None:
        app = self.stockade
        label = app.host_label(app.host_filter) if app.host_filter is not None else None
        for table in self.query(LiveTable):
            table.set_host_only(label)
        self._show_tabs()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "next_host":
            return self.stockade.multi_host
        return super().check_action(action, parameters)

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        if self.stockade.multi_host:
            self.refresh_bindings()  # a viewer on one host, admin on another: the keys follow the row

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
        host, key = unqualify(event.key)
        app = self.stockade
        if self.current_view == "containers" and isinstance(key, str):
            app.open_detail(key, host=host)
        elif self.current_view == "apps" and isinstance(key, tuple):
            if key[0] == "ctr":
                app.open_detail(key[1], host=host)
            else:
                self.switch_view("containers")
                text = str(key[1])
                if host is not None:
                    text = f"host:{app.host_label(host)} {text}"
                self.view.table.set_filter(text)
                self.filter_changed()
        elif self.current_view == "alerts" and isinstance(key, str) and key.startswith("story:"):
            self.query_one(AlertsView).open_story(event.key)
        elif self.current_view == "alerts" and isinstance(key, int):
            alert = app.host_state(host).incidents.get(key) or {}
            if alert.get("container_id"):
                app.open_detail(str(alert["container_id"]), tab="incidents", host=host)

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
            if app.host_filter is not None:
                self._apply_host_filter()  # the host's label may have come with its hello
        self._show_tabs()

    def _show_tabs(self) -> None:
        app = self.stockade
        state = app.state
        counts = {"containers": state.count("containers"),
                  "apps": sum(len(hs.apps) or len({c.get("app") for c in hs.containers.values()})
                              for _, hs in state.per_host()),
                  "alerts": state.count("incidents"), "feeds": state.count("feeds")}
        host = app.host_label(app.host_filter) if app.host_filter is not None else None
        self.query_one(ViewTabs).show(self.current_view, self.current_table(), counts, host)


def printable_cmd(text: str) -> str:
    return esc(text, 40)
