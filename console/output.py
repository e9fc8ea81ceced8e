"""Plain-terminal output for the CLI: aligned tables and JSON, every value escaped."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Iterable, Sequence

from .escape import printable


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], out=None) -> None:
    """Columns aligned to their widest cell; the last column is not padded."""
    out = out or sys.stdout
    cells = [[printable(h) for h in headers]] + [[printable("" if v is None else v, 200) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(c.ljust(widths[i]) if i < len(row) - 1 else c for i, c in enumerate(row))
        out.write(line.rstrip() + "\n")


def print_json(data: Any, out=None) -> None:
    (out or sys.stdout).write(json.dumps(data, ensure_ascii=True, default=str) + "\n")


def ago(epoch: float | None, now: float | None = None) -> str:
    """A short relative time: 5s, 3m, 2h, 4d."""
    if not epoch:
        return "-"
    delta = max(0.0, (now or time.time()) - epoch)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if delta >= size:
            return f"{int(delta // size)}{unit}"
    return f"{int(delta)}s"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"
