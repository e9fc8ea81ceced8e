"""The top of every screen: enforcer health in one line, and the connection when it is not up."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

import time
from typing import Any

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


def fleet_header_text(fleet: Any, read_only: bool, now: float | None = None) -> Text:
    """Two lines for a fleet console: the totals, then each host's health:
    `● node-1 0.1.0`, `○ node-2 lost 42s ago, retrying (attempt 5)`, `◌ node-3 connecting`."""
    now = time.time() if now is None else now
    hosts = fleet.hosts
    up = sum(1 for h in hosts if h.up)
    out = Text(" STOCKADE ", style="bold reverse", end="")
    out.append(f" fleet {up}/{len(hosts)} up", style="bold" if up == len(hosts) else "bold bright_red")
    if read_only:
        out.append("  ")
        out.append(" READ-ONLY ", style="bold black on yellow")
    counts = fleet.alert_counts()
    out.append("  alerts", style=LABEL)
    for sev in SEVERITY_ORDER:
        n = counts.get(sev, 0)
        out.append(" ")
        out.append(f"{SEVERITY_SHORT[sev]} {n}", style=SEVERITY_STYLE[sev] if n else LABEL)
    sensors = [x for h in hosts for x in as_list(h.state.status.get("sensors")) if isinstance(x, dict)]
    lost = sum(int(x.get("lost") or 0) for x in sensors)
    rate = sum(float(x.get("rate") or 0) for x in sensors)
    out.append("  events lost ", style=LABEL)
    out.append(str(lost) if sensors else "-", style="bold bright_red" if lost else "")
    out.append("  ")
    out.append(f"{rate:.1f}" if sensors else "-")
    out.append(" ev/s", style=LABEL)
    watched = sum(int(h.state.status.get("containers_watched") or 0) for h in hosts)
    total = sum(int(h.state.status.get("containers") or 0) for h in hosts)
    out.append("  watched ", style=LABEL)
    out.append(f"{watched}/{total}")
    out.append("\n")
    out.append(" hosts", style=LABEL)
    for h in hosts:
        out.append("  ")
        out.append_text(host_health(h, now))
    return out


def host_health(h: Any, now: float) -> Text:
    """One host's health for the header: connected (and its version), or lost since when."""
    conn = h.state.connection
    out = Text(end="")
    label = esc(h.label, 40)
    if conn.state == "connected":
        out.append("● ", style="green")
        out.append(label, style="bold")
        version = h.state.hello.get("version")
        if version:
            out.append(f" {esc(version, 16)}", style=LABEL)
        if h.state.read_only_role:
            out.append(" viewer", style="bold yellow")
        docker = h.state.status.get("docker") if isinstance(h.state.status.get("docker"), dict) else {}
        if docker and not docker.get("connected", True):
            out.append(" DOCKER DOWN", style="bold bright_red")
    elif conn.state == "connecting" and conn.generation == 0 and conn.attempts == 0:
        out.append("◌ ", style="yellow")
        out.append(label, style="bold")
        out.append(" connecting", style="yellow")
    else:
        out.append("○ ", style="bold bright_red")
        out.append(label, style="bold bright_red")
        ago = duration(max(0.0, now - (conn.lost_since or conn.since)))
        word = "lost" if conn.generation else "unreachable"
        every = f" every {conn.retry_delay:g}s" if conn.retry_delay else ""
        out.append(f" {word} {ago} ago, retrying{every} (attempt {conn.attempts})", style="bright_red")
    return out


def banner_text(state: ConsoleState, retry_seconds: float) -> Text:
    if getattr(state, "multi", False):
        return fleet_banner_text(state, retry_seconds)
    conn = state.connection
    if conn.state == "connected":
        return Text("")
    if conn.state == "connecting":
        return Text(f" {esc(conn.message, 300)} …", end="")
    what = esc(conn.message or "the enforcer is not reachable", 300)
    shown = "showing the last data received" if state.containers or state.incidents else "nothing to show yet"
    return Text(f" {what}; retrying every {retry_seconds:g}s (attempt {conn.attempts}); {shown}", end="")


def fleet_banner_text(fleet: Any, retry_seconds: float) -> Text:
    """A fleet console: one line per host that is not connected (the others keep working)."""
    out = Text(end="")
    for h in fleet.hosts:
        conn = h.state.connection
        if conn.state == "connected":
            continue
        if out.plain:
            out.append("\n")
        shown = "its rows are stale (the last received)" if h.state.containers or h.state.incidents \
            else "nothing from it yet"
        what = esc(conn.message or "not reachable", 200)
        every = h.state.connection.retry_delay or retry_seconds
        out.append(f" {esc(h.label, 40)}: {what}; retrying every {every:g}s; {shown}")
    return out


class StatusHeader(Static):
    DEFAULT_CSS = "StatusHeader { height: 1; background: $panel; } StatusHeader.fleet { height: 2; }"

    def show(self, state: ConsoleState, read_only: bool, clock: Clock) -> None:
        if getattr(state, "multi", False):
            self.add_class("fleet")
            self.update(fleet_header_text(state, read_only))
            return
        self.update(header_text(state, read_only))


class ConnectionBanner(Static):
    DEFAULT_CSS = """
    ConnectionBanner { height: auto; max-height: 2; display: none; text-style: bold; }
    ConnectionBanner.down { background: $error 80%; color: $text; }
    ConnectionBanner.fleet { max-height: 4; }
    ConnectionBanner.connecting { background: $warning 80%; color: $text; }
    """

    def show(self, state: ConsoleState, retry_seconds: float) -> None:
        if getattr(state, "multi", False):
            self.add_class("fleet")
            down = [h for h in state.hosts if h.state.connection.state != "connected"]  # type: ignore[attr-defined]
            self.display = bool(down)
            self.set_class(any(h.state.connection.state == "down" or h.state.connection.generation for h in down),
                           "down")
            self.set_class(False, "connecting")
            if down:
                self.update(banner_text(state, retry_seconds))
            return
        up = state.connection.state == "connected"
        self.display = not up
        self.set_class(state.connection.state == "down", "down")
        self.set_class(state.connection.state == "connecting", "connecting")
        if not up:
            self.update(banner_text(state, retry_seconds))
