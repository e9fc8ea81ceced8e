"""The socket protocol's constants and framing, shared by the enforcer and its clients.

JSON lines over a unix socket (docs/protocol.md):
  request  {"id": 1, "op": "containers", ...arguments}
  reply    {"id": 1, "ok": true, "result": ...}
           {"id": 1, "ok": false, "error": "one line", "code": "not_found"}
  event    {"event": "alert", "data": {...}}      (after a subscribe)
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
MAX_LINE = 1 << 20  # a request line longer than 1 MiB is refused

# Error codes: stable strings that scripts may test.
BAD_REQUEST = "bad_request"
UNKNOWN_OP = "unknown_op"
NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
CONFLICT = "conflict"
UNAVAILABLE = "unavailable"
FAILED = "failed"
BUSY = "busy"  # too many requests in flight: retry once replies have come back

TOPICS = ("alert", "inventory", "feed", "stats", "audit", "profile", "sensor")
# Topics only the admin role may follow: `sensor` carries every argv (and the secrets
# people put in argv) of every container.
ADMIN_TOPICS = ("sensor",)


class ProtocolError(Exception):
    """A reply with ok=false, or a broken stream; `code` is one of the codes above."""

    def __init__(self, message: str, code: str = FAILED) -> None:
        super().__init__(message)
        self.code = code


def encode(message: dict[str, Any]) -> bytes:
    # ensure_ascii: whatever a container put in a name stays one line of plain ASCII.
    return (json.dumps(message, separators=(",", ":"), ensure_ascii=True, default=str) + "\n").encode()


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not JSON: {e}", BAD_REQUEST) from None
    except RecursionError:  # "[[[[...": nested deeper than the parser goes
        raise ProtocolError("not JSON: nested too deeply", BAD_REQUEST) from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object", BAD_REQUEST)
    return message
