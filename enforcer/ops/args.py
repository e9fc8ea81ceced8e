"""Checking a request's arguments: one function per kind of value, one error code each.

Whatever a client sends is hostile until checked here: wrong types, huge numbers (a pid is
a C int, an id an SQLite integer: larger ones would overflow deep inside), huge strings.
Every failure is an `OpError` with one line that names the argument and what it must be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from .. import protocol
from ..server import OpError

if TYPE_CHECKING:
    from ..models import Container
    from ..ports import ContainerIndex

BAD_REQUEST = protocol.BAD_REQUEST
NOT_FOUND = protocol.NOT_FOUND
CONFLICT = protocol.CONFLICT
UNAVAILABLE = protocol.UNAVAILABLE
FAILED = protocol.FAILED

MAX_ID = 2**62


def bad(message: str) -> OpError:
    return OpError(message, BAD_REQUEST)


def text(args: dict[str, Any], name: str, *, required: bool = True, limit: int = 256) -> str:
    """A non-empty string of at most `limit` characters ('' when optional and absent)."""
    value = args.get(name)
    if value in (None, "") and not required:
        return ""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise bad(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def optional_name(args: dict[str, Any], name: str, limit: int = 256) -> str:
    """A filter such as app or container: '' when absent, else a string."""
    value = args.get(name)
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise bad(f"{name} must be a name")
    return value


def whole(args: dict[str, Any], name: str, *, default: int | None = None, lo: int = 1, hi: int = MAX_ID,
          digits: bool = False) -> int:
    """A whole number from lo to hi; with `digits`, a string of digits is accepted too."""
    value = args.get(name, default)
    if digits and isinstance(value, str) and value.isdigit() and len(value) < 20:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        if lo == 1 and hi == MAX_ID:
            raise bad(f"{name} must be a positive whole number")
        raise bad(f"{name} must be a whole number from {lo} to {hi}")
    return value


def number(args: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise bad(f"{name} must be a number from {lo:g} to {hi:g}")
    return float(value)


def boolean(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.get(name, default)
    if not isinstance(value, bool):
        raise bad(f"{name} must be true or false")
    return value


def choice(args: dict[str, Any], name: str, allowed: Iterable[str], *, required: bool = True) -> str:
    """One of `allowed` ('' when optional and absent)."""
    allowed = tuple(allowed)
    value = args.get(name)
    if value in (None, "") and not required:
        return ""
    if value not in allowed:
        raise bad(f"{name} must be one of {', '.join(allowed)}")
    return str(value)


def container(inventory: "ContainerIndex", ref: Any) -> "Container":
    """The container a name, id or id prefix names; not_found when there is none."""
    if not isinstance(ref, str) or not ref:
        raise bad("name a container (name, id or id prefix)")
    c = inventory.resolve(ref)
    if c is None:
        raise OpError(f"no container {ref[:128]!r} on this host", NOT_FOUND)
    return c


def target(args: dict[str, Any], what: str = "an app or a container") -> str:
    value = args.get("target")
    if not isinstance(value, str) or not value:
        raise bad(f"name {what}")
    return value
