"""Hostile input for the security tests: strings an attacker controls (container labels,
process paths, argv), raw protocol lines, and checks that what we print is inert.

Used by tests/integration/test_security_input.py and tests/integration/test_security_roles.py.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from hypothesis import strategies as st

from enforcer import protocol

KNOWN_CODES = {protocol.BAD_REQUEST, protocol.UNKNOWN_OP, protocol.NOT_FOUND, protocol.FORBIDDEN,
               protocol.CONFLICT, protocol.UNAVAILABLE, protocol.FAILED, protocol.BUSY}

# -- hostile text ------------------------------------------------------------------------
OSC_TITLE = "\x1b]0;pwned\x07"  # sets the terminal title
CLEAR = "\x1b[2J"  # clears the screen
RED = "\x1b[31m"
MARKUP = "[bold red]x[/]"
CLICK = "[@click=app.quit]q[/]"
BIDI = "\u202egnp.exe"  # right-to-left override: reads as exe.png
CONTROL = "a\x00b\x07c\x08d\rE\x7fF\x9bG"  # NUL, BEL, BS, CR, DEL, C1 CSI
INVALID_UTF8 = b"bad\xff\xfe\xc3(utf8"  # as bytes; decoded with surrogateescape it is \udcff...

# What must never reach a terminal from attacker text.
_BIDI_CONTROLS = {0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069,
                  0x2028, 0x2029, 0xFEFF}


def bad_chars(text: str, allow_newline: bool = True) -> list[str]:
    """Characters that would act on a terminal (or on the eye) rather than show: C0/C1
    controls (ESC starts every escape sequence), DEL, lone surrogates, bidi overrides."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\n" and allow_newline:
            continue
        if code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000 or code in _BIDI_CONTROLS:
            out.append(ch)
    return out


def assert_inert(text: str, where: str, allow_newline: bool = True) -> None:
    bad = bad_chars(text, allow_newline)
    if bad:
        i = next(i for i, ch in enumerate(text) if ch in bad)
        raise AssertionError(f"{where}: raw control characters {sorted({f'U+{ord(c):04X}' for c in bad})} "
                             f"near {text[max(0, i - 40):i + 40]!r}")


def assert_inert_bytes(data: bytes, where: str) -> None:
    """Terminal output as bytes: valid UTF-8 and inert."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError(f"{where}: output is not valid UTF-8 ({e})") from None
    assert_inert(text, where)


# -- hostile protocol input ----------------------------------------------------------------
# Ops that reach outside the enforcer (network fetches, files for a user): never fuzzed.
OUTSIDE_EFFECTS = {"feeds.add", "feeds.sync", "forensics"}
# Ops that act on a named container, app or feed: the fuzz only ever names ones that do not
# exist (prefix "nx-": no container id starts so, no test names one so).
TARGETED = {"block", "unblock", "freeze", "unfreeze", "kill", "mode", "relearn", "feeds.remove",
            "feeds.set", "harden", "seccomp", "profile", "container"}
TARGET_ARGS = ("target", "name", "peer")  # unblock resolves peers too: keep them unreal as well

ARG_NAMES = ["target", "peer", "port", "proto", "reason", "pid", "signal", "block_id", "mode", "scope",
             "topics", "limit", "since", "kind", "severity", "app", "container", "name", "url", "format",
             "columns", "local", "enabled", "interval", "max_bytes", "value", "feed", "out", "alert_id"]

hostile_text = st.one_of(
    st.sampled_from([OSC_TITLE, CLEAR, MARKUP, CLICK, BIDI, CONTROL, "", " ", "\n", "\\", '"', "null",
                     "10.0.0.1", "10.0.0.0/8", "::1", "tcp", "udp", "learn", "alert", "protect", "app", "container",
                     "alert", "inventory", "high", "process", "-1", "9" * 40, "SIGKILL", "KILL", "9"]),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=()), max_size=20),
)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**70, max_value=2**70),
                        st.floats(allow_nan=False), hostile_text)
json_value = st.recursive(json_scalar, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=10)


def _unreal(value: Any) -> Any:
    """A target that cannot name anything real: strings get the nx- prefix."""
    if isinstance(value, str):
        return "nx-" + value
    return value


@st.composite
def request_objects(draw: st.DrawFn, ops: list[str], fixed_op: str | None = None) -> dict[str, Any]:
    roll = 0 if fixed_op else draw(st.integers(0, 9))
    op = fixed_op or (draw(st.sampled_from(ops)) if roll < 8 else draw(hostile_text if roll == 8 else json_value))
    msg: dict[str, Any] = {}
    if draw(st.integers(0, 9)) < 8:
        msg["id"] = draw(st.one_of(st.integers(0, 2**31), st.text(max_size=12), json_value))
    if fixed_op or draw(st.integers(0, 9)) < 9:
        msg["op"] = op
    for name in draw(st.lists(st.sampled_from(ARG_NAMES), max_size=6, unique=True)):
        msg[name] = draw(json_value)
    for name in draw(st.lists(st.text(max_size=10), max_size=2)):
        msg.setdefault(name, draw(json_value))
    op_name = msg.get("op")
    if not isinstance(op_name, str) or op_name in TARGETED:
        for name in TARGET_ARGS:
            if name in msg:
                msg[name] = _unreal(msg[name])
        # `mode` without scope treats a name it does not know as a container: fine.
    return msg


def _safe_object(msg: Any) -> bool:
    """No request in the fuzz may reach a real container, app or feed, or the outside."""
    if not isinstance(msg, dict):
        return True
    op = msg.get("op")
    if not isinstance(op, str):
        return True  # op must be a string: a bad_request whatever the arguments
    if op in OUTSIDE_EFFECTS:
        return False
    if op in TARGETED:
        for name in TARGET_ARGS:
            v = msg.get(name)
            if isinstance(v, str) and not v.startswith("nx-"):
                return False
        if op == "unblock" and "block_id" in msg:
            return False  # the enforcer's own (empty) block table, but keep it simple: never
    return True


def encode_loose(msg: Any) -> bytes:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def protocol_lines(draw: st.DrawFn, ops: list[str]) -> bytes:
    """One request line (without its newline): valid-looking, truncated, wrong JSON, raw bytes."""
    kind = draw(st.sampled_from(["object", "object", "object", "truncated", "json", "bytes", "nested"]))
    if kind == "object":
        return encode_loose(draw(request_objects(ops)))
    if kind == "truncated":
        full = encode_loose(draw(request_objects(ops)))
        return full[:draw(st.integers(0, max(0, len(full) - 1)))]
    if kind == "json":
        return encode_loose(draw(json_value))
    if kind == "nested":
        # Deep nesting hits json's recursion limit; none near the limit itself, where the
        # server (deeper stack) and this test could disagree on whether it parses.
        depth = draw(st.sampled_from([1, 30, 300, 5_000, 200_000]))
        return b'{"id":1,"op":"ping","x":' + b"[" * depth + b"]" * depth + b"}"
    return draw(st.binary(max_size=200)).replace(b"\n", b"")


def line_is_safe(line: bytes) -> bool:
    """True if the line, however the server reads it, cannot act on anything real."""
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return True  # the server cannot parse it either: a bad_request
    return _safe_object(msg)


# -- talking raw bytes to the socket --------------------------------------------------------
class RawConnection:
    """A plain unix socket: bytes in, reply lines out, events set aside."""

    def __init__(self, path: str, timeout: float = 15.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events: list[dict[str, Any]] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> bytes | None:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def replies(self, n: int) -> list[tuple[bytes, dict[str, Any]]]:
        """n reply lines (events skipped); fewer only if the server closed the connection."""
        out: list[tuple[bytes, dict[str, Any]]] = []
        while len(out) < n:
            line = self.read_line()
            if line is None:
                break
            msg = json.loads(line)
            if isinstance(msg, dict) and "event" in msg and "ok" not in msg:
                self.events.append(msg)
                continue
            out.append((line, msg))
        return out

    def close(self) -> None:
        self.sock.close()


def check_reply(raw: bytes, msg: Any, where: str) -> None:
    """A reply is one line of ASCII JSON: a result, or a known code and a one-line error."""
    assert raw.isascii(), f"{where}: reply is not ASCII: {raw[:200]!r}"
    assert isinstance(msg, dict), f"{where}: reply is not an object: {raw[:200]!r}"
    assert isinstance(msg.get("ok"), bool), f"{where}: no ok: {raw[:200]!r}"
    if msg["ok"]:
        assert "result" in msg, f"{where}: ok without result: {raw[:200]!r}"
        return
    assert msg.get("code") in KNOWN_CODES, f"{where}: unknown code: {raw[:300]!r}"
    error = msg.get("error")
    assert isinstance(error, str) and error, f"{where}: no error text: {raw[:300]!r}"
    assert "\n" not in error and len(error) <= 600, f"{where}: error not one short line: {error[:300]!r}"
    assert "Traceback" not in error and "internal error" not in error, f"{where}: a bug surfaced: {error}"


def wait_answers(path: str, op: str = "status", timeout: float = 20.0) -> Any:
    from support.harness import socket_call

    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket_call(path, op, timeout=5)
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def tracebacks(log: str) -> list[str]:
    """Unhandled-exception tracebacks in an enforcer log (with the line that introduced them)."""
    lines = log.splitlines()
    return [("\n".join(lines[max(0, i - 2):i + 12])) for i, line in enumerate(lines) if line.startswith("Traceback")]


# -- hostile containers --------------------------------------------------------------------
BIG = 64 * 1024
HOSTILE_PROJECT = "evil" + OSC_TITLE + MARKUP + "\x7f\u009b" + BIDI
HOSTILE_SERVICE = "svc" + CLEAR + CLICK + RED
# Made inside the container with printf, so that the path holds bytes no API would carry:
# ESC sequences, markup, and bytes that are not UTF-8 (\377\376).
HOSTILE_DIR_PRINTF = r"/tmp/\033]0;pwned\007[bold red]x[/]\033[2J\377\376[@click=app.quit]q[/]"
HOSTILE_ARG = "arg" + OSC_TITLE + CLEAR + MARKUP + CLICK + "\x08\x7f"


def hostile_command() -> list[str]:
    """A container command that runs `sh` from a hostile directory (a copy of busybox),
    with hostile and 64 KiB arguments: the process tree and the profile see them."""
    script = (f'd="$(printf \'{HOSTILE_DIR_PRINTF}\')" && mkdir -p "$d" && cp /bin/busybox "$d/sh" && '
              'exec "$d/sh" -c "sleep 3600 & sleep 3600; true" "$1" "$2"')
    return ["sh", "-c", script, "x", HOSTILE_ARG, "L" * BIG]


def screen_text(app: Any) -> str:
    """What the Textual app has on screen, line by line, checked segment by segment: a
    control character in any segment would reach the terminal as is."""
    lines = []
    for y, strip in enumerate(app.screen._compositor.render_strips()):
        line = []
        for seg in strip:
            assert not seg.control, f"screen line {y}: a control segment {seg!r}"
            assert_inert(seg.text, f"screen line {y}", allow_newline=False)
            line.append(seg.text)
        lines.append("".join(line))
    return "\n".join(lines)
