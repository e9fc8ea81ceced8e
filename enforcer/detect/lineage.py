"""Process lineage inside each container: which story an alert belongs to.

Every alert carries the root of its process's lineage in the container: the entrypoint
(the container's first process) or the process a `docker exec` started. Everything an
intruder does through one injected shell shares that root, so the alerts view can fold an
intrusion into one expandable row instead of a row per finding.

Built from the process sensor's exec, fork and exit events (host pids). A process whose
parent is not known in its container (runc, containerd-shim, or an event lost) starts a
lineage of its own. Bounded per container and in total: past the bounds the oldest exited
processes go first, then the oldest; a process then unknown simply roots a new lineage.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..models import iso_time
from ..sensors.events import ExecEvent, ExitEvent, ForkEvent, SensorEvent

MAX_PER_CONTAINER = 4096
ENTRYPOINT = "(entrypoint)"  # the path of a container's first process when its exec was not seen
MAX_CONTAINERS = 4096


@dataclass(slots=True)
class Proc:
    pid: int
    root: int  # pid of the lineage root
    path: str = ""
    start: float = 0.0
    exited: bool = False


class Lineage:
    def __init__(self) -> None:
        self._tables: OrderedDict[str, OrderedDict[int, Proc]] = OrderedDict()

    def _table(self, container_id: str) -> OrderedDict[int, Proc]:
        table = self._tables.get(container_id)
        if table is None:
            table = self._tables[container_id] = OrderedDict()
            while len(self._tables) > MAX_CONTAINERS:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(container_id)
        return table

    def forget(self, container_id: str) -> None:
        self._tables.pop(container_id, None)

    def observe(self, ev: SensorEvent, init_pid: int = 0) -> None:
        """Follow exec, fork and exit events of a container. `init_pid`: the container's
        first process (host pid), whose own exec is usually not seen (it ran before the
        container was watched): its descendants share it as their root, the entrypoint."""
        if not ev.container_id or not ev.pid or not isinstance(ev, (ForkEvent, ExecEvent, ExitEvent)):
            return
        table = self._table(ev.container_id)
        if init_pid and init_pid not in table:
            self._put(table, Proc(init_pid, init_pid, ENTRYPOINT))
        if isinstance(ev, ForkEvent):
            parent = table.get(ev.pid)
            if ev.child_pid and parent is not None:
                self._put(table, Proc(ev.child_pid, parent.root, parent.path, ev.time))
        elif isinstance(ev, ExecEvent):
            proc = table.get(ev.pid)
            if proc is None:
                parent = table.get(ev.ppid)
                root = parent.root if parent is not None else ev.pid
                proc = Proc(ev.pid, root, start=ev.time)
                self._put(table, proc)
            proc.path = ev.path
            if proc.root == proc.pid:
                proc.start = ev.time or proc.start
        elif isinstance(ev, ExitEvent):
            proc = table.get(ev.pid)
            if proc is not None:
                proc.exited = True

    def _put(self, table: OrderedDict[int, Proc], proc: Proc) -> None:
        table[proc.pid] = proc
        if len(table) > MAX_PER_CONTAINER:
            gone = next((pid for pid, p in table.items() if p.exited), None)
            table.pop(gone if gone is not None else next(iter(table)))

    def root_of(self, container_id: str, pid: int) -> dict[str, Any] | None:
        """{"pid", "path", "start"} of the lineage root of a process, or None if unknown."""
        table = self._tables.get(container_id)
        proc = table.get(pid) if table is not None and pid else None
        if proc is None:
            return None
        root = table.get(proc.root) if table is not None else None  # type: ignore[union-attr]
        if root is None:
            return {"pid": proc.root, "path": "", "start": ""}
        return {"pid": root.pid, "path": root.path, "start": iso_time(root.start) if root.start else ""}
