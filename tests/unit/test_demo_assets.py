"""The demo's files, checked without Docker: compose topology as Stockade reads it, the
network safety of the compose files, the feeds the demo serves, the attack's commands."""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from enforcer.feeds.parsers import parse as parse_feed
from enforcer.inventory.compose import load_topology

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo"
COMPOSE = DEMO / "compose"
DEFAULT_NET = "10.199.77"


def load_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"demo_{name}", DEMO / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def demo_defaults() -> dict[str, str]:
    """demo/demo-env.sh's values, as bash computes them with an empty environment."""
    out = subprocess.run(["env", "-i", "bash", "-c", ". demo/demo-env.sh && env"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("STOCKADE_"))


def test_blog_topology_links_web_to_db_and_publishes_on_loopback_only() -> None:
    topo = load_topology("blog", [str(COMPOSE / "blog.yml")])
    assert topo.error == ""
    assert set(topo.services) == {"web", "db"}
    assert topo.services["web"].links == ["db"]
    [port] = topo.services["web"].ports
    assert (port.port, port.host_ip, port.host_port) == (80, "127.0.0.1", 8080)
    assert topo.services["db"].ports == []


def test_weak_app_is_not_linked_to_the_blog_but_shares_a_network_with_its_db() -> None:
    pinger = load_topology("pinger", [str(COMPOSE / "pinger.yml")])
    assert pinger.error == ""
    assert pinger.services["app"].links == [] and pinger.services["app"].depends_on == []
    assert [(p.port, p.host_ip) for p in pinger.services["app"].ports] == [(8000, "127.0.0.1")]
    assert "shared" in pinger.services["app"].networks
    assert "shared" in load_topology("blog", [str(COMPOSE / "blog.yml")]).services["db"].networks


@pytest.mark.parametrize("name", ["blog", "pinger", "attacker"])
def test_compose_networks_stay_on_this_machine(name: str) -> None:
    doc = yaml.safe_load((COMPOSE / f"{name}.yml").read_text())
    for net_name, net in (doc.get("networks") or {}).items():
        net = net or {}
        # The only networks that are not internal carry a port published on 127.0.0.1.
        assert net.get("internal") or net.get("external") or net_name == "front", net_name
    for svc_name, svc in doc["services"].items():
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}/{svc_name} publishes {port} beyond loopback"
        if "front" in (svc.get("networks") or {}):
            assert svc.get("ports"), f"{name}/{svc_name} is on a non-internal network without a reason"


def test_fixed_addresses_match_the_demo_settings() -> None:
    env = demo_defaults()
    assert env["STOCKADE_DEMO_NET"] == DEFAULT_NET
    addresses = {}
    for name in ("blog", "pinger", "attacker"):
        doc = yaml.safe_load((COMPOSE / f"{name}.yml").read_text())
        for svc_name, svc in doc["services"].items():
            shared = (svc.get("networks") or {}).get("shared") if isinstance(svc.get("networks"), dict) else None
            if shared:
                addresses[f"{name}/{svc_name}"] = shared["ipv4_address"].replace("${STOCKADE_DEMO_NET:-10.199.77}", env["STOCKADE_DEMO_NET"])
    assert addresses == {"blog/db": env["STOCKADE_DEMO_DB_IP"], "pinger/app": env["STOCKADE_DEMO_PINGER_IP"],
                         "attacker/kit": env["STOCKADE_DEMO_ATTACKER_IP"]}
    for ip in addresses.values():
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(f"{DEFAULT_NET}.0/24")


def test_feeds_list_exactly_the_attacker_and_the_kit() -> None:
    hostside = load_module("hostside")
    kit = (DEMO / "images" / "attacker" / "www" / "kit.sh").read_bytes()
    values = hostside.FeedValues(attacker_ip="10.199.77.66", kit_sha256=hashlib.sha256(kit).hexdigest())
    ips = parse_feed("ip-list", hostside.render_feed("bad-ips.txt", values))
    assert (ips.rejected, len(ips.v4), len(ips.v6)) == (0, 1, 0)
    assert ips.v4[0] == (int(ipaddress.ip_address("10.199.77.66")) << 8 | 32)
    hashes = parse_feed("sha256-list", hostside.render_feed("kit-sha256.txt", values))
    assert hashes.rejected == 0 and hashes.hashes["sha256"] == [hashlib.sha256(kit).digest()]


@pytest.mark.parametrize("name", ["../attack.py", "kit-sha256", "nope.txt", "/etc/passwd.txt"])
def test_feed_server_serves_only_its_feed_files(name: str) -> None:
    hostside = load_module("hostside")
    assert hostside.render_feed(name, hostside.FeedValues("10.199.77.66", "0" * 64)) is None


def test_attack_talks_only_to_demo_addresses() -> None:
    attack = load_module("attack")
    demo = attack.Demo({"STOCKADE_DEMO_ATTACKER_IP": "10.199.77.66", "STOCKADE_DEMO_DB_IP": "10.199.77.20",
                        "STOCKADE_DEMO_PINGER_PORT": "8081", "STOCKADE_DEMO_PREFIX": ""})
    steps = attack.attack_steps(demo)
    assert [s.tool for s in steps] == ["unshare", "wget", "nc", "python3"]
    for step in steps:
        for ip in re.findall(r"\d+\.\d+\.\d+\.\d+", step.command):
            assert ip in ("10.199.77.66", "10.199.77.20"), step.command
    assert demo.pinger_url == "http://127.0.0.1:8081/ping"


def test_attack_reads_the_exit_status_of_each_tool() -> None:
    attack = load_module("attack")
    assert attack.exit_status("Killed\nwget exited 137\n", "wget") == 137
    assert attack.exit_status("x\nnc exited 0", "nc") == 0
    assert attack.exit_status("nc exited 0\n", "wget") is None
    assert attack.exit_status("the output said: wget exited 0 but\n", "wget") is None


@pytest.mark.parametrize("script", ["scripts/demo.sh", "demo/build-images.sh", "demo/demo-env.sh"])
def test_shell_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", script], cwd=REPO, check=True)


def test_demo_script_refuses_unknown_options_with_one_line() -> None:
    proc = subprocess.run(["bash", "scripts/demo.sh", "up", "--bogus"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["demo: unknown option --bogus (try --help)"]


def test_systemd_unit_verifies_and_names_the_capabilities_the_image_documents(tmp_path: Path) -> None:
    unit = (REPO / "deploy" / "stockade-enforcer.service").read_text()
    caps = set(re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M).group(1).split())
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    documented = set(re.findall(r"CAP_[A-Z_]+", dockerfile))
    assert caps == documented
    assert re.search(r"^ExecStart=/opt/stockade/.venv/bin/stockade-enforcer$", unit, re.M)
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    # systemd-analyze verify wants the ExecStart binary to exist: point it at this checkout's.
    local = unit.replace("/opt/stockade/.venv/bin/stockade-enforcer", str(REPO / ".venv/bin/stockade-enforcer"))
    path = tmp_path / "stockade-enforcer.service"
    path.write_text(local)
    proc = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "stockade-enforcer.service" not in proc.stderr, proc.stderr
