"""The demo end to end, as `make demo` + `make attack` + `make respond` + `make demo-down` run it,
on a private copy of the demo (tests/demo_harness.py): real images, real compose apps, a real
enforcer with its eBPF sensors, feeds served from 127.0.0.1.

The tests of this module run in order on one deployment: deploy, attack in alert mode, the
response in protect mode, then down."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from demo_harness import DemoInstance, pid_running
from harness import docker, wait_for


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[DemoInstance]:
    instance = DemoInstance(tmp_path_factory.mktemp("demo"))
    try:
        instance.up()
        yield instance
    finally:
        log = instance.enforcer_log()
        instance.down()
        print(f"\n---- demo {instance.name} enforcer log (tail) ----\n{log[-6000:]}")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read().decode()


def views(page: str) -> int:
    found = re.search(r"(\d+) views", page)
    assert found, page
    return int(found.group(1))


def test_demo_deploys_the_apps_and_the_blog_reads_its_database(demo: DemoInstance) -> None:
    assert sorted(demo.containers()) == sorted([
        demo.container("blog", "web"), demo.container("blog", "db"),
        demo.container("pinger", "app"), demo.container("attacker", "kit")])
    front = get(demo.blog_url)
    assert "Compose files are topology" in front
    # Each post view is an UPDATE and a SELECT in MariaDB: the counter moves.
    first = views(get(demo.blog_url + "?post=1"))
    assert views(get(demo.blog_url + "?post=1")) > first
    assert "Is it up?" in get(demo.pinger_url)
    assert "1 received" in get(demo.pinger_url + "ping?host=127.0.0.1")
    # The published ports bind 127.0.0.1 only.
    ports = docker("port", demo.container("blog", "web")).stdout
    assert ports.strip().endswith(f"127.0.0.1:{demo.env['STOCKADE_DEMO_BLOG_PORT']}"), ports
    # The attacker sits at the fixed address the feed lists, on an internal network.
    net = docker("network", "inspect", "-f", "{{.Internal}}", demo.env["STOCKADE_DEMO_SHARED_NET"]).stdout.strip()
    assert net == "true"
    kit_ip = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                    demo.container("attacker", "kit")).stdout.split()
    assert kit_ip == [demo.attacker_ip]


def test_demo_feeds_are_served_locally_and_synced(demo: DemoInstance) -> None:
    feeds = {f["name"]: f for f in demo.cli_json("feeds", "list")}
    bad_ips, kit = feeds["demo-bad-ips"], feeds["demo-kit-sha256"]
    assert bad_ips["url"].startswith("http://127.0.0.1:") and bad_ips["local"] is True
    assert (bad_ips["status"], bad_ips["entries"], bad_ips["dropped"]) == ("ok", 1, 0)
    assert (kit["status"], kit["entries"]) == ("ok", 1)
    assert not any(f["enabled"] for name, f in feeds.items() if not name.startswith("demo-"))


def test_running_the_demo_again_reuses_what_runs(demo: DemoInstance) -> None:
    enforcer, hostside = demo.pid("enforcer"), demo.pid("hostside")
    ids = docker("ps", "-q", "--no-trunc", "--filter", f"label=stockade.demo={demo.name}").stdout.split()
    out = demo.up().stdout
    assert "images ready" in out and "building" not in out
    assert (demo.pid("enforcer"), demo.pid("hostside")) == (enforcer, hostside)
    assert pid_running(enforcer) and pid_running(hostside)
    assert sorted(docker("ps", "-q", "--no-trunc", "--filter", f"label=stockade.demo={demo.name}").stdout.split()) == sorted(ids)
    feeds = [f["name"] for f in demo.cli_json("feeds", "list") if f["name"].startswith("demo-")]
    assert sorted(feeds) == ["demo-bad-ips", "demo-kit-sha256"]


def test_down_removes_everything_the_demo_started(demo: DemoInstance) -> None:
    enforcer, hostside = demo.pid("enforcer"), demo.pid("hostside")
    demo.down()
    assert demo.containers() == []
    assert docker("network", "inspect", demo.env["STOCKADE_DEMO_SHARED_NET"], check=False).returncode != 0
    wait_for(lambda: not pid_running(enforcer) and not pid_running(hostside), timeout=30,
             what="the enforcer and the feed server to stop")
    assert not Path(demo.env["STOCKADE_SOCKET"]).exists()
    assert not (demo.state / "stockade.db").exists()
