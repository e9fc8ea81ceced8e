"""Bad input, tried and survived (issue 9): the REAL enforcer's socket under fuzzed and
oversize requests, hostile text from containers shown inert by the CLI and the real
Textual console, malformed compose files, and containers that go away mid-action.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.escape import printable
from enforcer import protocol
from support.harness import DockerResources, EnforcerProcess, docker, unique, wait_for
from support.hostile import (BIG, CLEAR, HOSTILE_ARG, HOSTILE_DIR_PRINTF, HOSTILE_PROJECT, HOSTILE_SERVICE, MARKUP, OSC_TITLE, OUTSIDE_EFFECTS,
                     RawConnection, assert_inert, check_reply, encode_loose, hostile_command, line_is_safe,
                     protocol_lines, request_objects, screen_text, tracebacks, wait_answers)

pytestmark = [pytest.mark.slow]

FUZZ_EXAMPLES = 250  # mixed lines, 1-4 per connection
PER_OP_EXAMPLES = 8  # then each op by name


def expected_id(line: bytes) -> Any:
    """The id the server must echo for this line (None when it cannot read one)."""
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(msg, dict):
        return None
    rid = msg.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        return None
    return rid


def assert_healthy(enforcer: EnforcerProcess) -> None:
    assert enforcer.running, f"the enforcer died:\n{enforcer.log()[-3000:]}"
    status = wait_answers(enforcer.socket, "status")
    assert status["host"]
    found = tracebacks(enforcer.log())
    assert not found, "unhandled exceptions in the enforcer log:\n" + "\n----\n".join(found[:3])


@pytest.mark.nftables
def test_fuzzed_requests_get_one_line_replies_and_the_enforcer_survives(
        make_enforcer: Callable[..., EnforcerProcess]) -> None:
    enforcer = make_enforcer("--no-sensors")
    ops = sorted(set(enforcer.call("hello")["ops"]) - OUTSIDE_EFFECTS)
    tried: dict[str, Any] = {"examples": 0, "lines": 0, "replies": 0, "ops": set()}

    def exchange(lines: list[bytes]) -> None:
        """Send the lines on a fresh connection: one good reply for each non-blank one."""
        conn = RawConnection(enforcer.socket)
        try:
            conn.send(b"".join(line + b"\n" for line in lines))
            wanted = [ln for ln in lines if (ln + b"\n").strip()]
            replies = conn.replies(len(wanted))
            tried["examples"] += 1
            tried["lines"] += len(lines)
            tried["replies"] += len(replies)
            for ln in lines:
                try:
                    op = json.loads(ln).get("op")
                    if isinstance(op, str) and op in ops:
                        tried["ops"].add(op)
                except Exception:  # noqa: BLE001 - only counting
                    pass
            assert len(replies) == len(wanted), (
                f"{len(wanted)} requests, {len(replies)} replies (connection closed: {conn.closed}) for {lines!r}")
            for raw, msg in replies:
                check_reply(raw, msg, f"reply to {lines!r}")
            got = sorted((repr(m.get("id")) for _, m in replies))
            assert got == sorted(repr(expected_id(ln)) for ln in wanted), f"ids {got} for {lines!r}"
        finally:
            conn.close()

    budget = settings(deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                             HealthCheck.data_too_large])

    @settings(budget, max_examples=FUZZ_EXAMPLES)
    @given(st.lists(protocol_lines(ops), min_size=1, max_size=4).filter(lambda ls: all(map(line_is_safe, ls))))
    def anything(lines: list[bytes]) -> None:
        exchange(lines)

    anything()
    # Then every op by name, with random arguments of random types.
    for op in ops:
        @settings(budget, max_examples=PER_OP_EXAMPLES)
        @given(request_objects(ops, fixed_op=op).filter(lambda m: line_is_safe(encode_loose(m))))
        def this_op(msg: dict[str, Any]) -> None:
            exchange([encode_loose(msg)])

        this_op()
    print(f"\nfuzz: {tried['examples']} connections, {tried['lines']} hostile lines, {tried['replies']} replies, "
          f"{len(tried['ops'])}/{len(ops)} ops reached")
    assert tried["ops"] == set(ops)
    assert_healthy(enforcer)


@pytest.mark.nftables
def test_oversize_deep_and_endless_lines_are_refused_and_the_connection_goes_on(
        make_enforcer: Callable[..., EnforcerProcess]) -> None:
    enforcer = make_enforcer("--no-sensors")
    limit = protocol.MAX_LINE
    conn = RawConnection(enforcer.socket)
    tried = 0
    try:
        # Just under the limit: served (the container does not exist; the message names it cut short).
        big = b'{"id":1,"op":"container","target":"nx-' + b"a" * (limit - 200) + b'"}\n'
        conn.send(big)
        tried += 1
        [(raw, msg)] = conn.replies(1)
        check_reply(raw, msg, "near-limit request")
        assert msg["id"] == 1 and msg["code"] == "not_found"
        # Over the limit, three times in a row, then a normal request on the same connection.
        for size in (limit + 1, 2 * limit, 5 * limit):
            conn.send(b'{"id":2,"op":"ping","x":"' + b"b" * size + b'"}\n')
            tried += 1
            [(raw, msg)] = conn.replies(1)
            check_reply(raw, msg, f"{size}-byte line")
            assert msg["code"] == "bad_request" and "longer than" in msg["error"]
        # Megabytes of blank lines: nothing to answer, nothing stuck.
        conn.send(b"\n" * (3 * limit) + b" \r\n\t\n")
        # JSON nested deeper than any parser's recursion: a bad request, not an internal error.
        conn.send(b'{"id":3,"op":"ping","x":' + b"[" * 200_000 + b"]" * 200_000 + b"}\n")
        conn.send(b'{"id":4,"op":"ping"}\n')
        tried += 3
        replies = {m["id"]: (raw, m) for raw, m in conn.replies(2)}
        check_reply(*replies[None], "deeply nested request")  # its id cannot be read either
        assert replies[None][1]["code"] == "bad_request"
        assert replies[4][1]["ok"]
        # Hundreds of requests pipelined in one write: every one answered.
        conn.send(b"".join(b'{"id":%d,"op":"ping"}\n' % i for i in range(100, 600)))
        tried += 500
        assert sorted(m["id"] for _, m in conn.replies(500)) == list(range(100, 600))
    finally:
        conn.close()
    # A huge line that never ends, then the client hangs up: the server lets go, still serves.
    conn = RawConnection(enforcer.socket)
    conn.send(b'{"id":5,"op":"ping","x":"' + b"c" * (3 * limit))
    tried += 1
    conn.close()
    # A request cut in the middle by the client going away.
    conn = RawConnection(enforcer.socket)
    conn.send(b'{"id":6,"op":"sta')
    tried += 1
    conn.close()
    print(f"\noversize: {tried} hostile requests")
    assert_healthy(enforcer)


# Requests that broke the enforcer once (found by the fuzz above), kept as fixed cases.
REGRESSIONS = [
    (b'{"id":1,"op":"ping","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "bad_request"),  # RecursionError
    (b'{"id":2,"op":"alert","alert_id":9223372036854775808}', "bad_request"),  # past SQLite's 64 bits
    (b'{"id":3,"op":"alert","alert_id":' + b"9" * 50 + b"}", "bad_request"),
    (b'{"id":4,"op":"alerts","since":' + b"9" * 50 + b"}", "bad_request"),
    (b'{"id":5,"op":"audit","since":' + b"9" * 50 + b"}", "bad_request"),
    (b'{"id":6,"op":"kill","target":"nx-a","pid":' + b"9" * 50 + b"}", "not_found"),
    (b'{"id":7,"op":"subscribe","topics":[{}]}', "bad_request"),
    (b'{"id":8,"op":"feeds.hits","limit":1e999}', "bad_request"),  # Infinity
    (b'{"id":9,"op":"feeds.hits","limit":NaN}', "bad_request"),
    (b'{"id":10,"op":"alerts","kind":{"a":1}}', "bad_request"),
    (b'{"id":11,"op":"unsubscribe","topics":[{}]}', "bad_request"),  # unhashable topic
    (b'{"id":12,"op":"unsubscribe","topics":"alert"}', "bad_request"),
]


@pytest.mark.nftables
def test_requests_that_once_broke_the_enforcer(make_enforcer: Callable[..., EnforcerProcess]) -> None:
    enforcer = make_enforcer("--no-sensors")
    conn = RawConnection(enforcer.socket)
    try:
        for line, code in REGRESSIONS:
            conn.send(line + b"\n")
            [(raw, msg)] = conn.replies(1)
            check_reply(raw, msg, line[:80].decode())
            assert msg["ok"] is False and msg["code"] == code, (line[:80], msg)
    finally:
        conn.close()
    assert_healthy(enforcer)


# -- hostile text, end to end ------------------------------------------------------------------
@pytest.fixture
def hostile_world(make_enforcer: Callable[..., EnforcerProcess], dockerx: DockerResources, busybox_image: str,
                  tmp_path: Path) -> dict[str, Any]:
    """A real enforcer (no sensors) and containers whose labels, paths and argv are hostile,
    one of them deployed with a broken compose file and one with a missing one."""
    enforcer = make_enforcer("--no-sensors")
    broken = tmp_path / "broken" / "docker-compose.yml"
    broken.parent.mkdir()
    broken.write_text("services:\n  web:\n    image: [unclosed\n  ports: {\n\t- \x1b[2J\n")
    missing = f"/nonexistent/{CLEAR}[bold]x[/]/docker-compose.yml"
    world = {"enforcer": enforcer, "broken_app": unique("stbad"), "missing_app": unique("stmiss")}
    world["hostile"] = dockerx.run(
        "--label", f"com.docker.compose.project={HOSTILE_PROJECT}",
        "--label", f"com.docker.compose.service={HOSTILE_SERVICE}",
        "--label", f"big={'B' * BIG}", "--label", f"esc{CLEAR}={OSC_TITLE}",
        name=unique("sthostile"), command=hostile_command())
    world["broken"] = dockerx.run(
        "--label", f"com.docker.compose.project={world['broken_app']}", "--label", "com.docker.compose.service=web",
        "--label", f"com.docker.compose.project.config_files={broken}", name=unique("stbroken"))
    world["missing"] = dockerx.run(
        "--label", f"com.docker.compose.project={world['missing_app']}", "--label", "com.docker.compose.service=web",
        "--label", f"com.docker.compose.project.config_files={missing}", name=unique("stmissing"))
    names = {world["hostile"], world["broken"], world["missing"]}
    wait_for(lambda: names <= {c["name"] for c in enforcer.call("containers") if c["state"] == "running"},
             timeout=30, what="the hostile containers in the inventory")
    # The hostile process tree is up: the copy of busybox runs from the hostile directory.
    wait_for(lambda: len(enforcer.call("container", target=world["hostile"])["pids"]) >= 3, timeout=30,
             what="the hostile container's processes")
    return world


@pytest.mark.docker
@pytest.mark.nftables
def test_hostile_labels_paths_and_argv_are_inert_in_the_cli(hostile_world: dict[str, Any]) -> None:
    e: EnforcerProcess = hostile_world["enforcer"]
    hostile, tried = hostile_world["hostile"], 0
    outputs: dict[str, str] = {}
    for args in (["containers"], ["apps"], ["profile", hostile], ["status"], ["blocks"], ["alerts"],
                 ["containers", "--app", HOSTILE_PROJECT]):
        proc = e.cli(*args)
        outputs[" ".join(args[:1])] = proc.stdout
        assert_inert(proc.stdout, f"stockade {args[0]}")
        assert_inert(proc.stderr, f"stockade {args[0]} (stderr)")
        tried += 1
    table = outputs["containers"]
    assert printable(HOSTILE_PROJECT) in table or printable(HOSTILE_PROJECT)[:150] in table
    assert "[bold red]x[/]" in table  # markup shown as the characters it is
    assert "\\x1b]0;pwned\\x07" in table
    profile = outputs["profile"]
    assert "\\x1b]0;pwned\\x07" in profile and "[@click=app.quit]" in profile, profile[:2000]
    # --json: valid JSON, plain ASCII, and the data kept exactly (a script sees the real label).
    for args in (["containers", "--json"], ["apps", "--json"], ["profile", hostile, "--json"]):
        proc = e.cli(*args)
        assert proc.stdout.isascii() and proc.stdout.count("\n") == 1, f"stockade {' '.join(args)}"
        json.loads(proc.stdout)
        tried += 1
    rows = e.cli_json("containers")
    mine = next(c for c in rows if c["name"] == hostile)
    assert mine["app"] == HOSTILE_PROJECT and mine["service"] == HOSTILE_SERVICE
    assert mine["labels"]["big"] == "B" * BIG
    # Errors that quote what the attacker chose are escaped too.
    proc = e.cli("profile", f"nx-{OSC_TITLE}{MARKUP}", check=False)
    assert proc.returncode == 1 and "\\x1b]0;pwned\\x07" in proc.stderr
    assert_inert(proc.stderr, "stockade profile (error)")
    print(f"\nhostile CLI: {tried + 1} commands over hostile labels/paths/argv")


@pytest.mark.docker
@pytest.mark.nftables
def test_a_broken_or_missing_compose_file_is_one_line_and_the_container_stays(hostile_world: dict[str, Any]) -> None:
    e: EnforcerProcess = hostile_world["enforcer"]
    apps = {a["name"]: a for a in e.call("apps")}
    broken, missing = apps[hostile_world["broken_app"]], apps[hostile_world["missing_app"]]
    assert "does not parse" in broken["compose"]["error"] and "\n" not in broken["compose"]["error"]
    assert "cannot read compose file" in missing["compose"]["error"] and "\n" not in missing["compose"]["error"]
    names = {c["name"] for c in e.call("containers")}
    assert hostile_world["broken"] in names and hostile_world["missing"] in names
    assert broken["services"]["web"] and missing["services"]["web"]
    # The CLI says so, on one escaped line per app.
    out = e.cli("apps").stdout + e.cli("apps").stderr
    assert_inert(out, "stockade apps")
    lines = [ln for ln in out.splitlines() if hostile_world["broken_app"] in ln and "does not parse" in ln]
    assert len(lines) == 1, out
    lines = [ln for ln in out.splitlines() if hostile_world["missing_app"] in ln and "cannot read compose" in ln]
    assert len(lines) == 1 and "\\x1b[2J[bold]x[/]" in lines[0], out
    assert not tracebacks(e.log())
    # The enforcer's own log quotes the compose error too: inert there as well.
    log = e.log_path.read_bytes()
    assert b"\x1b" not in log and b"\\x1b[2J[bold]x[/]" in log


@pytest.mark.docker
@pytest.mark.nftables
async def test_hostile_text_in_the_real_console_is_shown_escaped(hostile_world: dict[str, Any]) -> None:
    from console.app import StockadeApp
    from console.screens.detail import ContainerDetailScreen
    from test_console_real import main, until

    e: EnforcerProcess = hostile_world["enforcer"]
    hostile = hostile_world["hostile"]
    cid = next(c["id"] for c in e.call("containers") if c["name"] == hostile)
    app = StockadeApp(e.socket)
    seen: list[str] = []
    async with app.run_test(size=(200, 50)) as pilot:
        await until(pilot, lambda: cid in app.state.containers and app.state.connection.state == "connected",
                    what="the hostile container in the console")
        for key in ("1", "2", "3", "4", "5"):
            await pilot.press(key)
            app.repaint_now()
            await pilot.pause()
            seen.append(screen_text(app))
        await pilot.press("1")
        app.repaint_now()
        assert main(app).view.table.move_cursor_to(("app", HOSTILE_PROJECT))
        await pilot.pause()
        seen.append(screen_text(app))  # the topology pane of the hostile app
        for app_name in (hostile_world["broken_app"], hostile_world["missing_app"]):
            assert main(app).view.table.move_cursor_to(("app", app_name))
            await pilot.pause()
            pane = screen_text(app)
            seen.append(pane)
            assert "does not parse" in pane or "cannot read compose" in pane, f"{app_name}: no compose error shown"
        await pilot.press("2")
        assert main(app).view.table.move_cursor_to(cid)
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, ContainerDetailScreen)
        tree = detail.query_one("#process-tree")
        await until(pilot, lambda: tree.row_count >= 3, what="the hostile process tree")  # type: ignore[attr-defined]
        for _ in range(8):  # every tab of the detail, round to the first
            await pilot.press("right")
            await pilot.pause(0.2)
            seen.append(screen_text(app))
        await pilot.press("escape")
        assert app.is_running
    text = "\n".join(seen)
    # Shown as characters: the escapes, the markup (a live [@click] would quit on a click).
    assert "\\x1b]0;pwned\\x07" in text
    assert "[bold red]x[/]" in text
    assert "[@click=app.quit]" in text
    assert "\\udcff\\udcfe" in text or "\\xff" in text, "the bytes that are not UTF-8 are not shown escaped"
    print(f"\nhostile console: {len(seen)} screens checked segment by segment")


@pytest.mark.docker
@pytest.mark.nftables
def test_a_container_that_goes_away_mid_action_gives_one_line_errors(
        hostile_world: dict[str, Any], dockerx: DockerResources) -> None:
    e: EnforcerProcess = hostile_world["enforcer"]
    tried = 0
    for round_ in range(4):
        name = dockerx.run(name=unique("stgone"))
        wait_for(lambda: any(c["name"] == name and c["state"] == "running" for c in e.call("containers")),
                 what="the container in the inventory")
        pid = max(e.call("container", target=name)["pids"])
        # Removed (or killed) just before the actions arrive: the inventory may or may not know yet.
        docker("rm" if round_ % 2 == 0 else "kill", *(["-f"] if round_ % 2 == 0 else []), name)
        conn = RawConnection(e.socket)
        try:
            requests = [
                {"op": "freeze", "target": name}, {"op": "unfreeze", "target": name},
                {"op": "kill", "target": name, "pid": pid}, {"op": "kill", "target": name, "pid": pid, "signal": "TERM"},
                {"op": "block", "target": name, "peer": "10.9.9.9", "port": 80},
                {"op": "unblock", "target": name, "peer": "10.9.9.9"},
                {"op": "mode", "target": name, "mode": "protect", "scope": "container"},
                {"op": "relearn", "target": name}, {"op": "profile", "target": name},
                {"op": "container", "target": name}, {"op": "seccomp", "target": name},
            ]
            conn.send(b"".join(json.dumps({"id": i, **r}).encode() + b"\n" for i, r in enumerate(requests)))
            replies = conn.replies(len(requests))
            assert len(replies) == len(requests)
            for raw, msg in replies:
                check_reply(raw, msg, f"{requests[msg['id']]} on a container going away")
            tried += len(requests)
        finally:
            conn.close()
    # And bad arguments against a live container of ours: the same one-line answers.
    live = hostile_world["broken"]
    conn = RawConnection(e.socket)
    try:
        bad = [{"op": "kill", "target": live, "pid": 2**80}, {"op": "kill", "target": live, "pid": 1, "signal": {}},
               {"op": "kill", "target": live, "pid": 1, "signal": "NOPE"}, {"op": "kill", "target": live, "pid": 999999999},
               {"op": "block", "target": live, "peer": "10.9.9.9", "proto": "evil"},
               {"op": "block", "target": live, "peer": "10.9.9.9", "proto": {}},
               {"op": "block", "target": live, "peer": "10.9.9.9", "port": "99999"},
               {"op": "block", "target": live, "peer": f"{OSC_TITLE}{MARKUP}"},
               {"op": "block", "target": live, "peer": live},
               {"op": "mode", "target": live, "mode": "protect", "scope": "galaxy"}]
        conn.send(b"".join(json.dumps({"id": i, **r}).encode() + b"\n" for i, r in enumerate(bad)))
        replies = conn.replies(len(bad))
        for raw, msg in replies:
            check_reply(raw, msg, str(bad[msg["id"]])[:200])
            assert msg["ok"] is False, (bad[msg["id"]], msg)
        tried += len(bad)
    finally:
        conn.close()
    assert not e.call("blocks", target=live)
    print(f"\nmid-action: {tried} requests on containers going away or with bad arguments")
    assert_healthy(e)


@pytest.mark.bpf
@pytest.mark.docker
@pytest.mark.nftables
async def test_alerts_about_hostile_programs_are_inert_in_the_cli_and_console(
        tmp_path: Path, dockerx: DockerResources, busybox_image: str) -> None:
    """Real eBPF sensors: a program run from a hostile path (a copy of busybox, with hostile
    argv) after learning is a process alert; `stockade alerts` and the console show it inert."""
    from console.app import StockadeApp
    from support.enforce import sensing, wait_active
    from test_console_real import main, until

    with sensing(tmp_path / "e", learn_seconds=3) as e:
        name = dockerx.run(name=unique("stevilexec"))
        wait_active(e, name)
        script = (f'd="$(printf \'{HOSTILE_DIR_PRINTF}\')" && mkdir -p "$d" && cp /bin/busybox "$d/true" && '
                  '"$d/true" "$1" "$2"; cat /etc/shadow >/dev/null')
        docker("exec", name, "sh", "-c", script, "x", HOSTILE_ARG, "A" * BIG, check=False)
        alerts = wait_for(lambda: [a for a in e.call("alerts", container=name) if "pwned" in json.dumps(a)],
                          timeout=30, what="a process alert about the hostile path")
        proc = e.cli("alerts")
        assert_inert(proc.stdout, "stockade alerts")
        assert "\\x1b]0;pwned\\x07" in proc.stdout and "[bold red]x[/]" in proc.stdout, proc.stdout[-2000:]
        proc = e.cli("alerts", "--json")
        assert proc.stdout.isascii()
        for line in proc.stdout.splitlines():
            json.loads(line)
        app = StockadeApp(e.socket, initial_view="alerts")
        async with app.run_test(size=(200, 50)) as pilot:
            await until(pilot, lambda: alerts[0]["id"] in app.state.incidents, what="the alert in the console")
            app.repaint_now()
            await pilot.pause()
            assert main(app).view.table.move_cursor_to(alerts[0]["id"])
            await pilot.pause(0.3)
            text = screen_text(app)
            assert "\\x1b]0;pwned\\x07" in text and "[bold red]x[/]" in text
            assert app.is_running
        assert not tracebacks(e.log())
