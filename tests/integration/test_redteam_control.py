"""Red team against the control plane (issue 13, items 9 and 7), each against the real thing:
a real enforcer, real users and groups (SO_PEERCRED), real containers whose labels name
hostile compose files, real NSS made to hang, raw sockets that never read, and protect mode
with real eBPF sensors and nftables spending its automatic-block budget.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.enforce import host_fetch, ip_of, wait_active, wait_known
from support.enforce import sensing as sensing_enforcer
from support.principals import Principal, Principals, as_user, guarded_enforcer, open_workdir
from support.principals import principals as support_principals
from support.harness import REPO, DockerResources, EnforcerProcess, docker, sh, unique, wait_for

pytestmark = [pytest.mark.nftables, pytest.mark.slow]


# -- real users and groups -----------------------------------------------------------------
@pytest.fixture
def principals() -> Iterator[Principals]:
    with support_principals("rc") as p:
        yield p


@pytest.fixture
def guarded(principals: Principals) -> Iterator[EnforcerProcess]:
    with guarded_enforcer(principals, "stockade-rc-") as e:
        yield e




# Sends each request line given on the command line and prints every reply, one JSON a line.
CONVERSE = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
f = s.makefile("rb")
for i, req in enumerate(sys.argv[2:]):
    s.sendall((json.dumps({"id": i + 1, **json.loads(req)}) + "\\n").encode())
    while True:
        msg = json.loads(f.readline())
        if "event" not in msg:
            print(json.dumps(msg)); break
"""


def converse(p: Principal, e: EnforcerProcess, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    proc = as_user(p, sys.executable, "-c", CONVERSE, e.socket, *(json.dumps(r) for r in requests))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


# -- 9a: harden is an admin's act, and audited -------------------------------------------------
@pytest.mark.docker
def test_harden_needs_the_admin_role_and_every_call_is_audited(guarded: EnforcerProcess, principals: Principals):
    e, P = guarded, principals
    [refused] = converse(P.viewer, e, {"op": "harden", "target": "nx-app"})
    assert refused["ok"] is False and refused["code"] == "forbidden", refused
    assert "may only read" in refused["error"] and "\n" not in refused["error"]
    # The CLI says so in one line.
    cli = as_user(P.viewer, sys.executable, "-m", "console.cli", "--socket", e.socket, "harden", "nx-app")
    assert cli.returncode != 0 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    [tried] = converse(P.admin, e, {"op": "harden", "target": "nx-app"})
    assert tried["ok"] is False and tried["code"] == "not_found", tried
    audit = [a for a in e.call("audit") if a["action"] == "harden"]
    assert {(a["user"], a["result"].split(":")[0]) for a in audit} == {
        (P.viewer.name, "refused"), (P.admin.name, "error")}, audit


# -- 9e: the raw sensor topic is for admins ----------------------------------------------------
@pytest.mark.docker
def test_the_sensor_topic_is_refused_to_viewers(guarded: EnforcerProcess, principals: Principals):
    e, P = guarded, principals
    explicit, everything, some = converse(P.viewer, e, {"op": "subscribe", "topics": ["sensor"]},
                                          {"op": "subscribe"}, {"op": "subscribe", "topics": ["alert", "audit"]})
    assert explicit["ok"] is False and explicit["code"] == "forbidden", explicit
    assert "argv" in explicit["error"] and "\n" not in explicit["error"]
    # "every topic" for a viewer is every topic a viewer may follow.
    assert everything["ok"] and "sensor" not in everything["result"]["topics"], everything
    assert "alert" in everything["result"]["topics"]
    assert some["ok"] and some["result"]["topics"] == sorted(everything["result"]["topics"])
    [admin] = converse(P.admin, e, {"op": "subscribe", "topics": ["sensor"]})
    assert admin["ok"] and admin["result"]["topics"] == ["sensor"], admin


# -- 9d: a hung NSS backend does not stall the enforcer ----------------------------------------
@pytest.mark.docker
def test_a_hung_group_lookup_refuses_that_peer_and_stalls_nothing_else(tmp_path: Path):
    """The enforcer runs in a mount namespace of its own where /etc/group is a FIFO with no
    writer: every group lookup (getgrouplist, getgrnam) blocks in open() for good, as an
    LDAP or sssd backend that stopped answering would."""
    workdir = open_workdir("stockade-nss-")
    fifo = workdir / "group.fifo"
    os.mkfifo(fifo)
    e = EnforcerProcess(workdir / "e", "--no-sensors",
                        prefix=("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                                'mount --bind "$0" /etc/group && exec "$@"', str(fifo)))
    os.chmod(workdir / "e", 0o755)
    try:
        with e.session(timeout=30):
            try:
                os.chmod(e.socket, 0o666)  # the socket's group could not be looked up: let uid 4242 in
                probe = subprocess.Popen(
                    ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups", sys.executable, "-c", CONVERSE,
                     e.socket, json.dumps({"op": "hello"})],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
                # While uid 4242's lookup hangs, root is served at once, again and again.
                slowest = 0.0
                t_end = time.monotonic() + 3
                while time.monotonic() < t_end:
                    t0 = time.monotonic()
                    assert e.call("ping", timeout=2)["time"]
                    slowest = max(slowest, time.monotonic() - t0)
                    time.sleep(0.1)
                assert slowest < 0.5, f"a ping took {slowest:.2f}s while a group lookup hung"
                out, err = probe.communicate(timeout=30)
                [reply] = [json.loads(line) for line in out.splitlines()]
                # Fail closed: no lookup, no role; one line that says why.
                assert reply["ok"] is False and reply["code"] == "unavailable", reply
                assert "cannot tell who you are" in reply["error"] and "\n" not in reply["error"]
                status = e.call("status")["socket"]
                assert status["lookups_stalled"] >= 1 and status["lookups_busy"] >= 1, status
            finally:
                _release_fifo(fifo)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _release_fifo(fifo: Path) -> None:
    """Let the lookups stuck on the FIFO finish (they read an empty group database)."""
    for _ in range(20):
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # no reader left
        os.close(fd)
        time.sleep(0.05)


# -- 9b: compose files named by labels ---------------------------------------------------------
@pytest.fixture
def plain(tmp_path: Path) -> Iterator[EnforcerProcess]:
    with EnforcerProcess(tmp_path / "e", "--no-sensors").session() as e:
        yield e


def _compose_labelled(dockerx: DockerResources, project: str, files: str, working_dir: str = "") -> str:
    labels = ["--label", f"com.docker.compose.project={project}", "--label", "com.docker.compose.service=web",
              "--label", f"com.docker.compose.project.config_files={files}"]
    if working_dir:
        labels += ["--label", f"com.docker.compose.project.working_dir={working_dir}"]
    return dockerx.run(*labels)


def _app_error(e: EnforcerProcess, project: str) -> str | None:
    app = next((a for a in e.call("apps") if a["name"] == project), None)
    return None if app is None or not app.get("compose") else app["compose"].get("error", "")


@pytest.mark.docker
def test_a_fifo_named_as_compose_file_is_refused_and_hangs_nothing(plain: EnforcerProcess, dockerx, busybox_image,
                                                                   tmp_path: Path):
    fifo = tmp_path / "docker-compose.yml"
    os.mkfifo(fifo)
    project = unique("rcfifo")
    bad = _compose_labelled(dockerx, project, str(fifo))
    after = dockerx.run()  # a container the inventory learns of after the bad one
    try:
        wait_for(lambda: _app_error(plain, project), timeout=15, what="the FIFO's one-line problem on the app")
        assert "not a regular file (a FIFO)" in _app_error(plain, project)
        wait_for(lambda: {bad, after} <= {c["name"] for c in plain.call("containers")}, timeout=15,
                 what="both containers in the inventory")
        t0 = time.monotonic()
        plain.call("ping")
        assert time.monotonic() - t0 < 0.5
    finally:
        _release_fifo(fifo)


@pytest.mark.docker
def test_devices_symlinks_huge_files_and_a_fifo_env_are_one_line_problems(plain: EnforcerProcess, dockerx,
                                                                          busybox_image, tmp_path: Path):
    good = tmp_path / "good.yml"
    good.write_text("services:\n  web:\n    image: x\n    expose: ['8080']\n")
    link = tmp_path / "link.yml"
    link.symlink_to(good)
    huge = tmp_path / "huge.yml"
    with open(huge, "wb") as f:
        f.truncate(5 << 30)  # sparse: 5 GiB that take no disk
    envdir = tmp_path / "envdir"
    envdir.mkdir()
    os.mkfifo(envdir / ".env")
    cases = {
        unique("rczero"): ("/dev/zero", "", "not a regular file (a character device)"),
        unique("rclink"): (str(link), "", "is a symbolic link"),
        unique("rchuge"): (str(huge), "", f"{5 << 30} bytes is more than"),
        unique("rcenv"): (str(good), str(envdir), "compose .env file"),
        unique("rcgood"): (str(good), "", ""),
    }
    for project, (files, working_dir, _) in cases.items():
        _compose_labelled(dockerx, project, files, working_dir)
    try:
        for project, (_, _, expected) in cases.items():
            error = wait_for(lambda: _app_error(plain, project) is not None and (_app_error(plain, project),),
                             timeout=15, what=f"app {project}'s compose topology")[0]
            assert "\n" not in error
            if expected:
                assert expected in error, (project, error)
            else:
                assert error == "", error
        good_app = next(a for a in plain.call("apps") if a["name"].startswith("rcgood"))
        assert "web" in good_app["compose"]["services"]
    finally:
        _release_fifo(envdir / ".env")


# -- 9c: requests in flight are bounded ---------------------------------------------------------
def test_requests_in_flight_are_bounded_and_refused_as_busy(plain: EnforcerProcess):
    """Eight connections pipeline thousands of `status` requests and never read a reply: each
    holds 32 requests stuck writing, 256 in all. A ninth client is refused as busy, in one
    line; the enforcer never turns the rest into tasks."""
    hogs = []
    try:
        for _ in range(8):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(plain.socket)
            s.sendall(b'{"id": 1, "op": "status"}\n' * 3000)
            hogs.append(s)
        t0 = time.monotonic()

        def probe() -> dict[str, Any] | None:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(plain.socket)
                s.sendall(b'{"id": 7, "op": "ping"}\n')
                reply = json.loads(s.makefile("rb").readline())
            return reply if reply.get("code") == "busy" else None

        busy = wait_for(probe, timeout=30, interval=0.2, what="a busy refusal")
        assert busy["id"] == 7 and busy["ok"] is False and "at most 256" in busy["error"], busy
        assert "\n" not in busy["error"]
        hogs.pop().close()  # one hog leaves: its slots come back (and the others take most of them)
        status = wait_for(lambda: _status_or_none(plain), timeout=10, what="status once slots are free")["socket"]
        assert status["in_flight"] <= 256, status
        assert status["busy_refused"] >= 1 and status["max_in_flight"] == {"client": 32, "total": 256}
        # Of 24,000 requests sent, only those that could be answered (or waited for) ran.
        assert status["requests"] < 8 * 3000 / 4, status
        assert time.monotonic() - t0 < 60
    finally:
        for s in hogs:
            s.close()
    wait_for(lambda: plain.call("status")["socket"]["in_flight"] <= 1, timeout=10, what="the slots to drain")
    line = next(ln for ln in plain.cli("status").stdout.splitlines() if ln.startswith("socket"))
    assert "refused as busy" in line and " 0 refused as busy" not in line, line


def _status_or_none(e: EnforcerProcess) -> dict[str, Any] | None:
    try:
        return e.call("status")
    except RuntimeError as err:
        if "(busy)" in str(err):
            return None
        raise


# -- 7: a spent automatic-block budget fails closed ----------------------------------------------
LEARN_SECONDS = 20
# Fetches every address listed in /tmp/go (written from the host), then removes the list.
# Full paths: busybox sh runs bare applet names through /proc/self/exe.
FETCHER = ["sh", "-c", "while true; do if [ -f /tmp/go ]; then for t in $(/bin/cat /tmp/go); do "
                       "/bin/timeout 1 /bin/wget -q -O /dev/null http://$t:8080/; done; /bin/rm -f /tmp/go; fi; "
                       "/bin/sleep 0.2; done"]
WEB = ["sh", "-c", "mkdir -p /var/www; echo hello > /var/www/index.html; exec httpd -f -p 8080 -h /var/www"]


@pytest.fixture(scope="module")
def sensing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnforcerProcess]:
    with sensing_enforcer(tmp_path_factory.mktemp("budget") / "enforcer", LEARN_SECONDS) as e:
        yield e


def _write_in(container: str, path: str, text: str) -> None:
    pid = json.loads(docker("inspect", "-f", "{{.State.Pid}}", container).stdout)
    tmp = Path(f"/proc/{pid}/root{path}.tmp")
    tmp.write_text(text)
    tmp.rename(Path(f"/proc/{pid}/root{path}"))


def _spare_addresses(net: str, n: int) -> list[str]:
    """n addresses at the top of the network's subnet, which Docker hands out last."""
    cfg = json.loads(docker("network", "inspect", net).stdout)[0]["IPAM"]["Config"][0]
    hosts = list(ipaddress.ip_network(cfg["Subnet"]).hosts())
    return [str(a) for a in hosts[-n - 1:-1]]


@pytest.mark.docker
@pytest.mark.bpf
def test_a_spent_block_budget_cuts_the_container_off_with_a_critical_alert(sensing: EnforcerProcess, dockerx,
                                                                             busybox_image, feed_server):
    from enforcer.enforce.responder import MAX_AUTO_BLOCKS

    net = dockerx.network()
    web = dockerx.run(network=net, command=WEB)
    fetcher = dockerx.run(network=net, command=FETCHER)
    wait_known(sensing, web, fetcher)
    web_ip = ip_of(web)
    # The web container answers on many more addresses: every one a distinct peer.
    spare = _spare_addresses(net, MAX_AUTO_BLOCKS + 8)
    pid = str(json.loads(docker("inspect", "-f", "{{.State.Pid}}", web).stdout))
    for a in spare:
        sh("nsenter", "-t", pid, "-n", "ip", "addr", "add", f"{a}/32", "dev", "eth0")
    # Learning: the fetcher runs its loop (every program in it) against its one known peer,
    # until the profile has every program of the loop (else protect kills the loop itself).
    def learned() -> bool:
        _write_in(fetcher, "/tmp/go", web_ip)
        keys = " ".join(e["key"] for e in sensing.call("profile", target=fetcher)["profile"]["entries"]["process"])
        return all(p in keys for p in ("/bin/cat", "/bin/timeout", "/bin/wget", "/bin/rm", "/bin/sleep"))
    wait_for(learned, timeout=LEARN_SECONDS, interval=1, what="the fetcher's programs in its profile")
    sensing.cli("mode", fetcher, "protect")
    wait_active(sensing, fetcher)
    assert host_fetch(fetcher, web_ip)

    # Under protect's default-deny an unexpected peer is refused by the policy with no block
    # added; what still spends automatic blocks is a threat-feed hit (a listed address is cut
    # off on every port). A feed that lists every spare address lets the attack spend them.
    url = feed_server.serve("/spare.txt", "".join(f"{a}\n" for a in spare))
    sensing.cli("feeds", "add", "spare", url, "--format", "ip-list", "--local")
    wait_for(lambda: any(f["name"] == "spare" and f["entries"] >= len(spare) for f in sensing.call("feeds")),
             timeout=60, interval=1, what="the feed of spare addresses to load")
    # The attack: junk connections to MAX_AUTO_BLOCKS + 4 distinct listed peers, the rest kept back.
    junk, later = spare[:MAX_AUTO_BLOCKS + 4], spare[MAX_AUTO_BLOCKS + 4:]
    _write_in(fetcher, "/tmp/go", "\n".join(junk))
    go = Path(f"/proc/{json.loads(docker('inspect', '-f', '{{.State.Pid}}', fetcher).stdout)}/root/tmp/go")
    wait_for(lambda: not go.exists(), timeout=180, interval=1, what="the fetcher to try every junk peer")
    wait_for(lambda: sum(b["source"] == "protect" for b in sensing.call("blocks", target=fetcher)) >= MAX_AUTO_BLOCKS,
             timeout=60, interval=1, what="the automatic blocks to be spent")
    # Fail closed: peers it never tried, and even its learned peer, are out of reach.
    for a in later:
        assert not host_fetch(fetcher, a), f"{a} is still reachable after the budget was spent"
    assert not host_fetch(fetcher, web_ip)
    alert = wait_for(lambda: next((a for a in sensing.call("alerts", container=fetcher)
                                   if a["rule"] == "budget"), None),
                     timeout=30, interval=1, what="the critical budget alert")
    assert alert["severity"] == "critical" and alert["action"] == "blocked", alert
    assert f"{MAX_AUTO_BLOCKS} automatic blocks spent" in alert["summary"]
    blocks = [b for b in sensing.call("blocks", target=fetcher) if b["source"] == "protect"]
    assert {"0.0.0.0/0", "::/0"} <= {b["peer"] for b in blocks}
    # Exactly the budget, then the cut-off: concurrent responses did not overshoot it.
    assert len(blocks) == MAX_AUTO_BLOCKS + 2, len(blocks)
    audit = [x for x in sensing.call("audit") if x["action"] == "cut_off" and x["target"] == fetcher]
    assert audit and audit[0]["user"] == "stockade" and audit[0]["result"] == "ok", audit
    assert audit[0]["args"]["automatic"] is True and audit[0]["args"]["budget"] == MAX_AUTO_BLOCKS
    assert sensing.call("status")["enforcement"]["cut_offs"] >= 1
