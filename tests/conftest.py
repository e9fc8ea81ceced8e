"""Fixtures over tests/support/harness.py: the engine, images, networks, compose apps, enforcers."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from support.feed_server import FeedServer

from support.harness import (REPO, DockerResources, EnforcerProcess, ensure_busybox_image, sh)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker engine that answers (make setup starts one); fail loudly if it does not."""
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("the Docker engine does not answer: run `make setup` (it starts dockerd)")
    sh("bash", str(REPO / "scripts" / "clean-test.sh"), check=False)


@pytest.fixture(scope="session")
def busybox_image(docker_engine: None) -> str:
    return ensure_busybox_image()


@pytest.fixture
def dockerx(docker_engine: None) -> Iterator[DockerResources]:
    """Make containers, internal networks and compose apps; all removed afterwards."""
    resources = DockerResources()
    try:
        yield resources
    finally:
        resources.cleanup()


@pytest.fixture
def make_enforcer(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., EnforcerProcess]]:
    """Start real enforcers: make_enforcer("--learn-seconds", "5"). Stopped afterwards;
    their log is printed when the test fails."""
    made: list[EnforcerProcess] = []

    def make(*args: str, start: bool = True, env: dict[str, str] | None = None) -> EnforcerProcess:
        e = EnforcerProcess(tmp_path / f"enforcer{len(made)}", *args, env=env)
        made.append(e)
        return e.start() if start else e

    yield make
    failed = getattr(request.node, "rep_call", None)
    for e in made:
        with contextlib.suppress(AssertionError):
            e.stop_and_clean()
        if failed is not None and failed.failed:
            print(f"\n---- enforcer log {e.log_path} ----\n{e.log()[-20000:]}")


@pytest.fixture
def feed_server() -> Iterator["FeedServer"]:
    """A threat-feed publisher on 127.0.0.1 (tests/support/feed_server.py): serve("/x.txt", body)."""
    from support.feed_server import FeedServer

    server = FeedServer()
    try:
        yield server
    finally:
        server.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
