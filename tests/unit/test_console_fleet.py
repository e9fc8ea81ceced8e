"""The fleet console: two (fake) enforcers in one console, driven with Textual's pilot.

Both fakes hold the same data (same container ids, incident ids 1-5), so every test here
also shows that ids from two hosts never collide. The same fleet against two real
enforcers is in tests/integration/test_console_fleet_real.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from console.app import StockadeApp
from console.fleet import HostKey, fleet_labels, target_label, unqualify
from console.screens.detail import ContainerDetailScreen
from console.screens.main import MainScreen
from console.screens.modals import ConfirmScreen
from console.widgets.header import ConnectionBanner, StatusHeader
from enforcer import protocol
from enforcer.protocol import ProtocolError
from support.fake_client import NOW, FakeEnforcerClient, container

SIZE = (160, 45)
WEB = "a1" * 32


def fleet(**second: Any) -> tuple[StockadeApp, FakeEnforcerClient, FakeEnforcerClient]:
    a = FakeEnforcerClient(host="node-a", path="/run/a/enforcer.sock")
    b = FakeEnforcerClient(host="node-b", path="/run/b/enforcer.sock", **second)
    app = StockadeApp(clients=[a, b], clock=lambda: NOW, retry_seconds=0.05)
    return app, a, b


async def until(pilot: Any, app: StockadeApp, predicate: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)
    app.repaint_now()
    await pilot.pause()


async def ready(app: StockadeApp, pilot: Any) -> None:
    await until(pilot, app, lambda: all(h.up for h in app.hosts), "both hosts to connect")


def main(app: StockadeApp) -> MainScreen:
    assert isinstance(app.screen, MainScreen)
    return app.screen


def calls(fake: FakeEnforcerClient, op: str) -> list[dict[str, Any]]:
    return [args for name, args in fake.calls if name == op]


def header(app: StockadeApp) -> str:
    return str(app.screen.query_one(StatusHeader).render())


def cell(app: StockadeApp, key: Any, column: str) -> str:
    table = main(app).view.table
    i = [c.key for c in table.columns].index(column)
    value = table.rows[key].cells[i]
    return value if isinstance(value, str) else value.plain


# -- labels ---------------------------------------------------------------------------------
def test_a_host_label_is_the_enforcers_hostname_else_the_targets_and_unique() -> None:
    assert target_label("ssh://ops@db-3.example:2222/run/stockade/enforcer.sock") == "db-3.example"
    assert target_label("/run/stockade/enforcer.sock") == "local"
    assert target_label("unix:///run/stockade/enforcer.sock") == "local"
    targets = ["ssh://u@h1/x", "/srv/one/enforcer.sock", "/srv/two/enforcer.sock"]
    # No hello yet: what the targets say.
    assert fleet_labels(targets, [{}, {}, {}]) == ["h1", "local:one", "local:two"]
    # The enforcers' own names win; two equal ones are told apart by their targets.
    assert fleet_labels(targets, [{"host": "web"}, {"host": "box"}, {"host": "box"}]) == ["web", "box:one", "box:two"]
    assert fleet_labels(["/a.sock", "/a.sock"], [{"host": "x"}, {"host": "x"}]) == ["x:a#1", "x:a#2"]
    # A client that names its host (ssh targets) is believed before the target is parsed.
    assert fleet_labels(["ssh://u@10.0.0.7/x"], [{}], ["db-7"]) == ["db-7"]


# -- pilot ------------------------------------------------------------------------------------
async def test_every_view_gets_a_host_column_and_both_hosts_rows_without_collisions() -> None:
    app, a, b = fleet()
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert [h.label for h in app.hosts] == ["node-a", "node-b"]
        for key, view in [("1", "apps"), ("3", "alerts"), ("4", "feeds"), ("5", "audit"), ("2", "containers")]:
            await pilot.press(key)
            table = main(app).view.table
            assert table.columns[0].key == "host", f"{view} has no HOST column"
            hosts = {unqualify(k)[0] for k in table.visible_keys()}
            assert hosts == {0, 1}, f"{view} does not show both hosts' rows"
        table = main(app).view.table
        assert table.row_count == 2 * len(a.containers)  # the same ids on both hosts: two rows each
        assert cell(app, HostKey(1, WEB), "host") == "node-b"
        await pilot.press("3")
        keys = set(main(app).view.table.visible_keys())
        assert HostKey(0, 1) in keys and HostKey(1, 1) in keys  # incident #1 of each host
        text = header(app)
        assert "fleet 2/2 up" in text and "● node-a 0.1.0" in text and "● node-b 0.1.0" in text
        assert "crit 2" in text  # one critical incident on each host, summed


async def test_actions_go_to_the_host_of_the_selected_row() -> None:
    app, a, b = fleet()
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        screen = main(app)
        assert screen.view.table.move_cursor_to(HostKey(1, WEB))
        await pilot.press("f")
        assert isinstance(app.screen, ConfirmScreen)
        assert "node-b" in app.screen.title_text
        assert "on host node-b" in " ".join(str(line) for line in app.screen.lines)
        await pilot.press("right", "enter")
        await until(pilot, app, lambda: calls(b, "freeze"), "the freeze on node-b")
        assert calls(b, "freeze") == [{"target": WEB}] and not calls(a, "freeze")
        # An incident's kill goes to its own host: #1 of node-a (pid 4411 in its detail).
        await pilot.press("3")
        assert main(app).view.table.move_cursor_to(HostKey(0, 1))
        await pilot.pause()
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("right", "enter")
        await until(pilot, app, lambda: calls(a, "kill"), "the kill on node-a")
        assert calls(a, "kill") == [{"target": WEB, "pid": 4411}] and not calls(b, "kill")
        # Enter on node-b's incident opens its container's detail, fetched from node-b.
        assert main(app).view.table.move_cursor_to(HostKey(1, 3))
        await pilot.press("enter")
        await until(pilot, app, lambda: isinstance(app.screen, ContainerDetailScreen) and calls(b, "profile"),
                    "node-b's profile")
        assert all(args.get("target") != WEB for args in calls(a, "profile"))
        assert "node-b" in str(app.screen.query_one("#breadcrumb").render())


async def test_a_lost_host_is_shown_lost_and_stale_while_the_other_keeps_updating() -> None:
    app, a, b = fleet()
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        b.drop()
        await until(pilot, app, lambda: app.hosts[1].state.connection.lost_since is not None, "node-b lost")
        text = header(app)
        assert "fleet 1/2 up" in text and "● node-a" in text
        assert "○ node-b lost" in text and "retrying" in text
        banner = app.screen.query_one(ConnectionBanner)
        assert banner.display and "node-b" in str(banner.render()) and "stale" in str(banner.render())
        # node-b keeps its last rows, marked stale; node-a's are live.
        assert cell(app, HostKey(1, WEB), "host") == "node-b (stale)"
        assert cell(app, HostKey(0, WEB), "host") == "node-a"
        a.push("inventory", {"change": "added", "container": container("c9" * 32, "late-arrival", "z", "z", "i")})
        await until(pilot, app, lambda: HostKey(0, "c9" * 32) in main(app).view.table.rows, "node-a's new row")
        # An action on the lost host fails with one line; nothing is sent to node-a.
        assert main(app).view.table.move_cursor_to(HostKey(1, WEB))
        await pilot.press("f")
        await pilot.press("right", "enter")
        await until(pilot, app, lambda: "failed" in app.last_action, "the failure line")
        assert "cannot reach" in app.last_action and not calls(a, "freeze")
        # node-b comes back: connected again, its rows live again.
        b.reachable = True
        await until(pilot, app, lambda: app.hosts[1].up, "node-b back")
        assert "fleet 2/2 up" in header(app) and "● node-b" in header(app)
        assert cell(app, HostKey(1, WEB), "host") == "node-b"
        assert not app.screen.query_one(ConnectionBanner).display


async def test_h_cycles_the_hosts_and_host_colon_filters_by_host() -> None:
    app, a, b = fleet()
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        table = main(app).view.table
        n = len(a.containers)
        assert table.row_count == 2 * n
        await pilot.press("h")
        assert table.row_count == n and {unqualify(k)[0] for k in table.visible_keys()} == {0}
        await pilot.press("3")  # the host filter holds in every view
        assert {unqualify(k)[0] for k in main(app).view.table.visible_keys()} == {0}
        await pilot.press("2", "h")
        assert {unqualify(k)[0] for k in table.visible_keys()} == {1}
        assert "host node-b" in str(main(app).query_one("#view-tabs").render())
        await pilot.press("h")
        assert table.row_count == 2 * n
        await pilot.press("slash", *"host:node-b web", "enter")
        keys = table.visible_keys()
        assert keys and all(unqualify(k)[0] == 1 for k in keys)
        assert len(keys) < n


async def test_the_viewer_role_is_per_host() -> None:
    app, a, b = fleet(role="viewer")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        screen = main(app)
        assert not app.read_only  # admin on node-a
        assert screen.view.table.move_cursor_to(HostKey(1, WEB))
        await pilot.pause()
        assert screen.check_action("freeze", ()) is False
        await pilot.press("f")
        await pilot.pause(0.1)
        assert isinstance(app.screen, MainScreen) and not calls(b, "freeze")
        assert "node-b 0.1.0 viewer" in header(app)
        assert screen.view.table.move_cursor_to(HostKey(0, WEB))
        await pilot.pause()
        assert screen.check_action("freeze", ()) is True
        await pilot.press("f")
        assert isinstance(app.screen, ConfirmScreen)


async def test_one_host_console_has_no_host_column() -> None:
    app = StockadeApp(client=FakeEnforcerClient(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, app, lambda: app.state.connection.state == "connected", "connect")
        assert "host" not in [c.key for c in main(app).view.table.columns]
        assert WEB in main(app).view.table.rows
        await pilot.press("h")  # nothing to cycle
        assert main(app).view.table.row_count == 6


class RefusingEnforcer(FakeEnforcerClient):
    """Answers, but refuses this user (as a socket whose peer check says no)."""

    async def connect(self, timeout: float = 3.0) -> dict[str, Any]:
        raise ProtocolError("forbidden: uid 1001 may not use this socket", protocol.FORBIDDEN)


class SlowEnforcer(FakeEnforcerClient):
    """Accepts the connection and never says hello."""

    async def connect(self, timeout: float = 3.0) -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}


async def test_a_refusing_host_and_a_slow_one_hold_up_nothing() -> None:
    good = FakeEnforcerClient(host="node-a", path="/run/a/enforcer.sock")
    refusing = RefusingEnforcer(host="node-r", path="ssh://ops@node-r:22/run/stockade/enforcer.sock")
    slow = SlowEnforcer(host="node-s", path="ssh://ops@node-s/run/stockade/enforcer.sock")
    app = StockadeApp(clients=[good, refusing, slow], clock=lambda: NOW, retry_seconds=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, app, lambda: app.hosts[0].up and app.hosts[1].state.connection.attempts >= 2,
                    "node-a up and node-r refused twice")
        # No hello from the other two: their labels come from their targets.
        assert [h.label for h in app.hosts] == ["node-a", "node-r", "node-s"]
        text = header(app)
        assert "fleet 1/3 up" in text and "● node-a" in text
        assert "○ node-r unreachable" in text and "◌ node-s connecting" in text
        banner = str(app.screen.query_one(ConnectionBanner).render())
        assert "node-r: forbidden: uid 1001 may not use this socket" in banner
        table = main(app).view.table
        assert table.row_count == len(good.containers)
        good.push("inventory", {"change": "added", "container": container("c9" * 32, "late-arrival", "z", "z", "i")})
        await until(pilot, app, lambda: HostKey(0, "c9" * 32) in table.rows, "node-a's new row")


async def test_feed_sync_and_mode_go_to_the_selected_rows_host() -> None:
    app, a, b = fleet()
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("4")
        table = main(app).view.table
        assert table.move_cursor_to(HostKey(1, "feodotracker"))
        await pilot.pause()
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen) and "node-b" in app.screen.title_text
        await pilot.press("right", "enter")
        await until(pilot, app, lambda: calls(b, "feeds.sync"), "the sync on node-b")
        assert not calls(a, "feeds.sync")
        # Mode of a container of node-a: the container only, then alert.
        await pilot.press("2")
        assert main(app).view.table.move_cursor_to(HostKey(0, WEB))
        await pilot.pause()
        await pilot.press("m", "down", "enter", "end", "enter")  # this container, protect
        await until(pilot, app, lambda: isinstance(app.screen, ConfirmScreen), "the mode confirmation")
        assert "node-a" in app.screen.title_text
        await pilot.press("right", "enter")
        await until(pilot, app, lambda: len(calls(a, "mode")) == 2, "the mode change on node-a")
        # The preview (what protect would stop) and the change: both asked of node-a.
        assert calls(a, "mode") == [{"target": WEB, "mode": "protect", "scope": "container", "preview": True},
                                    {"target": WEB, "mode": "protect", "scope": "container"}]
        assert not calls(b, "mode")


async def test_stories_are_per_host_and_help_names_the_fleet_keys() -> None:
    app, a, b = fleet()
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("3", "g")
        table = main(app).view.table
        stories = table.visible_keys()
        assert stories and all(isinstance(k, HostKey) and str(k.key).startswith("story:") for k in stories)
        assert {k.host for k in stories} == {0, 1}
        # The same story on node-b: Enter lists node-b's incidents only.
        web_story = next(k for k in stories if k.host == 1 and WEB in k.key)
        assert table.move_cursor_to(web_story)
        await pilot.press("enter")
        shown = table.visible_keys()
        assert shown and all(k.host == 1 and isinstance(k.key, int) for k in shown)
        await pilot.press("escape")
        assert set(table.visible_keys()) == set(stories)
        sections = dict(main(app).help_sections())
        assert "h" in dict(sections["Fleet (several enforcers)"])


def test_snapshot_fleet_containers(snap_compare: Any) -> None:
    async def run_before(pilot: Any) -> None:
        app: StockadeApp = pilot.app
        await ready(app, pilot)
        await pilot.pause(0.3)
        app.repaint_now()
        await pilot.pause()

    app, _, _ = fleet(role="viewer")
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def test_a_down_host_is_retried_with_backoff_and_one_host_at_a_fixed_pace() -> None:
    absent = FakeEnforcerClient(host="node-x", path="/run/x/enforcer.sock")
    absent.reachable = False
    app = StockadeApp(clients=[FakeEnforcerClient(host="node-a"), absent], clock=lambda: NOW, retry_seconds=0.01)
    session = app.sessions[1]
    delays = []
    for attempts in (1, 2, 3, 4, 5, 9):
        session.state.connection.attempts = attempts
        delays.append(session.retry_delay())
    assert delays == [0.01, 0.02, 0.04, 0.08, 0.08, 0.08]  # doubling up to 8 times the pace
    session.state.connection.attempts = 0
    one = StockadeApp(client=FakeEnforcerClient(), retry_seconds=0.01)
    one.state.connection.attempts = 9
    assert one.session.retry_delay() == 0.01  # one host: as before, every retry_seconds
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, app, lambda: absent.calls == [] and app.hosts[1].state.connection.attempts >= 5,
                    "attempts against the absent host")
        assert "retrying every 0.08s" in header(app)
