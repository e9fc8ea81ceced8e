"""A container's process tree from its host pids (the `container` op's `pids`).

The console runs on the enforcer's host (it reaches a unix socket), so the parent of
each pid is read from /proc/PID/stat. A pid that has gone, or that this user may not
read, still appears, flat, with what is known. Blocking file reads: call from a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(slots=True)
class Proc:
    pid: int
    ppid: int = 0
    comm: str = ""
    cmdline: str = ""
    depth: int = 0


def read_proc(pid: int, root: Path = Path("/proc")) -> Proc:
    proc = Proc(pid)
    try:
        stat = (root / str(pid) / "stat").read_text(errors="surrogateescape")
        # comm is in parentheses and may itself hold spaces or parentheses: split at the last ')'.
        head, _, rest = stat.rpartition(")")
        proc.comm = head.partition("(")[2]
        fields = rest.split()
        proc.ppid = int(fields[1]) if len(fields) > 1 else 0
    except (OSError, ValueError, IndexError):
        return proc
    try:
        raw = (root / str(pid) / "cmdline").read_bytes()[:4096]
        proc.cmdline = " ".join(part.decode(errors="surrogateescape") for part in raw.split(b"\0") if part)
    except OSError:
        pass
    return proc


def process_tree(pids: list[int], root: Path = Path("/proc")) -> list[Proc]:
    """Depth-first, children under their parent; roots are pids whose parent is not listed."""
    procs = {pid: read_proc(pid, root) for pid in sorted(set(pids)) if isinstance(pid, int) and pid > 0}
    children: dict[int, list[int]] = {}
    roots = []
    for pid, p in procs.items():
        if p.ppid in procs and p.ppid != pid:
            children.setdefault(p.ppid, []).append(pid)
        else:
            roots.append(pid)
    out: list[Proc] = []
    seen: set[int] = set()

    def walk(pid: int, depth: int) -> None:
        if pid in seen:
            return
        seen.add(pid)
        p = procs[pid]
        p.depth = depth
        out.append(p)
        for child in sorted(children.get(pid, [])):
            walk(child, depth + 1)

    for pid in sorted(roots):
        walk(pid, 0)
    for pid in procs:  # a cycle (pid reuse race) must not hide anything
        walk(pid, 0)
    return out
