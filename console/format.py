"""How values look in the console: cells, colours and times.

Every value that a container, a feed or an alert controls goes through `cell()` (which uses
`escape.safe_text`), so nothing reaches the screen as markup or as a terminal control
sequence. Colours are named ANSI colours or 256-colour numbers that Rich degrades to the
nearest of 16 on a 16-colour terminal, and no meaning is carried by colour alone (the
severity word is always written).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from rich.text import Text

from .escape import printable, safe_text
from .output import duration

SEVERITY_STYLE: dict[str, str] = {
    "critical": "bold bright_white on red3",
    "high": "bold bright_red",
    "medium": "yellow",
    "low": "cyan",
}
SEVERITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}
KIND_STYLE: dict[str, str] = {
    "process": "magenta",
    "network": "bright_blue",
    "file": "green",
    "syscall": "yellow",
    "threat": "bold red",
}
MODE_STYLE: dict[str, str] = {"learn": "cyan", "alert": "yellow", "protect": "bold green"}
STATE_STYLE: dict[str, str] = {
    "running": "green",
    "paused": "yellow",
    "frozen": "bold bright_cyan",
    "exited": "dim",
    "created": "dim",
    "restarting": "yellow",
    "dead": "red",
    "removing": "dim",
}

Clock = Callable[[], float]


def cell(value: Any, style: str = "", max_len: int = 512) -> Text:
    """One table cell: escaped, never markup. None and "" become a dim dash."""
    if value is None or value == "":
        return Text("-", style="dim", end="")
    return safe_text(value, style=style, max_len=max_len)


def as_list(value: Any) -> list[Any]:
    """A list field from the wire, or [] when it is missing or of another type."""
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    """An object field from the wire, or {} when it is missing or of another type."""
    return value if isinstance(value, dict) else {}


def esc(value: Any, max_len: int = 256) -> str:
    """An escaped one-line string for a table cell (LiveTable styles it); "-" when empty."""
    if value is None or value == "":
        return "-"
    return printable(value, max_len)


def severity_cell(severity: Any) -> Text:
    return cell(severity, SEVERITY_STYLE.get(str(severity), ""))


def kind_cell(kind: Any) -> Text:
    return cell(kind, KIND_STYLE.get(str(kind), ""))


def mode_cell(mode: Any) -> Text:
    return cell(mode, MODE_STYLE.get(str(mode), ""))


def state_cell(state: Any, frozen: bool = False) -> Text:
    if frozen:
        return Text("FROZEN", style=STATE_STYLE["frozen"], end="")
    return cell(state, STATE_STYLE.get(str(state), ""))


def count_cell(n: Any, style_if_nonzero: str = "bold bright_red") -> Text:
    try:
        value = int(n or 0)
    except (TypeError, ValueError):
        return cell(n)
    return Text(str(value), style=style_if_nonzero if value else "dim", end="")


def profile_cell(state: Any, learning_left: Any) -> Text:
    """`learning 4m12s` or `active`; the time left is what an operator waits for."""
    if not state:
        return Text("-", style="dim", end="")
    if state == "learning":
        try:
            left = float(learning_left or 0)
        except (TypeError, ValueError):
            left = 0.0
        text = "learning" + (f" {duration(left)}" if left > 0 else "")
        return Text(text, style="cyan", end="")
    return cell(state, "green" if state == "active" else "")


def clock_time(iso: Any) -> str:
    """`21:05:58` from `2026-11-28T21:05:58.123Z` (UTC, as on the wire: no local time zone guesswork)."""
    if not isinstance(iso, str) or "T" not in iso:
        return "-"
    return printable(iso.split("T", 1)[1][:8], 8)


def date_time(iso: Any) -> str:
    """`11-28 21:05:58` (UTC) from an ISO time or an epoch (both appear on the wire)."""
    if isinstance(iso, (int, float)) and not isinstance(iso, bool):
        if iso <= 0:
            return "-"
        try:
            return datetime.fromtimestamp(float(iso), tz=timezone.utc).strftime("%m-%d %H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return "-"
    if not isinstance(iso, str) or "T" not in iso:
        return "-"
    day, _, rest = iso.partition("T")
    return printable(f"{day[5:10]} {rest[:8]}", 20)


def since(epoch: Any, clock: Clock = time.time) -> str:
    """`3m ago`-style text for an epoch (status `started`, container `started_at`, feed `last_sync`)."""
    try:
        value = float(epoch or 0)
    except (TypeError, ValueError):
        return "-"
    if value <= 0:
        return "never"
    return duration(max(0.0, clock() - value)) + " ago"


def join_text(parts: Iterable[Text | str], sep: str = " ") -> Text:
    """Concatenate Texts (each already safe) without ever parsing markup."""
    out = Text(end="")
    first = True
    for part in parts:
        if not first and sep:
            out.append(sep)
        first = False
        out.append(part if isinstance(part, Text) else Text(part))
    return out


def detail_lines(data: Any, indent: int = 0, max_items: int = 200) -> list[Text]:
    """A structured alert detail (nested dicts and lists) as escaped `key: value` lines."""
    pad = "  " * indent
    lines: list[Text] = []
    if isinstance(data, dict):
        for i, (key, value) in enumerate(data.items()):
            if i >= max_items:
                lines.append(Text(f"{pad}… {len(data) - max_items} more", style="dim"))
                break
            label = Text(pad, end="")
            label.append(safe_text(key, style="bold", max_len=80))
            label.append(": ")
            if isinstance(value, (dict, list)) and value:
                lines.append(label)
                lines.extend(detail_lines(value, indent + 1, max_items))
            else:
                label.append(safe_text(_scalar(value), max_len=1024))
                lines.append(label)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            if i >= max_items:
                lines.append(Text(f"{pad}… {len(data) - max_items} more", style="dim"))
                break
            if isinstance(value, (dict, list)) and value:
                lines.append(Text(f"{pad}-", end=""))
                lines.extend(detail_lines(value, indent + 1, max_items))
            else:
                line = Text(f"{pad}- ", end="")
                line.append(safe_text(_scalar(value), max_len=1024))
                lines.append(line)
    else:
        lines.append(Text(pad, end="").append(safe_text(_scalar(data), max_len=1024)))
    return lines


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return str(value)
