"""The top of every screen: enforcer health in one line, and the connection when it is not up."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..format import SEVERITY_STYLE, Clock, esc
from ..output import duration
from ..state import ConsoleState

SEVERITY_ORDER = ("critical", "high", "medium", "low")
SEVERITY_SHORT = {"critical": "crit", "high": "high", "medium": "med", "low": "low"}


def header_text(state: ConsoleState, read_only: bool) -> Text:
    """`STOCKADE host up 3h02m · watched 12/14 · 45.2 ev/s · lost 0 · crit 1 high 3 ...`."""
    s = state.status
    out = Text(" STOCKADE ", style="bold reverse", end="")
    host = s.get("host") or state.hello.get("host")
    out.append(" ")
    out.append(esc(host or "?", 64), style="bold")
    if s:
        uptime = s.get("uptime")
        out.append("  up ", style="dim")
        out.append(duration(float(uptime)) if isinstance(uptime, (int, float)) else "-")
        out.append("  watched ", style="dim")
        out.append(f"{s.get('containers_watched', '-')}/{s.get('containers', '-')}")
        sensors = s.get("sensors") if isinstance(s.get("sensors"), list) else []
        rate = sum(float(x.get("rate") or 0) for x in sensors if isinstance(x, dict))
        lost = sum(int(x.get("lost") or 0) for x in sensors if isinstance(x, dict))
        out.append("  ")
        out.append(f"{rate:.1f}" if sensors else "-")
        out.append(" ev/s", style="dim")
        out.append("  lost ", style="dim")
        out.append(str(lost) if sensors else "-", style="bold bright_red" if lost else "")
        if not sensors:
            out.append(" (no sensors)", style="dim")
    counts = state.alert_counts()
    out.append("  alerts ", style="dim")
    if not counts and not state.available("alerts"):
        out.append("n/a", style="dim")
    for sev in SEVERITY_ORDER:
        n = counts.get(sev, 0)
        if not counts and not state.available("alerts"):
            break
        out.append(" ")
        out.append(f"{SEVERITY_SHORT[sev]} {n}", style=SEVERITY_STYLE[sev] if n else "dim")
    if read_only:
        out.append("  ")
        out.append(" READ-ONLY ", style="bold black on yellow")
    conn = state.connection
    out.append("  ")
    if conn.state == "connected":
        out.append("● connected", style="green")
    elif conn.state == "connecting":
        out.append("◌ connecting", style="yellow")
    else:
        out.append("○ disconnected", style="bold bright_red")
    return out


def banner_text(state: ConsoleState, retry_seconds: float) -> Text:
    conn = state.connection
    if conn.state == "connected":
        return Text("")
    if conn.state == "connecting":
        return Text(f" {esc(conn.message, 300)} …", style="bold black on yellow", end="")
    what = esc(conn.message or "the enforcer is not reachable", 300)
    shown = "showing the last data received" if state.containers or state.incidents else "nothing to show yet"
    return Text(f" {what}; retrying every {retry_seconds:g}s (attempt {conn.attempts}); {shown}",
                style="bold bright_white on red3", end="")


class StatusHeader(Static):
    DEFAULT_CSS = "StatusHeader { height: 1; background: $panel; }"

    def show(self, state: ConsoleState, read_only: bool, clock: Clock) -> None:
        self.update(header_text(state, read_only))


class ConnectionBanner(Static):
    DEFAULT_CSS = "ConnectionBanner { height: auto; max-height: 2; display: none; }"

    def show(self, state: ConsoleState, retry_seconds: float) -> None:
        up = state.connection.state == "connected"
        self.display = not up
        if not up:
            self.update(banner_text(state, retry_seconds))
