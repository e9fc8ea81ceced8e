"""The console against a REAL enforcer (temporary socket, --no-sensors) and real containers.

Every view, the filter, the container detail with its real process tree, freeze/unfreeze
through the keys (seen in the kernel's freezer), the enforcer going away and coming back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from console.app import StockadeApp
from console.screens.detail import ContainerDetailScreen
from console.screens.main import MainScreen
from console.screens.modals import ConfirmScreen
from support.pilot import until
from support.harness import DockerResources, EnforcerProcess, docker, unique

pytestmark = [pytest.mark.docker, pytest.mark.nftables, pytest.mark.slow]
SIZE = (160, 45)


def container_id(name: str) -> str:
    return docker("inspect", "-f", "{{.Id}}", name).stdout.strip()


def freezer_state(cid: str) -> str:
    """FROZEN / THAWED from the kernel (cgroup v1 freezer or v2 cgroup.freeze), else Docker's view."""
    for path in (Path(f"/sys/fs/cgroup/freezer/docker/{cid}/freezer.state"),
                 Path(f"/sys/fs/cgroup/freezer/system.slice/docker-{cid}.scope/freezer.state")):
        if path.exists():
            return path.read_text().strip()
    for path in (Path(f"/sys/fs/cgroup/unified/docker/{cid}/cgroup.freeze"),
                 Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cgroup.freeze"),
                 Path(f"/sys/fs/cgroup/docker/{cid}/cgroup.freeze")):
        if path.exists():
            return "FROZEN" if path.read_text().strip() == "1" else "THAWED"
    paused = json.loads(docker("inspect", "-f", "{{json .State.Paused}}", cid).stdout)
    return "FROZEN" if paused else "THAWED"


def main(app: StockadeApp) -> MainScreen:
    assert isinstance(app.screen, MainScreen), f"expected the main screen, got {app.screen!r}"
    return app.screen


@pytest.fixture
def two_containers(dockerx: DockerResources, busybox_image: str) -> tuple[str, list[str]]:
    prefix = unique("stcon")
    names = [dockerx.run(name=f"{prefix}-{i}", command=["sh", "-c", "sleep 3600 & sleep 3600; true"]) for i in (1, 2)]
    return prefix, names


async def test_every_view_filter_and_detail_against_a_real_enforcer(
        make_enforcer: Callable[..., EnforcerProcess], two_containers: tuple[str, list[str]]) -> None:
    prefix, names = two_containers
    enforcer = make_enforcer("--no-sensors")
    app = StockadeApp(enforcer.socket)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: sum(1 for c in app.state.containers.values() if c["name"] in names) == 2,
                    what="both containers in the console")
        await until(pilot, lambda: app.state.connection.state == "connected" and app.state.status.get("host"),
                    what="connected, with status in the header")
        app.repaint_now()
        header = str(main(app).query_one("#status-header").render())
        assert "connected" in header and "up " in header
        for key, view in [("1", "apps"), ("2", "containers"), ("3", "alerts"), ("4", "feeds"), ("5", "audit")]:
            await pilot.press(key)
            app.repaint_now()
            await pilot.pause()
            screen = main(app)
            assert screen.current_view == view
            table = screen.view.table
            if view in ("apps", "containers"):
                assert table.row_count >= 2, f"{view}: {table.row_count} rows"
            else:
                assert table.row_count > 0 or table.empty_text, view
        await pilot.press("1")
        apps_keys = main(app).view.table.visible_keys()
        assert ("ctr", container_id(names[0])) in apps_keys
        await pilot.press("2", "slash", *prefix, "enter")
        table = main(app).view.table
        assert table.filter_text == prefix
        assert table.row_count == 2, [r.search for r in table.rows.values()]
        assert main(app).view.table.move_cursor_to(container_id(names[1]))
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, ContainerDetailScreen)
        # The process tree tab: the real pids of the container, read from /proc.
        tree = detail.query_one("#process-tree")
        await until(pilot, lambda: tree.row_count >= 3, what="the container's process tree")  # type: ignore[attr-defined]
        commands = " ".join(tree.rows[k].cells[2] for k in tree.visible_keys())  # type: ignore[attr-defined]
        assert "sleep 3600" in commands
        await pilot.press("escape")
        assert main(app).current_view == "containers"
        assert main(app).view.table.filter_text == prefix
        assert main(app).view.table.cursor_key == container_id(names[1])


async def test_freeze_and_unfreeze_through_the_keys(
        make_enforcer: Callable[..., EnforcerProcess], two_containers: tuple[str, list[str]]) -> None:
    prefix, names = two_containers
    enforcer = make_enforcer("--no-sensors")
    cid = container_id(names[0])
    app = StockadeApp(enforcer.socket)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: cid in app.state.containers, what="the container in the console")
        app.repaint_now()
        await pilot.press("2")
        assert main(app).view.table.move_cursor_to(cid)
        await pilot.press("f")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("right", "enter")
        await until(pilot, lambda: freezer_state(cid) == "FROZEN", what="FROZEN in the kernel")
        await until(pilot, lambda: app.state.containers[cid].get("frozen") or "FROZEN" in app.last_action,
                    what="the console to show FROZEN")
        await pilot.press("u")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("right", "enter")
        await until(pilot, lambda: freezer_state(cid) == "THAWED", what="THAWED in the kernel")
        audit = enforcer.call("audit")
        assert [e["action"] for e in audit[:2]] == ["unfreeze", "freeze"]


async def test_reconnects_after_an_enforcer_restart_keeping_view_filter_and_cursor(
        make_enforcer: Callable[..., EnforcerProcess], dockerx: DockerResources,
        two_containers: tuple[str, list[str]]) -> None:
    prefix, names = two_containers
    enforcer = make_enforcer("--no-sensors")
    app = StockadeApp(enforcer.socket, retry_seconds=0.3)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: sum(1 for c in app.state.containers.values() if c["name"] in names) == 2,
                    what="both containers")
        app.repaint_now()
        await pilot.press("2", "slash", *prefix, "enter")
        table = main(app).view.table
        target = container_id(names[1])
        assert table.move_cursor_to(target)
        enforcer.stop()
        await until(pilot, lambda: app.state.connection.state != "connected", what="the console to notice")
        app.repaint_now()
        await pilot.pause()
        banner = str(main(app).query_one("#connection-banner").render())
        assert "retrying" in banner
        assert table.cursor_key == target and table.filter_text == prefix, "kept while disconnected"
        enforcer.start()
        await until(pilot, lambda: app.state.connection.generation >= 2, what="a second connection")
        # Resubscribed: a container started after the restart shows up live.
        third = dockerx.run(name=f"{prefix}-3")
        await until(pilot, lambda: any(c["name"] == third for c in app.state.containers.values()),
                    what="an inventory event after the restart")
        app.repaint_now()
        await pilot.pause()
        assert main(app).current_view == "containers"
        assert table.filter_text == prefix and table.row_count == 3
        assert table.cursor_key == target


async def test_says_the_enforcer_is_not_there_and_connects_when_it_comes(
        make_enforcer: Callable[..., EnforcerProcess]) -> None:
    enforcer = make_enforcer("--no-sensors", start=False)
    app = StockadeApp(enforcer.socket, retry_seconds=0.3)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connection.attempts >= 2, what="two failed attempts")
        app.repaint_now()
        await pilot.pause()
        banner = str(main(app).query_one("#connection-banner").render())
        assert "no such socket" in banner and "retrying" in banner
        assert "waiting for the enforcer" in main(app).view.table.empty_text
        enforcer.start()
        await until(pilot, lambda: app.state.connection.state == "connected", what="the connection")
        app.repaint_now()
        await pilot.pause()
        assert not main(app).query_one("#connection-banner").display


async def test_mode_relearn_and_kill_through_the_keys(
        make_enforcer: Callable[..., EnforcerProcess], two_containers: tuple[str, list[str]]) -> None:
    prefix, names = two_containers
    enforcer = make_enforcer("--no-sensors")
    cid = container_id(names[0])
    app = StockadeApp(enforcer.socket)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: cid in app.state.containers and app.state.connection.state == "connected",
                    what="the container in the console")
        app.repaint_now()
        await pilot.press("2")
        assert main(app).view.table.move_cursor_to(cid)
        # Mode: only this container, protect.
        await pilot.press("m")
        await pilot.press("down", "enter")  # scope: only this container
        await pilot.press("end", "enter")  # protect
        assert isinstance(app.screen, ConfirmScreen) and "protect" in app.screen.lines[0].plain
        await pilot.press("right", "enter")
        await until(pilot, lambda: enforcer.call("container", target=cid).get("mode") == "protect",
                    what="protect mode in the enforcer")
        await until(pilot, lambda: app.state.containers[cid].get("mode") == "protect", what="protect in the table")
        # Relearn: the profile goes back to learning.
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("right", "enter")
        await until(pilot, lambda: "back to learning" in app.last_action, what="the relearn result")
        assert enforcer.call("container", target=cid).get("profile_state") == "learning"
        # Kill from the process tree: the background `sleep 3600`.
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, ContainerDetailScreen)
        tree = detail.query_one("#process-tree")
        await until(pilot, lambda: tree.row_count >= 3, what="the process tree")  # type: ignore[attr-defined]
        victim = next(k for k in tree.visible_keys()  # type: ignore[attr-defined]
                      if tree.rows[k].cells[2].strip().endswith("sleep 3600"))  # type: ignore[attr-defined]
        await pilot.press("left", "left")  # Processes -> Blocks -> Process tree
        assert detail.query_one("#detail-tabs").active == "tab-tree"  # type: ignore[attr-defined]
        assert tree.move_cursor_to(victim)  # type: ignore[attr-defined]
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen) and str(victim) in app.screen.lines[0].plain
        await pilot.press("right", "enter")
        await until(pilot, lambda: not Path(f"/proc/{victim}").exists(), what="the process to be killed")
        assert docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true", "only the process died"


@pytest.mark.bpf
async def test_a_live_alert_reaches_the_alerts_view(
        make_enforcer: Callable[..., EnforcerProcess], two_containers: tuple[str, list[str]]) -> None:
    prefix, names = two_containers
    enforcer = make_enforcer("--learn-seconds", "3")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the sensors compile and load in the background
        sensors = enforcer.call("status").get("sensors") or []
        if sensors and all(x.get("loaded") or x.get("error") for x in sensors):
            break
        time.sleep(1)
    if not any(x.get("loaded") for x in enforcer.call("status").get("sensors") or []):
        pytest.skip("no eBPF sensor loaded in this enforcer: no live alerts to show")
    cid = container_id(names[0])
    app = StockadeApp(enforcer.socket, initial_view="alerts")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connection.state == "connected", what="the connection")
        docker("exec", names[0], "cat", "/etc/shadow", check=False)  # a research rule: alerts in any mode

        def shadow_alert() -> Any:
            return next((a for a in app.state.incidents.values()
                         if a.get("container_id") == cid and "/etc/shadow" in str(a.get("summary"))), None)

        alert = await until(pilot, shadow_alert, timeout=30, what="the /etc/shadow alert in the console")
        app.repaint_now()
        await pilot.pause()
        table = main(app).view.table
        assert alert["id"] in table.visible_keys()
        assert table.move_cursor_to(alert["id"])
        await pilot.pause()
        pane = str(main(app).query_one("#alert-detail").render())
        assert "/etc/shadow" in pane and names[0] in pane
