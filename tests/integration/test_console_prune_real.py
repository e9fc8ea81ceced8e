"""The console's prune key against a REAL enforcer (temporary socket, --no-sensors: nothing
is seen in use, so every watched seed stays never used) and a real container whose image
declares a port it never listens on."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import pytest

from console.app import StockadeApp
from console.screens.detail import ContainerDetailScreen
from console.screens.main import MainScreen
from console.screens.modals import ConfirmScreen
from support.pilot import until
from support.harness import BUSYBOX_IMAGE, TEST_LABEL, DockerResources, EnforcerProcess, docker, sh, unique

pytestmark = [pytest.mark.docker, pytest.mark.nftables, pytest.mark.slow]
SIZE = (160, 45)
EXPOSING_IMAGE = "stockade-test/busybox-expose:latest"


def _exposing_image() -> str:
    """The test image declaring a port (EXPOSE 9999: a seeded listener) nobody listens on."""
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "Dockerfile").write_text(f"FROM {BUSYBOX_IMAGE}\nEXPOSE 9999\nLABEL {TEST_LABEL}=1\n")
        sh("docker", "build", "-q", "-t", EXPOSING_IMAGE, ctx, timeout=300)
    return EXPOSING_IMAGE


async def test_prune_key_lists_what_goes_and_the_enforcer_removes_exactly_that(
        make_enforcer: Callable[..., EnforcerProcess], dockerx: DockerResources, busybox_image: str) -> None:
    enforcer = make_enforcer("--no-sensors", "--learn-seconds", "4")
    name = dockerx.run("--network", "none", image=_exposing_image(), name=unique("stprune"),
                       command=["sleep", "3600"])
    cid = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    app = StockadeApp(enforcer.socket)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: cid in app.state.containers and app.state.connection.state == "connected",
                    what="the container in the console")
        await until(pilot, lambda: enforcer.call("container", target=cid).get("profile_state") == "active",
                    what="its profile active")
        app.repaint_now()
        screen = app.screen
        assert isinstance(screen, MainScreen)
        await pilot.press("2")
        assert screen.view.table.move_cursor_to(cid)
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, ContainerDetailScreen)
        await until(pilot, lambda: detail.never_used() >= 1, what="the detail to show never-used seeds")
        assert detail.check_action("prune", ()) is True
        await pilot.press("P")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the prune dialog")
        text = "\n".join(line.plain for line in app.screen.lines)  # type: ignore[attr-defined]
        assert "listen on tcp/9999" in text
        before = enforcer.call("profile", target=cid)["profile"]
        assert any(e["key"] == "tcp/9999" for e in before["entries"]["listener"])  # the dry run removed nothing
        await pilot.press("right", "enter")
        await until(pilot, lambda: "pruned" in app.last_action, what="the prune result")
        after = enforcer.call("profile", target=cid)["profile"]
        assert not any(e["key"] == "tcp/9999" for e in after["entries"]["listener"])
        assert "listener tcp/9999" in after["pruned"] and after["never_used"] == 0
        assert [e["action"] for e in enforcer.call("audit")[:2]] == ["profile.prune", "profile.prune"]
        await until(pilot, lambda: not detail.never_used(), what="the key to go with nothing left")
