"""The Textual console: `stockade` with no command.

The app owns three things: the state (what the enforcer told us), the session (the one
connection, through console.client, reconnecting forever), and the repaint pacing.
Given several targets it is a fleet console (console/fleet.py): one client, session and
state per host, each reconnecting on its own, and the views show every host's rows side
by side with a HOST column. The
session marks state domains dirty and asks for a repaint; repaints are coalesced to at
most a few per second, so a burst of 1,000 alerts costs a handful of redraws. Screens
get method calls down (`repaint(dirty)`); widgets send messages up.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from textual.app import App
from textual.screen import ModalScreen
from textual.timer import Timer

from .client import EnforcerClient
from .fleet import FleetState, HostState
from .screens.base import ConsoleScreen
from .screens.detail import ContainerDetailScreen
from .screens.main import MainScreen
from .session import ClientLike, EnforcerSession
from .state import ConsoleState

REPAINT_INTERVAL = 0.25  # seconds: at most 4 repaints a second, whatever arrives
FLEET_BACKOFF = 8  # a fleet's host that is down is retried at retry_seconds, doubling up to 8 times that


class StockadeApp(App[None]):
    CSS_PATH = "stockade.tcss"
    TITLE = "Stockade"
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, socket_path: str | None = None, read_only: bool = False, *,
                 client: ClientLike | None = None, clock: Callable[[], float] = time.time,
                 retry_seconds: float = 1.0, status_interval: float = 2.0,
                 initial_view: str = "containers", targets: list[str] | None = None,
                 clients: list[ClientLike] | None = None) -> None:
        """One enforcer (`socket_path` or `client`), or a fleet: `targets` (each gets its own
        EnforcerClient) or `clients` (tests)."""
        super().__init__()
        if clients is None:
            if client is not None:
                clients = [client]
            else:
                clients = [EnforcerClient(t) for t in (targets or [socket_path])]  # type: ignore[misc]
        self.retry_seconds = retry_seconds
        self.hosts: list[HostState] = []
        self.sessions: list[EnforcerSession] = []
        self.clients: list[ClientLike] = list(clients)
        backoff = retry_seconds * FLEET_BACKOFF if len(self.clients) > 1 else None
        for i, c in enumerate(self.clients):
            host_state = ConsoleState()
            host_state.clock = clock
            target = str(getattr(c, "target", None) or getattr(c, "path", "") or "")
            hint = getattr(c, "host_label", None)
            self.hosts.append(HostState(i, target, host_state, hint=hint if isinstance(hint, str) else ""))
            self.sessions.append(EnforcerSession(c, host_state, self.request_repaint, retry_seconds=retry_seconds,
                                                 status_interval=status_interval, max_retry_seconds=backoff))
        self.multi_host = len(self.clients) > 1
        self.fleet = FleetState(self.hosts, clock=clock)
        self.fleet.relabel()
        # What the views read: the one host's state, or the fleet (the same questions).
        self.state: ConsoleState | FleetState = self.fleet if self.multi_host else self.hosts[0].state
        self.client = self.clients[0]
        self.session = self.sessions[0]
        self.host_filter: int | None = None  # `h`: only this host's rows (fleet console)
        self.read_only_flag = read_only
        self.clock = clock
        self.initial_view = initial_view
        self.repaints = 0  # tests and the benchmark read how many repaints a burst cost
        self.last_action = ""
        self._repaint_timer: Timer | None = None
        self._last_repaint = 0.0

    # -- read-only -------------------------------------------------------------------------
    @property
    def read_only(self) -> bool:
        """No actions anywhere: --read-only, or the viewer role on every host."""
        return self.read_only_flag or self.state.read_only_role

    def read_only_for(self, host: int | None) -> bool:
        """No actions on this host (its own hello's role decides); None: the fleet as a whole."""
        if host is None or not self.multi_host:
            return self.read_only
        return self.read_only_flag or self.hosts[host].state.read_only_role

    @property
    def read_only_reason(self) -> str:
        if self.read_only_flag:
            return "started with --read-only"
        hello = self.state.hello
        user = hello.get("user", "?")
        where = " on every host" if self.multi_host else ""
        return f"user {user} has the {hello.get('role', 'viewer')} role{where} (admin needed)"

    # -- hosts -----------------------------------------------------------------------------
    def session_for(self, host: int | None) -> EnforcerSession:
        return self.sessions[host or 0]

    def host_state(self, host: int | None) -> ConsoleState:
        return self.hosts[host or 0].state

    def host_label(self, host: int | None) -> str:
        return self.hosts[host].label if host is not None and self.multi_host else ""

    # -- life cycle --------------------------------------------------------------------------
    def on_mount(self) -> None:
        keymap = parse_keymap(os.environ.get("STOCKADE_KEYS", ""))
        if keymap:
            self.set_keymap(keymap)
        self.push_screen(MainScreen(self.initial_view))
        for i, session in enumerate(self.sessions):
            # Each host its own loop: one that is down, slow or refusing holds up no other.
            self.run_worker(session.run(), name=f"enforcer-session-{i}", group=f"session-{i}", exclusive=True)

    async def on_unmount(self) -> None:
        for client in self.clients:
            close = getattr(client, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - leaving anyway
                    pass

    # -- repaint pacing ----------------------------------------------------------------------
    def request_repaint(self) -> None:
        """Called by the session after every change; coalesces into one repaint per interval."""
        if self._repaint_timer is not None or not self.is_running:
            return
        delay = max(0.02, REPAINT_INTERVAL - (time.monotonic() - self._last_repaint))
        self._repaint_timer = self.set_timer(delay, self._repaint, name="repaint")

    def _repaint(self) -> None:
        self._repaint_timer = None
        if not self.is_running or not self._screen_stack:
            return  # closing
        if isinstance(self.screen, ModalScreen):
            # No redraws under a dialog: what it names must not move; catch up when it closes.
            self._repaint_timer = self.set_timer(REPAINT_INTERVAL, self._repaint, name="repaint")
            return
        dirty = self.state.take_dirty()
        if not dirty:
            return
        if self.multi_host and "hello" in dirty and self.fleet.relabel():
            dirty |= {"containers", "apps", "alerts", "feeds", "audit"}  # the HOST cells change
        self._last_repaint = time.monotonic()
        self.repaints += 1
        with self.batch_update():
            for screen in list(self._screen_stack):
                if isinstance(screen, ConsoleScreen):
                    screen.repaint(dirty)

    def repaint_now(self) -> None:
        """Repaint whatever is dirty at once (tests, benchmarks)."""
        if self._repaint_timer is not None:
            self._repaint_timer.stop()
            self._repaint_timer = None
        self._repaint()

    # -- navigation and actions (called by screens) ----------------------------------------
    def open_detail(self, container_id: str, tab: str = "process", host: int | None = None) -> None:
        self.push_screen(ContainerDetailScreen(container_id, tab, host=host if self.multi_host else None))

    async def after_action(self, op: str, host: int | None = None) -> None:
        """Re-read what an action changed on its host (events may also say so; a read is
        cheap and sure)."""
        session = self.session_for(host)
        if op in ("freeze", "unfreeze", "mode", "relearn", "forensics", "block", "unblock"):
            await session.reload_one("containers")
        if op in ("mode", "relearn"):
            await session.reload_one("apps")
        if op.startswith("feeds."):
            await session.reload_one("feeds")
            await session.reload_one("feeds.hits")
        for screen in list(self._screen_stack):
            if isinstance(screen, ContainerDetailScreen) and screen.is_attached:
                await screen.refresh_data()


def parse_keymap(text: str) -> dict[str, str]:
    """`action.freeze=F,view.alerts=a` -> {"action.freeze": "F", ...}: remap keys by binding id."""
    keymap: dict[str, str] = {}
    for item in text.split(","):
        binding_id, _, keys = item.partition("=")
        if binding_id.strip() and keys.strip():
            keymap[binding_id.strip()] = keys.strip()
    return keymap


def run_console(targets: list[str] | str, read_only: bool = False) -> int:
    """The console on one enforcer or on several (a fleet): each target a socket path,
    `unix:///path` or `ssh://user@host:port/path` (what console.client accepts)."""
    if isinstance(targets, str):
        targets = [targets]
    StockadeApp(targets=list(targets) or [None], read_only=read_only).run()  # type: ignore[list-item]
    return 0

