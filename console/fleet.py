"""Many enforcers in one console: host labels, host-qualified row keys, the fleet's state.

Each target (a socket path, `unix:///path`, `ssh://user@host:port/path`) has its own
client, session and `ConsoleState`; nothing here talks to a socket. With one target the
console is exactly the single-host console (keys are the enforcer's own ids). With more,
every row key is a `HostKey(host index, the enforcer's key)`, so incident #7 of one host
and incident #7 of another are two rows, and an action finds its host from the row.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterator, NamedTuple
from urllib.parse import urlsplit

from .format import esc
from .state import Connection, ConsoleState
from .widgets.live_table import Column, Row

HOST_LABEL_MAX = 24


class HostKey(NamedTuple):
    """A row key in a fleet: which host (its index in the target list) and the host's own key.
    (A tuple: hashed in C, which 10,000 rows of a rebuild notice.)"""

    host: int
    key: Hashable


def qualify(host: int | None, key: Hashable) -> Hashable:
    return key if host is None else HostKey(host, key)


def unqualify(key: Any) -> tuple[int | None, Any]:
    """(host index or None, the enforcer's own key)."""
    if isinstance(key, HostKey):
        return key.host, key.key
    return None, key


# -- labels --------------------------------------------------------------------------------
def target_label(target: str) -> str:
    """What a target says about its host: ssh://u@h:22/x -> `h`; a path or unix:// -> `local`."""
    text = str(target or "")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme == "ssh" and parts.hostname:
            return parts.hostname
    return "local"


def target_detail(target: str) -> str:
    """What tells two targets of the same host apart: the socket's directory, or its path."""
    text = str(target or "")
    parts = urlsplit(text) if "://" in text else None
    path = (parts.path if parts is not None else text) or text
    parent = os.path.basename(os.path.dirname(path.rstrip("/")))
    if parent and parent not in ("run", "stockade", "tmp", ""):
        return parent
    stem = os.path.basename(path.rstrip("/"))
    return stem.removesuffix(".sock") or path


def fleet_labels(targets: list[str], hellos: list[dict[str, Any]], hints: list[str] | None = None) -> list[str]:
    """One short, unique label per host: the enforcer's own hostname (hello `host`) when it
    said one, else the client's own `host_label` (hints) or what the target says; equal ones
    get what tells their targets apart, then a number."""
    base = []
    for i, (target, hello) in enumerate(zip(targets, hellos)):
        name = hello.get("host") if isinstance(hello, dict) else None
        hint = hints[i] if hints and i < len(hints) and hints[i] else ""
        base.append(str(name)[:HOST_LABEL_MAX] if isinstance(name, str) and name.strip()
                    else hint[:HOST_LABEL_MAX] or target_label(target))
    labels = list(base)
    for i, label in enumerate(base):
        if base.count(label) > 1:
            labels[i] = f"{label}:{target_detail(targets[i])}"[:HOST_LABEL_MAX + 12]
    told = list(labels)
    for i, label in enumerate(told):
        if told.count(label) > 1:
            labels[i] = f"{label}#{i + 1}"
    return labels


# -- the fleet's state -----------------------------------------------------------------------
@dataclass
class HostState:
    """One host of the fleet, as the views see it."""

    index: int
    target: str
    state: ConsoleState
    label: str = "local"
    hint: str = ""  # the client's own host_label, if it has one (ssh targets)

    @property
    def up(self) -> bool:
        return self.state.connection.state == "connected"

    @property
    def stale(self) -> bool:
        """Its rows are what it said last (it is not connected now)."""
        return not self.up


@dataclass
class FleetState:
    """What the views read with more than one host: the hosts' own states, side by side."""

    hosts: list[HostState] = field(default_factory=list)
    clock: Any = time.time

    multi = True

    def per_host(self) -> Iterator[tuple[int | None, ConsoleState]]:
        for h in self.hosts:
            yield h.index, h.state

    def host(self, index: int | None) -> HostState:
        return self.hosts[index or 0]

    def host_state(self, index: int | None) -> ConsoleState:
        return self.hosts[index or 0].state

    def label(self, index: int | None) -> str:
        return self.hosts[index or 0].label if index is not None else ""

    def relabel(self) -> bool:
        """Labels from the hellos received so far; True if one changed."""
        labels = fleet_labels([h.target for h in self.hosts], [h.state.hello for h in self.hosts],
                              [h.hint for h in self.hosts])
        changed = False
        for h, label in zip(self.hosts, labels):
            if h.label != label:
                h.label, changed = label, True
        return changed

    def take_dirty(self) -> set[str]:
        dirty: set[str] = set()
        for h in self.hosts:
            dirty |= h.state.take_dirty()
        return dirty

    @property
    def connection(self) -> Connection:
        """Connected while any host is (each host's own is in the header)."""
        states = [h.state.connection.state for h in self.hosts]
        state = "connected" if "connected" in states else "connecting" if "connecting" in states else "down"
        return Connection(state=state, message="")

    @property
    def hello(self) -> dict[str, Any]:
        return next((h.state.hello for h in self.hosts if h.state.hello), {})

    @property
    def read_only_role(self) -> bool:
        """Every host that answered says viewer (each host's own role decides its actions)."""
        hellos = [h.state.hello for h in self.hosts if h.state.hello]
        return bool(hellos) and all(x.get("role") != "admin" for x in hellos)

    # Totals for the tabs line.
    def count(self, what: str) -> int:
        return sum(len(getattr(h.state, what)) for h in self.hosts)

    def alert_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in self.hosts:
            for sev, n in h.state.alert_counts().items():
                out[sev] = out.get(sev, 0) + n
        return out


def host_cell(h: HostState) -> tuple[str, str]:
    """The HOST column: the label, and `(stale)` while the host is not connected."""
    label = esc(h.label, HOST_LABEL_MAX + 16)
    if h.stale:
        return f"{label} (stale)", "bold yellow"
    return label, "bold"


def with_host(row: Row, h: HostState) -> Row:
    """A view's row in a fleet: the HOST cell first, and a key that names the host."""
    cell, style = host_cell(h)
    return row.prefixed(HostKey(h.index, row.key), cell, style, h.label, f"{h.label.lower()} {row.search}", h.label)


HOST_COLUMN_ARGS = {"key": "host", "label": "HOST", "min_width": 4, "max_width": HOST_LABEL_MAX + 8}


def columns_for(columns: list[Any], multi: bool) -> list[Any]:
    """A view's columns, with HOST first in a fleet console."""
    return [Column(**HOST_COLUMN_ARGS), *columns] if multi else list(columns)


def fleet_rows(state: Any, build: Any) -> list[Row]:
    """`build(host_state)` for each host; in a fleet, each row gets its HOST cell and key."""
    rows: list[Row] = []
    for index, host_state in state.per_host():
        built = build(host_state)
        if index is None:
            rows.extend(built)
        else:
            h = state.host(index)
            rows.extend(with_host(r, h) for r in built)
    return rows
