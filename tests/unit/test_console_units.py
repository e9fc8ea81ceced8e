"""Console pieces without a terminal: escaping, the state, topology parsing, action plans,
the command line, and the process tree reader."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

from console import actions
from console.escape import printable, safe_text
from console.format import detail_lines
from console.proctree import process_tree
from console.state import MAX_INCIDENTS, ConsoleState
from console.topology import app_edges
from console.widgets.command_bar import resolve_command

HOSTILE = ["[bold]owned[/bold]", "\x1b[31mred\x1b[0m", "a\x07b\x08c\rd\ne\tf\x00g", "\udcff\udc80bytes",
           "\u202egnp.exe", "[link=http://x]click[/link]", "x" * 65536]


def render(text: Text) -> str:
    console = Console(width=200, color_system="truecolor", force_terminal=True, record=True)
    console.print(text)
    return console.export_text()


def test_safe_text_never_interprets_markup_or_control_characters() -> None:
    for value in HOSTILE:
        text = safe_text(value)
        assert isinstance(text, Text)
        assert not text.spans, "no style may come from the value itself"
        shown = text.plain
        assert "\x1b" not in shown and "\x07" not in shown and "\x00" not in shown and "\r" not in shown
        assert "\n" not in shown
        assert not any(0xD800 <= ord(ch) < 0xE000 for ch in shown), "surrogates must be escaped"
        assert "\u202e" not in shown
        out = render(text)
        assert "\x1b[31m" not in out.replace("\x1b[0m", "")
    assert safe_text("[bold]owned[/bold]").plain == "[bold]owned[/bold]"  # shown literally, not as bold
    assert safe_text("\x1b[31m").plain == "\\x1b[31m"
    assert safe_text("\udcff").plain == "\\udcff"


def test_64k_string_is_cut_to_a_bounded_cell() -> None:
    text = safe_text("y" * 65536)
    assert len(text.plain) <= 4097
    assert printable("z" * 65536, 100).endswith("…")


def test_detail_lines_escape_keys_and_values() -> None:
    lines = detail_lines({"\x1b[2Jkey": ["[red]v[/red]", {"inner\x07": "\udcfe"}], "n": None, "b": True})
    joined = "\n".join(line.plain for line in lines)
    assert "\x1b" not in joined and "\x07" not in joined and "\udcfe" not in joined
    assert "[red]v[/red]" in joined and "null" in joined and "true" in joined
    assert all(not line.spans or all(s.style in ("bold", "dim") for s in line.spans) for line in lines)


def test_state_folds_events_and_caps_incidents() -> None:
    state = ConsoleState()
    state.set_containers([{"id": "c1", "name": "a", "app": "x"}])
    state.apply_event({"event": "inventory", "data": {"change": "added", "container": {"id": "c2", "name": "b"}}})
    state.apply_event({"event": "inventory", "data": {"change": "removed", "container": {"id": "c1"}}})
    assert set(state.containers) == {"c2"}
    for i in range(MAX_INCIDENTS + 600):
        state.apply_event({"event": "alert", "data": {"id": i, "severity": "high", "container_id": "c2"}})
    assert len(state.incidents) <= MAX_INCIDENTS + 500
    assert max(state.incidents) == MAX_INCIDENTS + 599, "the newest are kept"
    state.apply_event({"event": "nonsense", "data": 1})
    state.apply_event({"event": "alert", "data": {"id": "not-an-int"}})
    assert {"containers", "alerts"} <= state.take_dirty()
    assert state.take_dirty() == set()


def test_new_incidents_keep_the_container_and_app_counts_live() -> None:
    # The containers and apps columns start from the enforcer's counts in the last snapshot;
    # a new incident adds one, a growing one (same id again) does not.
    state = ConsoleState()
    state.set_containers([{"id": "c1", "name": "pinger_app_1", "app": "pinger", "alerts": 2}])
    state.set_apps([{"name": "pinger", "alerts": 2, "services": {"app": ["c1"]}}])
    for count in (1, 2, 3):
        state.apply_event({"event": "alert", "data": {"id": 7, "count": count, "container_id": "c1", "app": "pinger"}})
    state.apply_event({"event": "alert", "data": {"id": 8, "container_id": "c1", "app": "pinger"}})
    state.apply_event({"event": "alert", "data": {"id": 9, "container_id": "gone", "app": "other"}})
    assert state.container_alerts(state.containers["c1"], {}) == 4
    assert state.apps["pinger"]["alerts"] == 4


def test_state_is_read_only_unless_hello_says_admin() -> None:
    state = ConsoleState()
    assert not state.read_only_role  # no hello yet: nothing to go by
    state.set_hello({"protocol": 1, "role": "viewer"})
    assert state.read_only_role
    state.set_hello({"protocol": 1, "role": "admin"})
    assert not state.read_only_role


def test_edges_from_profile_field_in_several_shapes_and_from_compose() -> None:
    app = {"edges": [{"from": "web", "to": "db", "port": 5432, "source": "seed"},
                     {"src": "x", "dst": "web", "allowed": False}, ["web", "cache", 6379], {"junk": 1}]}
    edges = app_edges(app)
    assert [(e.src, e.dst, e.port, e.allowed) for e in edges] == [
        ("web", "db", 5432, True), ("x", "web", None, False), ("web", "cache", 6379, True)]
    assert edges[0].origin == "seed"
    mapping = app_edges({"edges": {"web": ["db", {"to": "cache", "port": 1}]}})
    assert [(e.src, e.dst, e.port) for e in mapping] == [("web", "db", None), ("web", "cache", 1)]
    compose = {"compose": {"services": {"web": {"links": ["db:database"], "depends_on": ["cache"]}}}}
    assert [(e.src, e.dst, e.origin) for e in app_edges(compose)] == [("web", "db", "link"),
                                                                     ("web", "cache", "depends_on")]
    assert app_edges({"edges": "garbage"}) == []


def test_action_plans_name_the_container_by_id_and_say_what_happens() -> None:
    c = {"id": "f" * 64, "name": "[bold]web\x1b[0m", "app": "blog"}
    plan = actions.freeze_plan(c)
    assert plan.op == "freeze" and plan.args == {"target": "f" * 64}
    words = " ".join(line.plain for line in plan.lines)
    assert "cgroup freezer" in words and "[bold]web\\x1b[0m" in words
    block = actions.block_plan(c, "10.0.0.5:443")
    assert block.args == {"target": "f" * 64, "peer": "10.0.0.5", "port": 443}
    assert actions.block_plan(c, "[fd00::1]:80").args["peer"] == "fd00::1"
    assert actions.block_plan(c, "db").args == {"target": "f" * 64, "peer": "db"}
    kill = actions.kill_plan(c, 4411, "/usr/bin/wget")
    assert kill.args == {"target": "f" * 64, "pid": 4411} and "SIGKILL" in kill.lines[0].plain
    mode = actions.mode_plan("blog", "app", "protect", "alert")
    assert mode.args == {"target": "blog", "mode": "protect", "scope": "app"}
    assert "killed" in " ".join(line.plain for line in mode.lines)
    assert actions.describe_result(plan, {"state": "FROZEN"}).endswith("FROZEN")


def test_command_line_resolves_prefixes_and_aliases() -> None:
    assert resolve_command("co") == ("containers", [])
    assert resolve_command("al kind=process") == ("alerts", ["kind=process"])
    assert resolve_command("a") == (None, [])  # apps, alerts, audit: ambiguous
    assert resolve_command("q") == ("quit", [])
    assert resolve_command("ctr") == ("containers", [])
    assert resolve_command("nope") == (None, [])


def test_process_tree_orders_children_under_parents(tmp_path: Path) -> None:
    def proc(pid: int, ppid: int, comm: str, argv: list[str]) -> None:
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0 -1")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    proc(10, 1, "sh", ["sh", "-c", "loop"])
    proc(11, 10, "sleep (x)", ["sleep", "1"])
    proc(12, 10, "httpd", ["httpd", "-f"])
    procs = process_tree([12, 11, 10, 99], root=tmp_path)
    assert [(p.pid, p.depth) for p in procs] == [(10, 0), (11, 1), (12, 1), (99, 0)]
    assert procs[1].comm == "sleep (x)" and procs[0].cmdline == "sh -c loop"
    assert procs[3].comm == "" and procs[3].ppid == 0  # gone: still listed


def test_block_peer_from_an_alert_prefers_a_container_or_address() -> None:
    from console.widgets.alerts_view import alert_peer, alert_pid

    outbound = {"detail": {"direction": "out", "peer": "blog/db", "remote_ip": "10.0.0.5", "remote_port": 443}}
    assert alert_peer(outbound) == "10.0.0.5:443"
    inbound = {"detail": {"direction": "in", "peer": "x/y", "peer_container": "x_y_1", "remote_port": 51172}}
    assert alert_peer(inbound) == "x_y_1"
    assert alert_peer({"detail": ["not a dict"]}) is None
    assert alert_pid({"detail": {"pid": True}}) is None and alert_pid({"detail": {"pid": 7}}) == 7


def test_header_says_what_matters_first_and_flags_docker_down() -> None:
    from console.widgets.header import header_text

    state = ConsoleState()
    state.set_hello({"protocol": 1, "role": "admin", "host": "node-1"})
    state.set_connection("connected")
    state.set_status({"host": "node-1", "uptime": 3725, "containers": 3, "containers_watched": 2,
                      "docker": {"connected": False, "error": "gone"},
                      "sensors": [{"rate": 1.5, "lost": 4}, {"rate": 2.0, "lost": 0}],
                      "alerts": {"critical": 1, "high": 2}})
    line = header_text(state, read_only=True).plain
    assert line.index("connected") < line.index("READ-ONLY") < line.index("crit 1") < line.index("lost 4")
    assert "DOCKER DOWN" in line and "3.5 ev/s" in line and "watched 2/3" in line and "up 1h02m" in line
    assert "capped" not in line  # nothing held back by the kernel's rate caps: not shown
    state.set_status({"sensors": [{"rate": 1.0, "lost": 0, "suppressed": 700}, {"rate": 0, "suppressed": 5}]})
    assert "lost 0  capped 705" in header_text(state, read_only=False).plain
    assert "outputs" not in header_text(state, read_only=False).plain  # no output in trouble: not shown
    state.set_status({"sensors": [], "outputs": {"configured": 2, "dropped": 15, "failing": ["siem"]}})
    assert "lost -  outputs failing siem dropped 15" in header_text(state, read_only=False).plain
