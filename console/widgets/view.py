"""What every view shares: a name, the state domains it shows, its main table, and what the
action keys would act on (the selection)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from textual.containers import Vertical

from ..state import ConsoleState
from .live_table import LiveTable


@dataclass(slots=True)
class Target:
    """What the selected row designates, for the action keys. Ids, never row numbers."""

    container_id: str | None = None
    app: str | None = None
    alert: dict[str, Any] | None = None
    pid: int | None = None  # from the selected alert's detail, or the process tree
    peer: str | None = None  # from the selected alert's detail
    feed: str | None = None
    process: str = ""  # what the pid runs, for the kill dialog
    block: dict[str, Any] | None = None  # a selected block in force (container detail)
    host: int | None = None  # which host of a fleet console (None: the only one)


class View(Vertical):
    """A top-level view (apps, containers, alerts, feeds, audit)."""

    VIEW_NAME: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    DOMAINS: ClassVar[frozenset[str]] = frozenset()
    # Action names (see screens.base) that make sense here; others are hidden in the footer.
    ACTIONS: ClassVar[frozenset[str]] = frozenset()

    stale: bool = True

    def repaint(self, state: ConsoleState) -> None:
        raise NotImplementedError

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def target(self, state: ConsoleState) -> Target:
        return Target()

    @property
    def multi_host(self) -> bool:
        return bool(getattr(self.app, "multi_host", False))

    def focus_table(self) -> None:
        self.table.focus()
