"""The top of every screen: enforcer health in one line, and the connection when it is not up."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..format import SEVERITY_STYLE, Clock, as_list, esc
from ..output import duration
from ..state import ConsoleState

SEVERITY_ORDER = ("critical", "high", "medium", "low")
LABEL = "grey58"  # labels: a plain colour (not "dim", which some terminals render as a block)
SEVERITY_SHORT = {"critical": "crit", "high": "high", "medium": "med", "low": "low"}


def header_text(state: ConsoleState, read_only: bool) -> Text:
    """`STOCKADE host ● connected  alerts crit 1 high 3 …  lost 0  45.2 ev/s  watched 12/14  up 3h02m`,
    most important first, so that a narrow terminal cuts the least useful end."""
    s = state.status
    out = Text(" STOCKADE ", style="bold reverse", end="")
    host = s.get("host") or state.hello.get("host")
    out.append(" ")
    out.append(esc(host or "?", 64), style="bold")
    # What must never be cut off on a narrow terminal comes first.
    conn = state.connection
    out.append("  ")
    if conn.state == "connected":
        out.append("● connected", style="green")
    elif conn.state == "connecting":
        out.append("◌ connecting", style="yellow")
    else:
        out.append("○ disconnected", style="bold bright_red")
    if read_only:
        out.append("  ")
        out.append(" READ-ONLY ", style="bold black on yellow")
    if state.hello:
        counts = state.alert_counts()
        out.append("  alerts", style=LABEL)
        for sev in SEVERITY_ORDER:
            n = counts.get(sev, 0)
            out.append(" ")
            out.append(f"{SEVERITY_SHORT[sev]} {n}", style=SEVERITY_STYLE[sev] if n else LABEL)
    docker = s.get("docker") if isinstance(s.get("docker"), dict) else {}
    if docker and not docker.get("connected", True):
        out.append("  ")
        out.append(" DOCKER DOWN ", style="bold bright_white on red3")
    if s:
        sensors = as_list(s.get("sensors"))
        rate = sum(float(x.get("rate") or 0) for x in sensors if isinstance(x, dict))
        lost = sum(int(x.get("lost") or 0) for x in sensors if isinstance(x, dict))
        out.append("  lost ", style=LABEL)
        out.append(str(lost) if sensors else "-", style="bold bright_red" if lost else "")
        # Events the kernel held back under its per-container rate caps: a flood (or an
        # attacker hiding in one) must be visible too. Shown only when there are some.
        capped = sum(int(x.get("suppressed") or 0) for x in sensors if isinstance(x, dict))
        if capped:
            out.append("  capped ", style=LABEL)
            out.append(str(capped), style="bold yellow")
        # Alert outputs (docs/outputs.md): shown only when one is failing or had to drop.
        outputs = s.get("outputs") if isinstance(s.get("outputs"), dict) else {}
        dropped = outputs.get("dropped") if isinstance(outputs.get("dropped"), int) else 0
        failing = as_list(outputs.get("failing"))
        if failing or dropped:
            out.append("  outputs ", style=LABEL)
            if failing:
                out.append(f"failing {esc(','.join(str(f) for f in failing), 64)}", style="bold yellow")
            if dropped:
                out.append(f"{' ' if failing else ''}dropped {dropped}", style="bold bright_red")
        out.append("  ")
        out.append(f"{rate:.1f}" if sensors else "-")
        out.append(" ev/s", style=LABEL)
        if not sensors:
            out.append(" (no sensors)", style=LABEL)
        out.append("  watched ", style=LABEL)
        out.append(f"{s.get('containers_watched', '-')}/{s.get('containers', '-')}")
        uptime = s.get("uptime")
        out.append("  up ", style=LABEL)
        out.append(duration(float(uptime)) if isinstance(uptime, (int, float)) else "-")
    return out


def banner_text(state: ConsoleState, retry_seconds: float) -> Text:
    conn = state.connection
    if conn.state == "connected":
        return Text("")
    if conn.state == "connecting":
        return Text(f" {esc(conn.message, 300)} …", end="")
    what = esc(conn.message or "the enforcer is not reachable", 300)
    shown = "showing the last data received" if state.containers or state.incidents else "nothing to show yet"
    return Text(f" {what}; retrying every {retry_seconds:g}s (attempt {conn.attempts}); {shown}", end="")


class StatusHeader(Static):
    DEFAULT_CSS = "StatusHeader { height: 1; background: $panel; }"

    def show(self, state: ConsoleState, read_only: bool, clock: Clock) -> None:
        self.update(header_text(state, read_only))


class ConnectionBanner(Static):
    DEFAULT_CSS = """
    ConnectionBanner { height: auto; max-height: 2; display: none; text-style: bold; }
    ConnectionBanner.down { background: $error 80%; color: $text; }
    ConnectionBanner.connecting { background: $warning 80%; color: $text; }
    """

    def show(self, state: ConsoleState, retry_seconds: float) -> None:
        up = state.connection.state == "connected"
        self.display = not up
        self.set_class(state.connection.state == "down", "down")
        self.set_class(state.connection.state == "connecting", "connecting")
        if not up:
            self.update(banner_text(state, retry_seconds))
