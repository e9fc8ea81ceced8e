"""One container: what it is, its profile as tabs, its incidents and its process tree.

Opened with Enter from the containers, apps or alerts view; Esc goes back. The profile
and incidents are fetched in a worker every few seconds (profiles grow while learning);
the container's own line follows inventory events like every other view.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Static, TabbedContent, TabPane

from enforcer import protocol
from enforcer.protocol import ProtocolError

from .. import actions
from ..escape import printable
from ..format import MODE_STYLE, as_list, date_time, esc
from ..output import duration
from ..proctree import Proc, process_tree
from ..widgets.alerts_view import COLUMNS as INCIDENT_COLUMNS
from ..widgets.alerts_view import alert_detail_text, alert_peer, alert_pid, incident_row
from ..widgets.command_bar import VIEW_NAMES, CommandBar, resolve_command
from ..widgets.containers_view import profile_str, status_str
from ..widgets.header import ConnectionBanner, StatusHeader
from ..widgets.live_table import Column, LiveTable, Row
from ..widgets.view import Target
from .base import ConsoleScreen

PROFILE_KINDS = [("process", "Processes"), ("listener", "Listeners"), ("peer", "Peers"), ("file", "Files"),
                 ("syscall", "Syscalls")]
ENTRY_COLUMNS = [
    Column("key", "ENTRY", min_width=8, max_width=60),
    Column("detail", "DETAIL", min_width=6, max_width=200, flex=True),
    Column("source", "SOURCE", min_width=7, max_width=8),
    Column("first_seen", "FIRST SEEN", min_width=14, max_width=14),
]
PROCESS_COLUMNS = [
    Column("key", "PATH", min_width=8, max_width=60),
    Column("sha256", "SHA256", min_width=16, max_width=64, flex=True),
    Column("binary", "BINARY", min_width=6, max_width=40, hide_below=120),
    Column("source", "SOURCE", min_width=7, max_width=8),
    Column("first_seen", "FIRST SEEN", min_width=14, max_width=14),
]
TREE_COLUMNS = [
    Column("pid", "PID", min_width=6, max_width=8, align="right"),
    Column("ppid", "PPID", min_width=6, max_width=8, align="right"),
    Column("command", "COMMAND", min_width=10, max_width=400, flex=True),
]
REFRESH_SECONDS = 3.0


def _data_text(data: Any, skip: tuple[str, ...] = ()) -> str:
    if isinstance(data, dict):
        items = {k: v for k, v in data.items() if k not in skip}
        return json.dumps(items, ensure_ascii=True, separators=(",", ":"), default=str) if items else ""
    return "" if data in (None, "") else json.dumps(data, ensure_ascii=True, default=str)


def entry_row(kind: str, i: int, e: dict[str, Any]) -> Row:
    data = e.get("data")
    source = str(e.get("source") or "")
    source_style = "cyan" if source == "seed" else "green" if source == "learned" else ""
    if source == "seed" and e.get("never_used") is True:
        source, source_style = "unused", "yellow"  # seeded, never seen in use while it learned (P prunes)
    first = date_time(e.get("first_seen"))
    if kind == "process":
        d = data if isinstance(data, dict) else {}
        path = d.get("path") or str(e.get("key") or "").split(" sha256:", 1)[0]
        sha = d.get("sha256") or "not pinned yet"
        cells: tuple[str, ...] = (esc(path, 512), esc(sha, 64), esc(d.get("binary") or "", 256), esc(source, 10),
                                  first)
        styles = ("bold", "dim" if d.get("sha256") else "yellow", "dim", source_style, "dim")
    else:
        cells = (esc(e.get("key"), 512), esc(_data_text(data), 400), esc(source, 10), first)
        styles = ("bold", "dim", source_style, "dim", "")
    return Row(key=(kind, str(e.get("key")), i), cells=cells, styles=styles)


def tree_row(p: Proc) -> Row:
    prefix = "  " * p.depth + ("└─ " if p.depth else "")
    command = p.cmdline or (f"[{p.comm}]" if p.comm else "(gone)")
    return Row(key=p.pid, cells=(str(p.pid), str(p.ppid) if p.ppid else "-", prefix + esc(command, 1024)),
               styles=("bold", "dim", ""), sort=(p.pid, p.ppid, command))


TAB_ORDER = [f"tab-{kind}" for kind, _ in PROFILE_KINDS] + ["tab-incidents", "tab-tree", "tab-blocks"]
BLOCK_COLUMNS = [
    Column("id", "ID", min_width=3, max_width=6, align="right"),
    Column("peer", "PEER", min_width=6, max_width=48),
    Column("port", "PORT", min_width=4, max_width=6, align="right"),
    Column("proto", "PROTO", min_width=5, max_width=6),
    Column("source", "SOURCE", min_width=6, max_width=10),
    Column("created", "CREATED", min_width=14, max_width=14),
    Column("reason", "REASON", min_width=6, max_width=200, flex=True),
]


def block_row(b: dict[str, Any]) -> Row:
    port = b.get("port")
    cells = (esc(b.get("id"), 8), esc(b.get("peer"), 200), str(port) if isinstance(port, int) and port else "all",
             esc(b.get("proto") or "any", 8), esc(b.get("source"), 16), date_time(b.get("created")),
             esc(b.get("reason"), 300))
    return Row(key=b.get("id"), cells=cells, styles=("dim", "bold bright_red", "", "", "dim", "dim", ""))


class ContainerDetailScreen(ConsoleScreen):
    BINDINGS = [
        Binding("right", "tab(1)", "Next tab", show=False, id="detail.next_tab"),
        Binding("left", "tab(-1)", "Previous tab", show=False, id="detail.prev_tab"),
        Binding("tab", "tab(1)", "Next tab", show=False, id="detail.tab"),
        Binding("shift+tab", "tab(-1)", "Previous tab", show=False, id="detail.shift_tab"),
        Binding("P", "prune", "Prune unused", id="detail.prune"),
    ]

    def __init__(self, container_id: str, tab: str = "process", host: int | None = None) -> None:
        super().__init__()
        self.container_id = container_id
        self.host = host  # which host of a fleet console (None: the only one)
        self.initial_tab = tab
        self.profile: dict[str, Any] | None = None
        self.profile_note = "loading…"
        self.incidents: dict[int, dict[str, Any]] = {}
        self.incidents_note = "loading…"
        self.procs: list[Proc] = []
        self.blocks: list[dict[str, Any]] = []
        self.blocks_note = "loading…"

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status-header")
        yield ConnectionBanner(id="connection-banner")
        yield Static(id="breadcrumb")
        yield Static(id="container-info")
        with TabbedContent(initial=f"tab-{self.initial_tab}", id="detail-tabs"):
            for kind, title in PROFILE_KINDS:
                with TabPane(title, id=f"tab-{kind}"):
                    yield LiveTable(PROCESS_COLUMNS if kind == "process" else ENTRY_COLUMNS,
                                    sort_column="key", empty_text="loading…", id=f"profile-{kind}")
            with TabPane("Incidents", id="tab-incidents"):
                yield LiveTable(INCIDENT_COLUMNS, sort_column="id", sort_reverse=True, empty_text="loading…",
                                id="detail-incidents")
                yield Static(id="detail-incident")
            with TabPane("Process tree", id="tab-tree"):
                yield LiveTable(TREE_COLUMNS, sortable=False, empty_text="loading…", id="process-tree")
            with TabPane("Blocks", id="tab-blocks"):
                yield LiveTable(BLOCK_COLUMNS, sort_column="id", empty_text="loading…", id="detail-blocks")
        with Horizontal(id="command-line"):
            yield Static(":", id="command-prompt")
            yield CommandBar(id="command-bar")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.repaint({"status", "hello", "connection", "containers", "alerts"})
        self.run_worker(self._refresh_loop(), group="detail-refresh", exclusive=True, exit_on_error=False)
        self.call_after_refresh(self._focus_tab_table)

    # -- what the keys act on ----------------------------------------------------------------
    @property
    def container(self) -> dict[str, Any]:
        return self.stockade.host_state(self.host).containers.get(self.container_id) or {"id": self.container_id,
                                                                         "name": self.container_id[:12]}

    def current_table(self) -> LiveTable | None:
        tabs = self.query_one("#detail-tabs", TabbedContent)
        pane = tabs.active_pane
        return pane.query_one(LiveTable) if pane is not None else None

    def current_actions(self) -> frozenset[str]:
        base = {"block", "freeze", "unfreeze", "kill", "mode", "relearn", "forensics", "sort"}
        active = self.query_one("#detail-tabs", TabbedContent).active
        if active == "tab-blocks":
            base.add("unblock")
        if active == "tab-incidents":
            base.add("allow")
        return frozenset(base)

    def current_target(self) -> Target:
        c = self.container
        target = Target(container_id=self.container_id, app=c.get("app"), host=self.host)
        active = self.query_one("#detail-tabs", TabbedContent).active
        if active == "tab-tree":
            key = self.query_one("#process-tree", LiveTable).cursor_key
            target.pid = key if isinstance(key, int) else None
            proc = next((p for p in self.procs if p.pid == target.pid), None)
            target.process = (proc.cmdline or proc.comm) if proc else ""
        elif active == "tab-blocks":
            key = self.query_one("#detail-blocks", LiveTable).cursor_key
            target.block = next((b for b in self.blocks if b.get("id") == key), None)
        elif active == "tab-incidents":
            key = self.query_one("#detail-incidents", LiveTable).cursor_key
            alert = self.incidents.get(key) if isinstance(key, int) else None
            if alert:
                target.alert, target.pid, target.peer = alert, alert_pid(alert), alert_peer(alert)
        return target

    def never_used(self) -> int:
        """Seeded entries of the active profile never used while it learned (0: nothing to prune)."""
        p = self.profile.get("profile") if isinstance(self.profile, dict) else None
        if not isinstance(p, dict) or p.get("state") != "active":
            return 0
        n = p.get("never_used")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "prune" and not self.never_used():
            return False  # shown only when the active profile has seeds never used
        return super().check_action(action, parameters)

    # -- keys ------------------------------------------------------------------------------
    def action_prune(self) -> None:
        self.run_worker(self._prune_flow(), group="action", exit_on_error=False)

    async def _prune_flow(self) -> None:
        if self.stockade.read_only:
            self.notify("read-only: actions are off", severity="warning")
            return
        c = self.container
        try:  # the enforcer's own list, exactly what the confirmed request removes
            dry_run = await self.stockade.session.call("profile.prune", timeout=10.0, target=self.container_id,
                                                       dry_run=True)
        except ProtocolError as e:
            self.notify(f"prune: {printable(str(e), 300)}", severity="warning", timeout=8)
            return
        if not isinstance(dry_run, dict) or not as_list(dry_run.get("removed")):
            self.notify(f"{printable(c.get('name'), 128)}: no seeded entry is unused; nothing to prune", timeout=4)
            return
        await self._confirm_and_run(actions.prune_plan(c, dry_run))

    def action_back(self) -> None:
        table = self.current_table()
        if table is not None and table.filter_text:
            table.set_filter("")
            return
        self.app.pop_screen()

    def action_view(self, name: str) -> None:
        self.app.pop_screen()
        main = self.app.screen
        if hasattr(main, "switch_view"):
            main.switch_view(name)

    def on_command_bar_command(self, event: CommandBar.Command) -> None:
        name, _ = resolve_command(event.text)
        if name == "quit":
            self.app.exit()
        elif name == "help":
            self.action_help()
        elif name in VIEW_NAMES:
            self.action_view(name)

    def action_tab(self, step: int) -> None:
        tabs = self.query_one("#detail-tabs", TabbedContent)
        i = TAB_ORDER.index(tabs.active) if tabs.active in TAB_ORDER else 0
        tabs.active = TAB_ORDER[(i + step) % len(TAB_ORDER)]

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.call_after_refresh(self._focus_tab_table)
        self.refresh_bindings()

    def _focus_tab_table(self) -> None:
        table = self.current_table()
        if table is not None:
            table.focus()

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        if event.table.id == "detail-incidents":
            self._show_incident()

    def _show_incident(self) -> None:
        key = self.query_one("#detail-incidents", LiveTable).cursor_key
        alert = self.incidents.get(key) if isinstance(key, int) else None
        self.query_one("#detail-incident", Static).update(alert_detail_text(alert, actions=not self.stockade.read_only))

    # -- data --------------------------------------------------------------------------------
    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh_data()
            await asyncio.sleep(REFRESH_SECONDS)

    async def refresh_data(self) -> None:
        app = self.stockade
        state = app.host_state(self.host)
        session = app.session_for(self.host)
        if state.connection.state != "connected":
            return
        try:
            self.profile = await session.call("profile", target=self.container_id)
            self.profile_note = ""
        except ProtocolError as e:
            self.profile_note = f"profile: {e}"
        try:
            rows = await session.call("alerts", container=self.container_id, limit=1000)
            self.incidents = {a["id"]: a for a in rows if isinstance(a, dict) and isinstance(a.get("id"), int)}
            self.incidents_note = ""
        except ProtocolError as e:
            self.incidents_note = f"incidents: {e}"
        try:
            fresh = await session.call("container", target=self.container_id)
            if isinstance(fresh, dict) and fresh.get("id"):
                fresh["_received"] = state.clock()
                state.containers[fresh["id"]] = fresh
        except ProtocolError as e:
            if e.code == protocol.NOT_FOUND:
                self.profile_note = self.profile_note or "this container is gone"
        try:
            rows = await session.call("blocks", target=self.container_id)
            self.blocks = [b for b in rows if isinstance(b, dict)] if isinstance(rows, list) else []
            self.blocks_note = ""
        except ProtocolError as e:
            self.blocks_note = f"blocks: {e}"
        pids = as_list(self.container.get("pids"))
        self.procs = await asyncio.to_thread(process_tree, pids)
        if not self.is_attached or not self.app.is_running:
            return  # closed (Esc, or the console quitting) while we were asking
        self._paint_blocks()
        self._paint_profile()
        self._paint_incidents()
        self._paint_tree()
        self._paint_info()
        self.refresh_bindings()  # the prune key follows the profile

    # -- painting ----------------------------------------------------------------------------
    def repaint(self, dirty: set[str]) -> None:
        app = self.stockade
        state = app.state
        if dirty & {"status", "hello", "connection", "alerts"}:
            self.query_one(StatusHeader).show(state, app.read_only, app.clock)
            self.query_one(ConnectionBanner).show(state, app.retry_seconds)
        if dirty & {"containers", "connection"}:
            self._paint_info()
        if "alerts" in dirty:
            live = {i: a for i, a in app.host_state(self.host).incidents.items()
                    if a.get("container_id") == self.container_id}
            if live:
                self.incidents.update(live)
                self._paint_incidents()
        if "hello" in dirty:
            self.refresh_bindings()

    def _paint_info(self) -> None:
        c = self.container
        crumb = Text(" Containers › ", style="dim", end="")
        if self.stockade.host_label(self.host):
            crumb.append(esc(self.stockade.host_label(self.host), 64) + " › ", style="bold")
        crumb.append(esc(c.get("name"), 128), style="bold")
        crumb.append("   Esc back · Tab/←→ switch tabs", style="dim")
        self.query_one("#breadcrumb", Static).update(crumb)
        status, status_style = status_str(c)
        profile, profile_style = profile_str(c, self.stockade.host_state(self.host).clock())
        mode = str(c.get("mode") or "")
        info = Text(end="")

        def fact(label: str, value: Any, style: str = "") -> None:
            info.append(f" {label} ", style="dim")
            info.append(value if isinstance(value, str) else esc(value, 200), style=style)

        fact("id", esc(str(c.get("id", ""))[:12]))
        fact("app", esc(c.get("app"), 128), "bold")
        fact("service", esc(c.get("service"), 128))
        fact("image", esc(c.get("image"), 200))
        fact("state", status, status_style)
        fact("mode", esc(mode or "-", 10), MODE_STYLE.get(mode, ""))
        fact("profile", profile, profile_style)
        info.append("\n")
        nets = [f"{n.get('network')}={n.get('ip') or '-'}" for n in as_list(c.get("networks")) if isinstance(n, dict)]
        ports = [f"{p.get('port')}/{p.get('proto', 'tcp')}" for p in as_list(c.get("ports")) if isinstance(p, dict)]
        fact("networks", esc(" ".join(nets) or "-", 300))
        fact("ports", esc(" ".join(ports) or "-", 200))
        pids = as_list(c.get("pids"))
        fact("pids", str(len(pids)))
        started = c.get("started_at")
        if isinstance(started, (int, float)) and started > 0:
            fact("up", duration(max(0.0, self.stockade.clock() - started)))
        if self.profile and isinstance(self.profile.get("profile"), dict):
            p = self.profile["profile"]
            info.append("\n")
            fact("profile #", esc(p.get("id"), 20))
            fact("state", esc(p.get("state"), 20), "cyan" if p.get("state") == "learning" else "green")
            fact("learn until", date_time(p.get("learn_until")))
            if p.get("activated"):
                fact("active since", date_time(p.get("activated")))
            fact("image digest", esc(str(p.get("image_digest") or "")[:19], 20))
            if self.never_used():
                fact("seeded, never used", f"{self.never_used()} (P prunes)", "yellow")
        self.query_one("#container-info", Static).update(info)

    def _paint_profile(self) -> None:
        entries: dict[str, Any] = {}
        if self.profile and isinstance(self.profile.get("profile"), dict):
            raw = self.profile["profile"].get("entries")
            entries = raw if isinstance(raw, dict) else {}
        for kind, _ in PROFILE_KINDS:
            table = self.query_one(f"#profile-{kind}", LiveTable)
            rows = [entry_row(kind, i, e) for i, e in enumerate(entries.get(kind) or []) if isinstance(e, dict)]
            table.set_empty_text(self.profile_note or f"no {kind} entries yet")
            table.set_rows(rows)

    def _paint_incidents(self) -> None:
        table = self.query_one("#detail-incidents", LiveTable)
        table.set_empty_text(self.incidents_note or "no incidents for this container")
        table.set_rows(incident_row(a) for a in self.incidents.values())
        self._show_incident()

    def _paint_blocks(self) -> None:
        table = self.query_one("#detail-blocks", LiveTable)
        table.set_empty_text(self.blocks_note or "no blocks in force (b blocks a peer)")
        table.set_rows(block_row(b) for b in self.blocks if b.get("id") is not None)

    def _paint_tree(self) -> None:
        table = self.query_one("#process-tree", LiveTable)
        table.set_empty_text("no processes (not running)")
        table.set_rows(tree_row(p) for p in self.procs)
