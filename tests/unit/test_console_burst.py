"""The console keeps up with a burst of 1,000 alerts without a redraw storm.

Alert ops may not exist in the real enforcer yet, so the burst comes from a small server
on a unix socket that speaks the protocol; the console uses its real client against it.
"""

from __future__ import annotations

import time
from pathlib import Path

from console.app import StockadeApp
from console.client import EnforcerClient
from support.fake_client import FakeEnforcerServer, incident, sample_containers

BURST = 1000


async def test_console_absorbs_a_burst_of_1000_alerts(tmp_path: Path) -> None:
    server = await FakeEnforcerServer(str(tmp_path / "fake.sock")).start()
    try:
        app = StockadeApp(client=EnforcerClient(server.path), initial_view="alerts")
        async with app.run_test(size=(160, 45)) as pilot:
            deadline = time.monotonic() + 10
            while app.state.connection.state != "connected":
                assert time.monotonic() < deadline, "never connected to the fake server"
                await pilot.pause(0.05)
            app.repaint_now()
            await pilot.pause()
            table = app.screen.query_one("#alerts-table")
            assert table.row_count == 5
            repaints, rebuilds = app.repaints, table.rebuilds
            cs = sample_containers()
            burst = [incident(1000 + i, cs[i % len(cs)], summary=f"burst {i}") for i in range(BURST)]
            await server.publish("alert", burst)
            deadline = time.monotonic() + 30
            while table.row_count < BURST + 5:
                assert time.monotonic() < deadline, f"only {table.row_count} rows after the burst"
                await pilot.pause(0.05)
            await pilot.pause(0.6)  # whatever repaint was still due
            assert len(app.state.incidents) == BURST + 5
            assert table.visible_keys()[0] == 1000 + BURST - 1, "newest first"
            assert table.cursor_key is not None
            # 1,000 events, a handful of repaints: coalesced, not one per event.
            assert app.repaints - repaints <= 20, f"{app.repaints - repaints} repaints for {BURST} alerts"
            assert table.rebuilds - rebuilds <= 20
            # The cursor stayed on the incident it was on (keyed), and keys still answer.
            assert table.cursor_key == 5
            await pilot.press("home", "down", "down")
            assert table.cursor_key == 1000 + BURST - 3
    finally:
        await server.stop()
