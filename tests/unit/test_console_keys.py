"""The console's keys, driven with Textual's pilot over a fake client (the one boundary).

The same flows run against a real enforcer in test_console_real.py; here the data is
fixed so that each test can look at exact arguments sent and exact rows shown.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from console.app import StockadeApp
from console.screens.detail import ContainerDetailScreen
from console.screens.main import MainScreen
from console.screens.modals import ChoiceScreen, ConfirmScreen, PromptScreen
from support.fake_client import NOW, FakeEnforcerClient, container
from enforcer import protocol
from enforcer.protocol import ProtocolError

SIZE = (160, 45)
WEB = "a1" * 32
API2 = "e5" * 32


async def ready(app: StockadeApp, pilot: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while app.state.connection.state != "connected":
        assert time.monotonic() < deadline, "the console never connected to the fake"
        await pilot.pause(0.05)
    app.repaint_now()
    await pilot.pause()


def main(app: StockadeApp) -> MainScreen:
    screen = app.screen
    assert isinstance(screen, MainScreen), f"expected the main screen, got {screen!r}"
    return screen


def calls(fake: FakeEnforcerClient, op: str) -> list[dict[str, Any]]:
    return [args for name, args in fake.calls if name == op]


async def select_container(app: StockadeApp, pilot: Any, cid: str) -> None:
    screen = main(app)
    screen.switch_view("containers")
    assert screen.view.table.move_cursor_to(cid)
    await pilot.pause()


async def test_number_keys_and_colon_command_with_completion_switch_views() -> None:
    app = StockadeApp(client=FakeEnforcerClient(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert main(app).current_view == "containers"
        for key, view in [("1", "apps"), ("3", "alerts"), ("4", "feeds"), ("5", "audit"), ("2", "containers")]:
            await pilot.press(key)
            assert main(app).current_view == view
            assert main(app).view.table.row_count > 0, f"{view} shows nothing"
        await pilot.press("colon", "a", "l", "tab", "enter")  # `al` completes to alerts
        assert main(app).current_view == "alerts"
        await pilot.press("colon", "f", "enter")  # a unique prefix is enough
        assert main(app).current_view == "feeds"
        await pilot.press("colon", *"alerts sev=high", "enter")
        alerts = main(app).view
        assert alerts.min_severity == "high"  # type: ignore[attr-defined]
        assert {r for r in alerts.table.visible_keys()} == {1, 4, 5}  # high and critical only
        await pilot.press("escape")  # back to feeds: Esc goes back, never quits
        assert main(app).current_view == "feeds" and app.is_running


async def test_filter_narrows_the_table_and_escape_clears_it() -> None:
    app = StockadeApp(client=FakeEnforcerClient(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        table = main(app).view.table
        assert table.row_count == 6
        await pilot.press("slash", *"shop", "enter")
        assert table.filter_text == "shop" and table.row_count == 2
        assert app.focused is table
        await pilot.press("escape")
        assert table.filter_text == "" and table.row_count == 6
        await pilot.press("slash", *"nomatch")
        assert table.row_count == 0
        await pilot.press("escape")  # Esc in the filter line clears it
        assert table.filter_text == "" and table.row_count == 6
        for _ in range(5):
            await pilot.press("escape")
        assert app.is_running, "Esc must never quit"
        await pilot.press("q")
        assert not app.is_running


async def test_cursor_stays_on_its_container_while_rows_change_and_freeze_hits_it() -> None:
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, WEB)
        table = main(app).view.table
        before = table.visible_keys().index(WEB)
        # New containers sort above it, another one goes away: the rows move under the cursor.
        for i in range(5):
            fake.push("inventory", {"change": "added", "container": container(f"{i:02d}" * 32, f"aaa{i}", "z", "z", "i")})
        fake.push("inventory", {"change": "removed", "container": {"id": "b2" * 32}})
        await pilot.pause(0.1)
        app.repaint_now()
        await pilot.pause()
        assert table.visible_keys().index(WEB) != before
        assert table.cursor_key == WEB
        await pilot.press("f")
        assert isinstance(app.screen, ConfirmScreen)
        assert WEB[:12] in str(app.screen.lines[0])
        assert app.focused is not None and app.focused.id == "cancel", "focus starts on Cancel"
        await pilot.press("right", "enter")
        await pilot.pause(0.1)
        assert calls(fake, "freeze") == [{"target": WEB}]


async def test_cancel_and_escape_send_nothing() -> None:
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, WEB)
        await pilot.press("f", "enter")  # Enter on the focused Cancel
        await pilot.press("x", "escape")
        await pilot.press("u")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert not calls(fake, "freeze") and not calls(fake, "forensics") and not calls(fake, "unfreeze")
        assert isinstance(app.screen, MainScreen)


async def test_read_only_flag_unbinds_action_keys_and_says_so() -> None:
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, read_only=True, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, WEB)
        for key in "fuxmrb":
            await pilot.press(key)
            assert isinstance(app.screen, MainScreen), f"{key} opened a dialog in read-only mode"
        shown = {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}
        assert not shown & {"freeze", "unfreeze", "block", "kill", "mode", "relearn", "forensics", "sync"}
        assert "READ-ONLY" in str(app.screen.query_one("#status-header").render())
        assert not [op for op, _ in fake.calls if op in ("freeze", "unfreeze", "block", "mode", "relearn")]


async def test_viewer_role_from_hello_is_read_only() -> None:
    app = StockadeApp(client=FakeEnforcerClient(role="viewer"), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert app.read_only and "viewer" in app.read_only_reason
        await select_container(app, pilot, WEB)
        await pilot.press("f")
        assert isinstance(app.screen, MainScreen)


async def test_a_failing_op_is_one_line_where_its_data_would_be() -> None:
    fake = FakeEnforcerClient(errors={
        "alerts": ProtocolError("store: database is locked", protocol.UNAVAILABLE),
        "feeds": ProtocolError("unknown op 'feeds'", protocol.UNKNOWN_OP),
        "profile": ProtocolError("no profile for this image", protocol.NOT_FOUND),
        "freeze": ProtocolError("cgroup freezer: permission denied", protocol.FAILED)})
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("3")
        assert main(app).view.table.empty_text == "alerts: store: database is locked"
        await pilot.press("4")
        assert main(app).view.table.empty_text == "feeds: unknown op 'feeds'"
        await select_container(app, pilot, WEB)
        await pilot.press("f")  # asked like any action; the error is the outcome
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("right", "enter")
        await pilot.pause(0.1)
        assert calls(fake, "freeze") == [{"target": WEB}]
        assert app.last_action.endswith("failed: cgroup freezer: permission denied")
        assert "\n" not in app.last_action
        await pilot.press("enter")
        assert isinstance(app.screen, ContainerDetailScreen)
        await pilot.pause(0.2)
        assert app.screen.profile_note == "profile: no profile for this image"


async def test_drill_down_to_detail_and_back_keeps_view_and_cursor() -> None:
    app = StockadeApp(client=FakeEnforcerClient(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, WEB)
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, ContainerDetailScreen) and detail.container_id == WEB
        await pilot.pause(0.3)
        processes = detail.query_one("#profile-process")
        assert processes.row_count == 3  # type: ignore[attr-defined]
        await pilot.press("right")  # next tab: listeners
        assert detail.query_one("#detail-tabs").active == "tab-listener"  # type: ignore[attr-defined]
        for _ in range(4):
            await pilot.press("right")
        assert detail.query_one("#detail-tabs").active == "tab-incidents"  # type: ignore[attr-defined]
        assert detail.query_one("#detail-incidents").row_count == 2  # type: ignore[attr-defined]
        await pilot.press("escape")
        assert main(app).current_view == "containers"
        assert main(app).view.table.cursor_key == WEB


async def test_kill_targets_the_pid_of_the_selected_alert() -> None:
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("3")
        assert main(app).view.table.move_cursor_to(1)
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        assert "4411" in app.screen.lines[0].plain and "/usr/bin/wget" in app.screen.lines[0].plain
        await pilot.press("tab", "enter")
        await pilot.pause(0.1)
        assert calls(fake, "kill") == [{"target": WEB, "pid": 4411}]


async def test_allow_says_exactly_what_will_be_allowed_then_allows() -> None:
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("3")
        assert main(app).view.table.move_cursor_to(1)
        await pilot.press("A")
        await pilot.pause(0.1)
        assert isinstance(app.screen, ConfirmScreen)
        text = "\n".join(line.plain for line in app.screen.lines)
        assert "run /usr/bin/wget" in text and "blog/web" in text
        assert calls(fake, "allow") == [{"alert_id": 1, "dry_run": True}]  # nothing allowed yet
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("right", "enter")
        await pilot.pause(0.1)
        assert calls(fake, "allow")[-1] == {"alert_id": 1}


async def test_stories_fold_an_intrusion_into_one_row_one_enter_away() -> None:
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("3", "g")
        await pilot.pause(0.1)
        view = main(app).view
        keys = view.table.visible_keys()
        assert all(isinstance(k, str) and k.startswith("story:") for k in keys)
        assert len(keys) == 4  # web's shell (2 findings), api's entrypoint, api's listener, evil
        web_story = f"story:{WEB}:4402"
        assert web_story in keys and view.table.move_cursor_to(web_story)
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert sorted(view.table.visible_keys()) == [1, 3]  # its incidents, each one row
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert web_story in view.table.visible_keys()  # back to the stories
        await pilot.press("g")
        await pilot.pause(0.1)
        assert sorted(view.table.visible_keys()) == [1, 2, 3, 4, 5]


async def test_block_offers_the_peer_of_the_selected_alert() -> None:
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("3")
        assert main(app).view.table.move_cursor_to(2)
        await pilot.press("b")
        # Inbound: the peer's address, without its ephemeral source port.
        assert isinstance(app.screen, PromptScreen) and app.screen.value == "172.21.0.9"
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("right", "enter")
        await pilot.pause(0.1)
        assert calls(fake, "block") == [{"target": "d4" * 32, "peer": "172.21.0.9"}]


async def test_mode_asks_scope_then_mode_then_confirms() -> None:
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, API2)
        await pilot.press("m")
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("down", "enter")  # only this container
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("end", "enter")  # protect
        await pilot.pause(0.1)
        assert isinstance(app.screen, ConfirmScreen)
        assert "protect" in app.screen.lines[0].plain
        # Before the confirm button: the dry run of protect over the last day.
        assert any("would have stopped" in line.plain or "nothing seen" in line.plain for line in app.screen.lines)
        await pilot.press("right", "enter")
        await pilot.pause(0.1)
        assert calls(fake, "mode") == [{"target": API2, "mode": "protect", "scope": "container", "preview": True},
                                       {"target": API2, "mode": "protect", "scope": "container"}]


async def test_protect_warns_when_the_profile_may_be_incomplete() -> None:
    fake = FakeEnforcerClient()
    for c in fake.containers:
        if c["id"] == API2:
            c["profile_gaps"] = ["a container started before the enforcer: its start-up was not seen"]
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, API2)
        await pilot.press("m", "down", "enter", "end", "enter")  # this container, protect
        await pilot.pause(0.1)
        assert isinstance(app.screen, ConfirmScreen)
        text = "\n".join(line.plain for line in app.screen.lines)
        assert "may be incomplete" in text and "start-up was not seen" in text


async def test_help_lists_the_keys_of_this_screen() -> None:
    app = StockadeApp(client=FakeEnforcerClient(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        sections = main(app).help_sections()
        keys = {key for _, rows in sections for key, _ in rows}
        assert {":", "/", "?", "f", "u", "b", "m", "r", "x", "q", "1", "5"} <= keys
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_hostile_names_reach_the_screen_inert() -> None:
    app = StockadeApp(client=FakeEnforcerClient(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        for key in "12345":
            await pilot.press(key)
            app.repaint_now()
            await pilot.pause()
            svg = app.export_screenshot()
            assert "\x1b" not in svg and "\x07" not in svg
        await pilot.press("1")
        svg = app.export_screenshot()
        assert "[bold&#160;red]evil[/]\\x1b[31m\\x07\\udcff" in svg


@pytest.mark.parametrize("view", ["apps", "containers", "alerts", "feeds", "audit"])
async def test_each_view_survives_garbage_from_the_enforcer(view: str) -> None:
    fake = FakeEnforcerClient()
    fake.containers.append({"id": "zz", "name": None, "networks": 5, "ports": 7, "pids": {"a": 1}, "alerts": "x",
                            "learning_left": "soon", "profile_state": "learning", "app": "junk", "service": 3})
    fake.apps.append({"name": "junk", "services": {"3": ["zz"]}, "compose": {"services": {"x": {"links": 3}}},
                      "edges": [{"from": 1, "to": None}, "x", [1, 2]]})
    fake.incidents.append({"id": 99, "detail": ["not", "a", "dict"], "count": None, "severity": 7})
    app = StockadeApp(client=fake, clock=lambda: NOW, initial_view=view)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        fake.push("alert", {"id": 100, "summary": "\x1b[2J" * 100})
        fake.push("inventory", {"change": "updated", "container": "not a dict"})
        fake.push("feed", {"hit": {"indicator": None}})
        await pilot.pause(0.1)
        app.repaint_now()
        await pilot.pause()
        assert app.is_running and main(app).current_view == view
        app.open_detail("zz")  # and the detail of the broken container
        await pilot.pause(0.3)
        assert app.is_running


async def test_unblock_from_the_blocks_tab_of_the_detail() -> None:
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, WEB)
        await pilot.press("B")  # not on the containers view: nothing selected to unblock
        assert isinstance(app.screen, MainScreen)
        await pilot.press("enter")
        await pilot.pause(0.3)
        await pilot.press("left")  # from Processes back around to Blocks
        detail = app.screen
        assert isinstance(detail, ContainerDetailScreen)
        assert detail.query_one("#detail-blocks").row_count == 1  # type: ignore[attr-defined]
        await pilot.press("B")
        assert isinstance(app.screen, ConfirmScreen)
        assert "10.9.8.7/32" in app.screen.lines[0].plain
        await pilot.press("right", "enter")
        await pilot.pause(0.1)
        assert calls(fake, "unblock") == [{"target": WEB, "peer": "10.9.8.7/32", "port": 443}]


async def test_kill_from_the_process_tree_names_the_command(tmp_path: Any) -> None:
    import os

    me = os.getpid()
    fake = FakeEnforcerClient()
    fake.containers[0]["pids"] = [me]
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, WEB)
        await pilot.press("enter")
        await pilot.pause(0.3)
        await pilot.press("left", "left")  # Process tree
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        assert str(me) in app.screen.lines[0].plain and "python" in app.screen.lines[0].plain.lower()
        await pilot.press("escape")
        assert not calls(fake, "kill")


async def test_notifications_never_parse_markup_from_names() -> None:
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, "f6" * 32)  # the container named [bold red]evil[/]...
        await pilot.press("f", "right", "enter")
        await pilot.pause(0.2)
        shown = [n.message for n in app._notifications]
        assert any("[bold red]evil[/]\\x1b[31m" in m for m in shown), shown
        assert all(not n.markup for n in app._notifications)


async def test_keys_can_be_remapped_by_binding_id(monkeypatch: Any) -> None:
    monkeypatch.setenv("STOCKADE_KEYS", "action.freeze=z,view.alerts=a")
    fake = FakeEnforcerClient()
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, WEB)
        await pilot.press("z")
        assert isinstance(app.screen, ConfirmScreen) and "Freeze" in app.screen.title_text
        await pilot.press("escape")


async def test_prune_in_the_detail_lists_exactly_what_goes_then_prunes() -> None:
    fake = FakeEnforcerClient()
    fake.unused_seeds = [{"kind": "listener", "key": "tcp/8443", "source": "seed", "what": "listen on tcp/8443"},
                         {"kind": "peer", "key": "out tcp blog/cache *", "source": "seed",
                          "what": "connect to blog/cache on tcp/*"}]
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, WEB)
        await pilot.press("enter")
        await pilot.pause(0.3)
        detail = app.screen
        assert isinstance(detail, ContainerDetailScreen) and detail.never_used() == 2
        assert "unused" in "".join(str(c) for r in detail.query_one("#profile-listener").rows.values()  # type: ignore[attr-defined]
                                   for c in r.cells)
        await pilot.press("P")
        await pilot.pause(0.1)
        assert isinstance(app.screen, ConfirmScreen)
        text = "\n".join(line.plain for line in app.screen.lines)
        assert "2 seeded entries" in text and "listen on tcp/8443" in text and "connect to blog/cache on tcp/*" in text
        assert calls(fake, "profile.prune") == [{"target": WEB, "dry_run": True}]  # nothing removed yet
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("right", "enter")
        await pilot.pause(0.3)
        assert calls(fake, "profile.prune")[-1] == {"target": WEB}
        assert isinstance(app.screen, ContainerDetailScreen) and detail.never_used() == 0  # refreshed: key gone
        assert detail.check_action("prune", ()) is False


async def test_prune_key_is_off_read_only_and_when_nothing_is_unused() -> None:
    app = StockadeApp(client=FakeEnforcerClient(), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, WEB)
        await pilot.press("enter")
        await pilot.pause(0.3)
        detail = app.screen
        assert isinstance(detail, ContainerDetailScreen) and detail.check_action("prune", ()) is False
    fake = FakeEnforcerClient(role="viewer")
    fake.unused_seeds = [{"kind": "listener", "key": "tcp/8443", "source": "seed", "what": "listen on tcp/8443"}]
    app = StockadeApp(client=fake, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select_container(app, pilot, WEB)
        await pilot.press("enter")
        await pilot.pause(0.3)
        detail = app.screen
        assert isinstance(detail, ContainerDetailScreen) and detail.never_used() == 1
        assert detail.check_action("prune", ()) is False
        await pilot.press("P")
        assert calls(fake, "profile.prune") == []
