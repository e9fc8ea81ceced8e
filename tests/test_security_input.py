"""Bad input, tried and survived (issue 9): the REAL enforcer's socket under fuzzed and
oversize requests, hostile text from containers shown inert by the CLI and the real
Textual console, malformed compose files, and containers that go away mid-action.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enforcer import protocol
from harness import EnforcerProcess
from hostile import (OUTSIDE_EFFECTS, RawConnection, check_reply, encode_loose, line_is_safe, protocol_lines,
                     request_objects, tracebacks, wait_answers)

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
]


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


@pytest.mark.xfail(strict=True, reason="enforcer/server/server.py (owned by the lead): unsubscribe hashes "
                   "each topic without checking it is a string -> internal error instead of bad_request")
def test_known_open_bugs(make_enforcer: Callable[..., EnforcerProcess]) -> None:
    enforcer = make_enforcer("--no-sensors")
    conn = RawConnection(enforcer.socket)
    try:
        conn.send(b'{"id":1,"op":"unsubscribe","topics":[{}]}\n')
        [(raw, msg)] = conn.replies(1)
        check_reply(raw, msg, "unsubscribe with a dict topic")
    finally:
        conn.close()
