"""The Textual console: `stockade` with no command.

The app owns three things: the state (what the enforcer told us), the session (the one
connection, through console.client, reconnecting forever), and the repaint pacing. The
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
from .screens.base import ConsoleScreen
from .screens.detail import ContainerDetailScreen
from .screens.main import MainScreen
from .session import ClientLike, EnforcerSession
from .state import ConsoleState

REPAINT_INTERVAL = 0.25  # seconds: at most 4 repaints a second, whatever arrives


class StockadeApp(App[None]):
    CSS_PATH = "stockade.tcss"
    TITLE = "Stockade"
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, socket_path: str | None = None, read_only: bool = False, *,
                 client: ClientLike | None = None, clock: Callable[[], float] = time.time,
                 retry_seconds: float = 1.0, status_interval: float = 2.0,
                 initial_view: str = "containers") -> None:
        super().__init__()
        self.client: ClientLike = client if client is not None else EnforcerClient(socket_path)
        self.state = ConsoleState()
        self.state.clock = clock
        self.retry_seconds = retry_seconds
        self.session = EnforcerSession(self.client, self.state, self.request_repaint,
                                       retry_seconds=retry_seconds, status_interval=status_interval)
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
        return self.read_only_flag or self.state.read_only_role

    @property
    def read_only_reason(self) -> str:
        if self.read_only_flag:
            return "started with --read-only"
        user = self.state.hello.get("user", "?")
        return f"user {user} has the {self.state.hello.get('role', 'viewer')} role (admin needed)"

    # -- life cycle --------------------------------------------------------------------------
    def on_mount(self) -> None:
        keymap = parse_keymap(os.environ.get("STOCKADE_KEYS", ""))
        if keymap:
            self.set_keymap(keymap)
        self.push_screen(MainScreen(self.initial_view))
        self.run_worker(self.session.run(), name="enforcer-session", group="session", exclusive=True)

    async def on_unmount(self) -> None:
        close = getattr(self.client, "close", None)
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
    def open_detail(self, container_id: str, tab: str = "process") -> None:
        self.push_screen(ContainerDetailScreen(container_id, tab))

    async def after_action(self, op: str) -> None:
        """Re-read what an action changed (events may also say so; a read is cheap and sure)."""
        if op in ("freeze", "unfreeze", "mode", "relearn", "forensics", "block", "unblock"):
            await self.session.reload_one("containers")
        if op in ("mode", "relearn"):
            await self.session.reload_one("apps")
        if op.startswith("feeds."):
            await self.session.reload_one("feeds")
            await self.session.reload_one("feeds.hits")
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


def run_console(targets: list[str], read_only: bool = False) -> int:
    # One enforcer for now: the first target (the fleet console takes them all).
    StockadeApp(targets[0] if targets else None, read_only=read_only).run()
    return 0

