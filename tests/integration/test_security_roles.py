"""Who may do what (issue 9), with real users and groups made for the test, a real enforcer
started with --socket-group/--admin-group/--viewer-group, the real CLI and the real Textual
console run as those users (SO_PEERCRED sees their uid), and the audit log.
"""

from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.principals import Principal, Principals, as_user, guarded_enforcer
from support.principals import principals as support_principals
from support.harness import DockerResources, EnforcerProcess, docker, unique, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.nftables, pytest.mark.slow]


@pytest.fixture
def principals() -> Iterator[Principals]:
    with support_principals("st") as p:
        yield p


@pytest.fixture
def guarded(principals: Principals) -> Iterator[EnforcerProcess]:
    with guarded_enforcer(principals, "stockade-roles-") as e:
        yield e




def cli_as(p: Principal, e: EnforcerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return as_user(p, sys.executable, "-m", "console.cli", "--socket", e.socket, *args)


RAW_PROBE = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"connect": e.strerror})); sys.exit(0)
try:
    s.sendall(b'{"id": 1, "op": "freeze", "target": "x"}\\n')
except OSError:
    pass
buf = b""
while True:
    try:
        chunk = s.recv(65536)
    except OSError:
        break
    if not chunk:
        break
    buf += chunk
print(json.dumps({"lines": [json.loads(x) for x in buf.splitlines() if x.strip()]}))
"""

CONSOLE_PROBE = """
import asyncio, json, sys, time
sys.path.insert(0, "tests")
from console.app import StockadeApp
from console.screens.modals import ConfirmScreen

async def main(socket_path, cid):
    app = StockadeApp(socket_path)
    out = {}
    async with app.run_test(size=(160, 45)) as pilot:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (app.state.connection.state == "connected" and cid in app.state.containers):
            await pilot.pause(0.1)
        out["connected"] = app.state.connection.state
        out["read_only"] = app.read_only
        out["reason"] = app.read_only_reason if app.read_only else ""
        app.repaint_now()
        await pilot.pause()
        out["header"] = str(app.screen.query_one("#status-header").render())
        await pilot.press("2")
        out["cursor"] = app.screen.view.table.move_cursor_to(cid)
        await pilot.press("f")
        await pilot.pause(0.3)
        out["confirm_opened"] = isinstance(app.screen, ConfirmScreen)
        if out["confirm_opened"]:
            await pilot.press("escape")  # cancel: this probe only looks
        await pilot.press("question_mark")
        await pilot.pause(0.3)
        out["help"] = " ".join(str(w.render()) for w in app.screen.query("*") if hasattr(w, "render"))[:20000]
    print("PROBE " + json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def probe_console(p: Principal, e: EnforcerProcess, cid: str) -> dict[str, Any]:
    proc = as_user(p, sys.executable, "-c", CONSOLE_PROBE, e.socket, cid)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line, f"console probe as {p.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(line[len("PROBE "):])


def frozen(cid: str) -> bool:
    return json.loads(docker("inspect", "-f", "{{json .State.Paused}}", cid).stdout) is True or \
        _freezer_state(cid) == "FROZEN"


def _freezer_state(cid: str) -> str:
    for path in (Path(f"/sys/fs/cgroup/freezer/docker/{cid}/freezer.state"),
                 Path(f"/sys/fs/cgroup/freezer/system.slice/docker-{cid}.scope/freezer.state")):
        if path.exists():
            return path.read_text().strip()
    for path in (Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cgroup.freeze"),
                 Path(f"/sys/fs/cgroup/docker/{cid}/cgroup.freeze")):
        if path.exists():
            return "FROZEN" if path.read_text().strip() == "1" else "THAWED"
    return "?"


def test_admin_acts_viewer_reads_outsider_is_refused_and_every_change_is_audited(
        guarded: EnforcerProcess, principals: Principals, dockerx: DockerResources, busybox_image: str) -> None:
    e, P = guarded, principals
    # The socket: 0660, group = the viewer group, so only members (and root) can connect.
    st = os.stat(e.socket)
    assert stat.S_IMODE(st.st_mode) == 0o660 and grp.getgrgid(st.st_gid).gr_name == P.viewer_group
    name = dockerx.run(name=unique("strole"))
    cid = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    wait_for(lambda: any(c["id"] == cid for c in e.call("containers")), what="the container in the inventory")

    # Roles as the server sees them.
    for who, role in ((P.admin, "admin"), (P.viewer, "viewer")):
        hello = json.loads(cli_as(who, e, "status", "--json").stdout or "{}")
        assert hello.get("host"), f"{who.name} cannot read status"
        proc = as_user(who, sys.executable, "-c",
                       "import asyncio,sys,json\nfrom console.client import EnforcerClient\n"
                       "async def m():\n c=EnforcerClient(sys.argv[1]); h=await c.connect(); print(json.dumps(h)); await c.close()\n"
                       "asyncio.run(m())", e.socket)
        assert json.loads(proc.stdout)["role"] == role, proc.stderr
        assert json.loads(proc.stdout)["uid"] == who.uid

    # The viewer reads everything...
    for args in (("containers", "--json"), ("apps", "--json"), ("alerts", "--json"), ("blocks", "--json"),
                 ("feeds", "list", "--json")):
        proc = cli_as(P.viewer, e, *args)
        assert proc.returncode == 0, f"viewer: stockade {' '.join(args)}: {proc.stderr}"
    assert any(c["id"] == cid for c in json.loads(cli_as(P.viewer, e, "containers", "--json").stdout))
    # ...and may change nothing: one clear line, nothing done.
    refusals = {
        "freeze": ("freeze", name),
        "mode": ("mode", name, "protect", "--container"),
        "relearn": ("relearn", name),
        "block": ("block", name, "--peer", "10.9.9.9"),
    }
    for op, args in refusals.items():
        proc = cli_as(P.viewer, e, *args)
        assert proc.returncode == 1, f"viewer could {op}: {proc.stdout} {proc.stderr}"
        err = proc.stderr.strip()
        assert "\n" not in err and f"{op} changes state" in err and f"user {P.viewer.name} may only read" in err, err
    assert not frozen(cid)
    assert e.call("container", target=cid).get("mode") != "protect"
    assert not e.call("blocks", target=name)

    # The admin acts: freeze and unfreeze for real, a mode, and an error (no such container).
    for args in (("freeze", name), ("unfreeze", name), ("mode", name, "alert", "--container")):
        proc = cli_as(P.admin, e, *args)
        assert proc.returncode == 0, f"admin: stockade {' '.join(args)}: {proc.stderr}"
        if args[0] == "freeze":
            wait_for(lambda: frozen(cid), what="the container frozen by the admin")
    assert not frozen(cid)
    proc = cli_as(P.admin, e, "freeze", "nx-no-such-container")
    assert proc.returncode == 1 and "no container" in proc.stderr and "\n" not in proc.stderr.strip()

    # The outsider cannot even open the socket (0660, not in its group)...
    out = json.loads(as_user(P.outsider, sys.executable, "-c", RAW_PROBE, e.socket).stdout)
    assert out == {"connect": "Permission denied"}, out
    proc = cli_as(P.outsider, e, "containers")
    assert proc.returncode == 1 and "permission denied" in proc.stderr, proc.stderr
    # ...and if the socket were opened to all, the server still refuses it, in one line.
    os.chmod(e.socket, 0o666)
    try:
        out = json.loads(as_user(P.outsider, sys.executable, "-c", RAW_PROBE, e.socket).stdout)
    finally:
        os.chmod(e.socket, 0o660)
    lines = out.get("lines")
    assert lines and len(lines) == 1, out  # the refusal, then the server hangs up
    assert lines[0]["code"] == "forbidden" and lines[0]["ok"] is False
    assert f"user {P.outsider.name} (uid {P.outsider.uid}) may not use Stockade" in lines[0]["error"]
    assert not frozen(cid)

    # The audit log: every change and every refused change, with uid and result.
    audit = e.call("audit", limit=100)
    rows = [(a["uid"], a["user"], a["action"], a["target"], a["result"]) for a in audit]
    for op, args in refusals.items():
        assert any(r[0] == P.viewer.uid and r[2] == op and r[4] == "refused: read-only user" for r in rows), (op, rows)
    assert (P.admin.uid, P.admin.name, "freeze", name, "ok") in rows
    assert (P.admin.uid, P.admin.name, "unfreeze", name, "ok") in rows
    assert (P.admin.uid, P.admin.name, "mode", name, "ok") in rows
    assert any(r[0] == P.admin.uid and r[2] == "freeze" and r[3] == "nx-no-such-container"
               and r[4].startswith("error: no container") for r in rows), rows
    assert not any(r[0] == P.outsider.uid for r in rows), "an outsider's request was read"
    # Reads are not audited; nothing the viewer read shows up.
    assert {r[2] for r in rows} <= {"freeze", "unfreeze", "mode", "relearn", "block"}
    # `stockade audit` shows the same: who froze what, and the viewer's refusals.
    text = e.cli("audit").stdout
    assert f"{P.admin.name} ({P.admin.uid})" in text and "refused: read-only user" in text, text


def test_the_console_shows_read_only_for_a_viewer_and_acts_for_an_admin(
        guarded: EnforcerProcess, principals: Principals, dockerx: DockerResources, busybox_image: str) -> None:
    e, P = guarded, principals
    name = dockerx.run(name=unique("strole"))
    cid = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    wait_for(lambda: any(c["id"] == cid for c in e.call("containers")), what="the container in the inventory")

    viewer = probe_console(P.viewer, e, cid)
    assert viewer["connected"] == "connected" and viewer["cursor"], viewer
    assert viewer["read_only"] is True
    assert viewer["reason"] == f"user {P.viewer.name} has the viewer role (admin needed)"
    assert "READ-ONLY" in viewer["header"]
    assert viewer["confirm_opened"] is False, "f opened a freeze dialog for a viewer"
    assert "action keys" in viewer["help"] and "are off" in viewer["help"]
    assert not frozen(cid)

    admin = probe_console(P.admin, e, cid)
    assert admin["connected"] == "connected" and admin["read_only"] is False
    assert "READ-ONLY" not in admin["header"]
    assert admin["confirm_opened"] is True, "f did not offer to freeze for an admin"
    assert not frozen(cid)  # the probe cancelled
    assert not [a for a in e.call("audit") if a["action"] == "freeze"], "nothing was confirmed"
