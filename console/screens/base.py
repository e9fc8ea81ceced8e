"""What the main screen and the container detail share: the keys, the action flows
(choose, confirm with focus on Cancel, do, report), filtering, help, read-only mode."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.binding import Binding
from textual.screen import Screen

from enforcer.models import MODES
from enforcer.protocol import ProtocolError

from .. import actions
from ..actions import ActionPlan
from ..escape import printable
from ..format import as_dict, esc
from ..widgets.command_bar import CommandBar
from ..widgets.live_table import LiveTable
from ..widgets.view import Target
from .modals import ChoiceScreen, ConfirmScreen, HelpScreen, PromptScreen

if TYPE_CHECKING:
    from ..app import StockadeApp

# Keys that only mean something in some views are hidden from the footer elsewhere.
CONTEXT_ACTIONS = frozenset({"block", "unblock", "freeze", "unfreeze", "kill", "mode", "relearn", "sync",
                             "forensics", "allow", "sort", "sort_reverse"})

OWN_BINDING_PREFIXES = ("view", "action", "table.sort", "command", "filter", "help", "quit", "back", "alerts.",
                        "detail.")

VIEW_BINDINGS = [
    Binding("1", "view('apps')", "Apps", show=False, id="view.apps"),
    Binding("2", "view('containers')", "Containers", show=False, id="view.containers"),
    Binding("3", "view('alerts')", "Alerts", show=False, id="view.alerts"),
    Binding("4", "view('feeds')", "Feeds", show=False, id="view.feeds"),
    Binding("5", "view('audit')", "Audit", show=False, id="view.audit"),
]
COMMON_BINDINGS = [
    # Priority: handled as the key arrives, so that what is typed right after (fast, or
    # pasted) lands in the command line and not in the table it covers.
    Binding("colon", "command", "View", key_display=":", priority=True, id="command"),
    Binding("slash", "filter", "Filter", key_display="/", priority=True, id="filter"),
    Binding("question_mark", "help", "Help", key_display="?", id="help"),
    Binding("escape", "back", "Back", show=False, id="back"),
    *VIEW_BINDINGS,
    Binding("b", "block", "Block", id="action.block"),
    Binding("B", "unblock", "Unblock", id="action.unblock"),
    Binding("f", "freeze", "Freeze", id="action.freeze"),
    Binding("u", "unfreeze", "Unfreeze", id="action.unfreeze"),
    Binding("k", "kill", "Kill", id="action.kill"),
    Binding("m", "mode", "Mode", id="action.mode"),
    Binding("r", "relearn", "Relearn", id="action.relearn"),
    Binding("s", "sync", "Sync feeds", id="action.sync"),
    Binding("x", "forensics", "Forensics", id="action.forensics"),
    Binding("A", "allow", "Allow", id="action.allow"),
    Binding("o", "sort", "Sort", id="table.sort"),
    Binding("O", "sort_reverse", "Reverse sort", show=False, id="table.sort_reverse"),
]


class ConsoleScreen(Screen[None]):
    BINDINGS = list(COMMON_BINDINGS)  # type: ignore[assignment]

    @property
    def stockade(self) -> "StockadeApp":
        return self.app  # type: ignore[return-value]

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Never markup: messages carry container names and enforcer errors (escaped, inert)."""
        super().notify(printable(message, 500), title=title, severity=severity, timeout=timeout, markup=False)

    # -- what subclasses say -------------------------------------------------------------
    def current_target(self) -> Target:
        return Target()

    def current_actions(self) -> frozenset[str]:
        return frozenset()

    def current_table(self) -> LiveTable | None:
        return None

    def repaint(self, dirty: set[str]) -> None:
        pass

    # -- keys on or off --------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("command", "filter"):
            # While the command line has the focus, `:` and `/` are text for it.
            bars = self.query(CommandBar)
            return not (bars and bars.first().has_focus)
        if action in actions.MUTATING_ACTIONS and self._read_only_here():
            return False  # read-only: the key does nothing and is not shown
        if action in CONTEXT_ACTIONS and action not in self.current_actions():
            if action == "sort_reverse" and "sort" in self.current_actions():
                return True
            return False
        return True

    def _read_only_here(self) -> bool:
        """Read-only for what the keys would act on: in a fleet, the selected row's host."""
        app = self.stockade
        if not app.multi_host:
            return app.read_only
        try:
            host = self.current_target().host
        except Exception:  # noqa: BLE001 - not composed yet: the fleet as a whole
            host = None
        return app.read_only_for(host)

    def _for_host(self, plan: ActionPlan, host: int | None) -> ActionPlan:
        """Address the plan to the selected row's host, and say which host in the dialog."""
        plan.host = host
        label = self.stockade.host_label(host)
        if label:
            plan.lines.insert(0, Text.assemble(("on host ", "dim"), (esc(label, 64), "bold reverse")))
            plan.title = f"{plan.title} on {printable(label, 64)}"
        return plan

    # -- command line and filter -------------------------------------------------------------
    def _typing_in_bar(self, char: str) -> bool:
        """`:` and `/` are priority keys: inside the open command line they are just text."""
        bar = self.query_one(CommandBar)
        if bar.is_open and bar.has_focus:
            bar.insert_text_at_cursor(char)
            return True
        return False

    def action_command(self) -> None:
        if not self._typing_in_bar(":"):
            self.query_one(CommandBar).open("command", return_to=self.current_table())

    def action_filter(self) -> None:
        if self._typing_in_bar("/"):
            return
        table = self.current_table()
        if table is None:
            return
        self.query_one(CommandBar).open("filter", table.filter_text, return_to=table)

    def on_command_bar_filter_changed(self, event: CommandBar.FilterChanged) -> None:
        table = self.current_table()
        if table is not None:
            table.set_filter(event.text)
        self.filter_changed()

    def on_command_bar_closed(self, event: CommandBar.Closed) -> None:
        table = self.current_table()
        if table is not None and not table.has_focus:
            self.set_focus(table)

    def filter_changed(self) -> None:
        pass

    def action_sort(self) -> None:
        table = self.current_table()
        if table is not None and table.sortable:
            label = table.cycle_sort()
            self.notify(f"sorted by {label}", timeout=1.5)

    def action_sort_reverse(self) -> None:
        table = self.current_table()
        if table is not None and table.sortable:
            table.reverse_sort()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.help_sections()))

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        keys: list[tuple[str, str]] = []
        seen: set[str] = set()
        for key, active in self.active_bindings.items():
            binding = active.binding
            # Only the console's own keys (they all have ids); Textual's scrolling and
            # focus keys are covered under "Moving".
            if not active.enabled or not binding.description or key in seen or not binding.id \
                    or not binding.id.startswith(OWN_BINDING_PREFIXES):
                continue
            seen.add(key)
            keys.append((binding.key_display or self.app.get_key_display(binding), binding.description))
        table_keys = [("↑ ↓", "move"), ("PgUp PgDn", "page"), ("Home End", "first / last row"),
                      ("Enter", "open the selected row"), ("Esc", "clear the filter, close, or go back (never quits)"),
                      ("1-5", "apps, containers, alerts, feeds, audit"), ("click header", "sort by that column")]
        commands = [(":apps", "app > service > container, with topology"), (":containers", "live containers"),
                    (":alerts", "incidents; :alerts kind=process sev=high app=NAME filters"),
                    (":feeds", "threat feeds and their hits"), (":audit", "actions taken, by whom"),
                    (":quit", "leave the console")]
        sections = [("This screen", keys), ("Moving", table_keys), ("Commands (: then Tab completes)", commands)]
        if self.stockade.multi_host:
            sections.append(("Fleet (several enforcers)", [
                ("h", "one host's rows, then the next host's, then every host's (main screen)"),
                ("/host:NAME", "in the filter: rows of the hosts whose label starts with NAME"),
                ("", "actions go to the host of the selected row; the header's second line is each host's health"),
            ]))
        if self.stockade.read_only:
            sections.append(("Read-only", [("", "action keys (b B f u k m r s x A) are off: "
                                                + self.stockade.read_only_reason)]))
        return sections

    # -- actions ---------------------------------------------------------------------------
    def _container(self, target: Target) -> dict[str, Any] | None:
        if not target.container_id:
            return None
        c = self.stockade.host_state(target.host).containers.get(target.container_id)
        if c is not None:
            return c
        alert = target.alert or {}
        return {"id": target.container_id, "name": alert.get("container") or target.container_id[:12],
                "app": alert.get("app") or target.app or ""}

    def _need_container(self, what: str) -> tuple[dict[str, Any] | None, int | None]:
        target = self.current_target()
        c = self._container(target)
        if c is None:
            self.notify(f"{what}: select a container (or an incident of one) first", severity="warning")
        return c, target.host

    def action_freeze(self) -> None:
        c, host = self._need_container("freeze")
        if c is not None:
            self.run_worker(self._confirm_and_run(self._for_host(actions.freeze_plan(c), host)), group="action",
                            exit_on_error=False)

    def action_unfreeze(self) -> None:
        c, host = self._need_container("unfreeze")
        if c is not None:
            self.run_worker(self._confirm_and_run(self._for_host(actions.unfreeze_plan(c), host)), group="action",
                            exit_on_error=False)

    def action_forensics(self) -> None:
        c, host = self._need_container("forensics")
        if c is not None:
            self.run_worker(self._confirm_and_run(self._for_host(actions.forensics_plan(c), host), timeout=120.0),
                            group="action", exit_on_error=False)

    def action_kill(self) -> None:
        target = self.current_target()
        c = self._container(target)
        if c is None or not target.pid:
            self.notify("kill: select an incident (or a process) with a pid first", severity="warning")
            return
        alert = target.alert or {}
        detail = as_dict(alert.get("detail"))
        what = target.process or str(detail.get("path") or alert.get("subject") or "")
        self.run_worker(self._confirm_and_run(self._for_host(actions.kill_plan(c, target.pid, what), target.host)),
                        group="action", exit_on_error=False)

    def action_unblock(self) -> None:
        target = self.current_target()
        c = self._container(target)
        if c is None or not target.block:
            self.notify("unblock: select a block (container detail, Blocks tab) first", severity="warning")
            return
        self.run_worker(self._confirm_and_run(self._for_host(actions.unblock_plan(c, target.block), target.host)),
                        group="action", exit_on_error=False)

    def action_block(self) -> None:
        target = self.current_target()
        c = self._container(target)
        if c is None:
            self.notify("block: select a container (or an incident of one) first", severity="warning")
            return
        self.run_worker(self._block_flow(c, target.peer or "", target.host), group="action", exit_on_error=False)

    async def _block_flow(self, c: dict[str, Any], peer: str, host: int | None = None) -> None:
        explanation = Text("Block traffic between ", end="")
        explanation.append(esc(c.get("name"), 128), style="bold")
        explanation.append(" and the peer below: a container name, an IP or CIDR, with an optional :port.")
        if peer:
            explanation.append("\nPrefilled from the selected incident.", style="dim")
        value = await self.app.push_screen_wait(PromptScreen("Block a peer", explanation, printable(peer, 300),
                                                             "container, 10.0.0.5, 10.0.0.0/24:443 …"))
        if value:
            await self._confirm_and_run(self._for_host(actions.block_plan(c, value), host))

    def action_mode(self) -> None:
        target = self.current_target()
        if not target.container_id and not target.app:
            self.notify("mode: select an app or a container first", severity="warning")
            return
        self.run_worker(self._mode_flow(target), group="action", exit_on_error=False)

    async def _mode_flow(self, target: Target) -> None:
        state = self.stockade.host_state(target.host)
        session = self.stockade.session_for(target.host)
        c = self._container(target)
        scope = "app"
        if c is not None:
            options: list[tuple[str, Text | str]] = []
            if c.get("app"):
                options.append(("app", Text(f"the whole app {printable(c.get('app'), 128)}")))
            options.append(("container", Text(f"only container {printable(c.get('name'), 128)}")))
            if len(options) > 1:
                choice = await self.app.push_screen_wait(ChoiceScreen(
                    "Change mode: of what?", Text("A container override wins over its app's mode."), options, "app"))
                if choice is None:
                    return
                scope = choice
            else:
                scope = "container"
        if scope == "app":
            name = str(target.app or (c or {}).get("app") or "")
            current = str(state.apps.get(name, {}).get("mode") or "")
            label, ref = name, name
        else:
            assert c is not None
            current, label, ref = str(c.get("mode") or ""), str(c.get("name") or ""), c["id"]
        options = [(m, Text(f"{m:<8} {actions.MODE_MEANING[m]}")) for m in MODES]
        mode = await self.app.push_screen_wait(ChoiceScreen(
            f"Change mode of {printable(label, 128)}", Text(f"now: {printable(current or '?', 10)}"), options, current))
        if mode is None:
            return
        preview: dict[str, Any] | str | None = None
        if mode == "protect":  # before the confirm button: what protect would have stopped
            try:
                preview = await session.call("mode", timeout=10.0, target=ref, mode=mode, scope=scope,
                                                           preview=True)
            except ProtocolError as e:
                preview = str(e)
        members = [c] if scope == "container" and c is not None else \
            [x for x in state.containers.values() if x.get("app") == ref]
        gaps = sorted({str(g) for x in members for g in (x.get("profile_gaps") or []) if isinstance(g, str)})
        await self._confirm_and_run(self._for_host(actions.mode_plan(ref, scope, mode, current, label, preview, gaps),
                                                   target.host))

    def action_allow(self) -> None:
        target = self.current_target()
        alert = target.alert
        if not alert or not alert.get("id"):
            self.notify("allow: select an incident first", severity="warning")
            return
        self.run_worker(self._allow_flow(alert, target.host), group="action", exit_on_error=False)

    async def _allow_flow(self, alert: dict[str, Any], host: int | None = None) -> None:
        if self.stockade.read_only_for(host):
            self.notify("read-only: actions are off", severity="warning")
            return
        try:
            dry_run = await self.stockade.session_for(host).call("allow", timeout=10.0, alert_id=alert["id"], dry_run=True)
        except ProtocolError as e:
            self.notify(f"allow: {printable(str(e), 300)}", severity="warning", timeout=8)
            return
        await self._confirm_and_run(self._for_host(actions.allow_plan(alert, dry_run), host))

    def action_relearn(self) -> None:
        target = self.current_target()
        c = self._container(target)
        if c is not None:
            plan = actions.relearn_plan(c["id"], f"container {c.get('name')} (its service's profile)")
        elif target.app:
            plan = actions.relearn_plan(target.app, f"app {target.app} (every profile of the app)")
        else:
            self.notify("relearn: select an app or a container first", severity="warning")
            return
        self.run_worker(self._confirm_and_run(self._for_host(plan, target.host)), group="action", exit_on_error=False)

    def action_sync(self) -> None:
        host = self.current_target().host
        if self.stockade.multi_host and host is None:
            self.notify("sync: select a feed of the host whose feeds to sync", severity="warning")
            return
        plan = self._for_host(actions.sync_plan(self.stockade.host_state(host).feeds), host)
        self.run_worker(self._confirm_and_run(plan, timeout=300.0), group="action", exit_on_error=False)

    async def _confirm_and_run(self, plan: ActionPlan, timeout: float = 30.0) -> None:
        if self.stockade.read_only_for(plan.host):
            self.notify("read-only: actions are off" + (f" on {self.stockade.host_label(plan.host)}"
                                                         if plan.host is not None else ""), severity="warning")
            return
        confirmed = await self.app.push_screen_wait(
            ConfirmScreen(plan.title, plan.lines, plan.confirm_label, plan.request_text()))
        if not confirmed:
            self.notify(f"{plan.title}: cancelled", timeout=2)
            return
        try:
            result = await self.stockade.session_for(plan.host).call(plan.op, timeout=timeout, **plan.args)
        except ProtocolError as e:
            message = f"{plan.title} failed: {printable(str(e), 300)}"
            self.notify(message, severity="error", timeout=8)
            self.stockade.last_action = message
            return
        message = actions.describe_result(plan, result)
        if plan.host is not None and self.stockade.multi_host:
            message = f"{self.stockade.host_label(plan.host)}: {message}"
        self.stockade.last_action = message
        self.notify(message, timeout=6)
        if self.app.is_running:
            await self.stockade.after_action(plan.op, plan.host)
