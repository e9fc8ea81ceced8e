"""The demo's story driven through the real console in tmux, as a person would: keys sent with
`tmux send-keys`, the screen read with `tmux capture-pane` (demo/walkthrough.py, which also
makes the README's screenshots). Every step waits for what it must show on the screen and
fails with the screen when it does not; then the screen's claims are checked against the
enforcer, Docker and the kernel."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import pytest

from support.demo import DemoInstance
from support.harness import REPO, docker

sys.path.insert(0, str(REPO / "demo"))

from attack import Demo  # noqa: E402
from walkthrough import Story, TmuxConsole  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables]  # the demo runs a real enforcer with sensors


def freezer_state(container_id: str) -> str:
    for path in (f"/sys/fs/cgroup/freezer/docker/{container_id}/freezer.state",
                 f"/sys/fs/cgroup/freezer/system.slice/docker-{container_id}.scope/freezer.state"):
        if Path(path).exists():
            return Path(path).read_text().strip()
    for path in (f"/sys/fs/cgroup/docker/{container_id}/cgroup.freeze",
                 f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cgroup.freeze"):
        if Path(path).exists():
            return "FROZEN" if Path(path).read_text().strip() == "1" else "THAWED"
    return "?"


def test_the_demo_story_through_the_console_in_tmux(tmp_path: Path, docker_engine: None) -> None:
    # Learning long enough that the first screen still shows it, short enough for a test.
    instance = DemoInstance(tmp_path, learn_seconds=40)
    console: TmuxConsole | None = None
    try:
        instance.up()
        demo = Demo.load(str(instance.state))
        console = TmuxConsole(demo.socket).start()
        story = Story(demo, console, say=lambda line: print(f"walkthrough: {line}")).run()
        pinger = instance.container("pinger", "app")

        # 1-2: the screen showed the demo's containers learning and the blog's topology.
        assert "learning" in story.screens["demo-1-containers"]
        assert "→ db:3306" in story.screens["demo-2-apps"]
        # 3-4: the attack's alerts, and a threat hit's detail naming the feed and the address.
        assert "unexpected inbound tcp/3306 from" in story.screens["demo-3-alerts"]
        assert instance.attacker_ip in story.screens["demo-4-threat"]
        # 5: the m key really changed the app's mode.
        modes = {a["name"]: a["mode"] for a in instance.cli_json("apps")}
        assert modes[instance.app("pinger")] == "protect"
        # 6: in protect mode the tools were killed before they ran.
        assert [s["exit_status"] for s in story.attacks["protect"]["steps"][:3]] == [137, 137, 137]
        assert "try 2 - no connection" in story.attacks["protect"]["steps"][3]["output"]
        # 7: the f key froze the container in the kernel.
        row = next(c for c in instance.cli_json("containers") if c["name"] == pinger)
        assert row["frozen"] is True
        assert freezer_state(row["id"]) == "FROZEN"
        # 8: the x key wrote a bundle into the enforcer's forensics folder.
        bundles = sorted((instance.state / "forensics").glob("*.tar.gz"))
        assert bundles, "no forensics bundle was written"
        with tarfile.open(bundles[-1]) as tar:
            assert any("manifest" in name for name in tar.getnames())
    finally:
        if console is not None:
            if sys.exc_info()[0] is not None:
                print(f"---- last screen ----\n{console.screen()}")
            console.stop()
        log = instance.enforcer_log()
        instance.down()
        if sys.exc_info()[0] is not None:
            print(f"---- enforcer log (tail) ----\n{log[-5000:]}")
    assert instance.containers() == []
    assert docker("network", "inspect", instance.env["STOCKADE_DEMO_SHARED_NET"], check=False).returncode != 0

