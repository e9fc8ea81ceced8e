"""SVG snapshots of every view (pytest-textual-snapshot), from fixed data at the client boundary.

Update after a deliberate change of looks: `pytest tests/unit/test_console_snapshots.py --snapshot-update`,
then look at the SVGs under tests/unit/__snapshots__/ before committing them.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from console.app import StockadeApp
from console.client import Unreachable
from support.fake_client import NOW, FakeEnforcerClient

SIZE = (160, 45)


def settle(*keys: str) -> Callable[[Any], Any]:
    async def run_before(pilot: Any) -> None:
        app: StockadeApp = pilot.app
        deadline = time.monotonic() + 5
        while app.state.connection.state != "connected" and app.state.connection.attempts == 0:
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        app.repaint_now()
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
        await pilot.pause(0.3)
        app.repaint_now()
        await pilot.pause()

    return run_before


def make(**kwargs: Any) -> StockadeApp:
    return StockadeApp(client=kwargs.pop("client", None) or FakeEnforcerClient(), clock=lambda: NOW, **kwargs)


def test_snapshot_containers(snap_compare: Any) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=settle())


def test_snapshot_apps_topology(snap_compare: Any) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=settle("1", "down", "down", "down"))


def test_snapshot_alerts_with_detail(snap_compare: Any) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=settle("3", "down", "down", "down"))


def test_snapshot_feeds(snap_compare: Any) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=settle("4"))


def test_snapshot_audit(snap_compare: Any) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=settle("5"))


def test_snapshot_container_detail(snap_compare: Any) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=settle("down", "down", "down", "enter"))


def test_snapshot_confirm_freeze(snap_compare: Any) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=settle("down", "down", "down", "f"))


def test_snapshot_read_only_viewer(snap_compare: Any) -> None:
    assert snap_compare(make(client=FakeEnforcerClient(role="viewer")), terminal_size=SIZE, run_before=settle("3"))


class AbsentEnforcer(FakeEnforcerClient):
    async def connect(self, timeout: float = 3.0) -> dict[str, Any]:
        raise Unreachable(f"cannot reach the enforcer at {self.path}: no such socket (is stockade-enforcer running?)")


def test_snapshot_enforcer_not_there(snap_compare: Any) -> None:
    app = make(client=AbsentEnforcer(), retry_seconds=3600)
    assert snap_compare(app, terminal_size=SIZE, run_before=settle())


def test_snapshot_narrow_terminal(snap_compare: Any) -> None:
    assert snap_compare(make(), terminal_size=(80, 24), run_before=settle("3"))
