"""The forensics bundle: one tar.gz of the gathered evidence, and where it is created.

Every member is a regular file of mode 0600 under one top folder; `manifest.json` comes
last and lists the sha256 and size of every other member (the bundle's own sha256 is
returned to the caller in `BundleResult`). The bundle goes into the enforcer's forensics
folder (`open_default`) or to a path the caller names (`open_for_peer`), which is created
only where that caller could create it and never over an existing file or a symlink.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from ... import __version__
from ...models import Container, iso_time
from ..processes import process_tree

if TYPE_CHECKING:
    from .capture import Evidence


class ForensicsError(Exception):
    """The bundle could not be written; `code` is a protocol error code."""

    def __init__(self, message: str, code: str = "failed") -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class BundleResult:
    path: str
    size: int
    sha256: str
    members: int
    files_archived: int = 0
    files_skipped: int = 0
    processes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "members": self.members,
                "files_archived": self.files_archived, "files_skipped": self.files_skipped,
                "processes": self.processes}


# -- writing --------------------------------------------------------------------------------------
def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=True, default=str) + "\n").encode()


def _summary(ev: Evidence) -> bytes:
    c = ev.container
    lines = [f"Stockade forensics bundle for container {json.dumps(c.name)} ({c.id})",
             f"app {json.dumps(c.app)}, service {json.dumps(c.service)}, image {json.dumps(c.image)}",
             f"captured {iso_time()} on {os.uname().nodename}; freezer {ev.freezer_state or 'n/a'}", "",
             "Process tree (host pid, command, sha256 of the binary):"]

    def walk(nodes: list[dict[str, Any]], depth: int) -> None:
        for n in nodes:
            argv = " ".join(n["argv"]) or f"[{n['comm']}]"
            lines.append(f"{'  ' * depth}{n['pid']}  {json.dumps(argv)[1:-1][:200]}  {n['exe_sha256'][:16]}")
            walk(n["children"], depth + 1)

    walk(process_tree(ev.processes), 1)
    lines += ["", f"Sockets: {len(ev.sockets)}; file changes: {len(ev.changes)} "
                  f"({len(ev.files)} archived); incidents: {len(ev.alerts)}"]
    lines += [f"note: {n}" for n in ev.notes]
    return ("\n".join(lines) + "\n").encode()


def build_members(ev: Evidence) -> list[tuple[str, bytes]]:
    members: list[tuple[str, bytes]] = [
        ("summary.txt", _summary(ev)),
        ("inspect.json", _json(ev.inspect)),
        ("processes.json", _json([p.to_dict() for p in ev.processes])),
        ("process_tree.json", _json(process_tree(ev.processes))),
        ("sockets.json", _json(ev.sockets)),
        ("changes.json", _json(ev.changes)),
        ("alerts.json", _json(ev.alerts)),
        ("audit.json", _json(ev.audit)),
        ("blocks.json", _json(ev.blocks)),
        ("logs.txt", ev.logs),
    ]
    if ev.profile is not None:
        members.append(("profile.json", _json(ev.profile)))
    members += ev.files
    return members


def write_bundle(fd: int, top: str, ev: Evidence, path: str) -> BundleResult:
    """Write the tar.gz to an open fd (closed here); manifest last, with every member's sha256."""
    members = build_members(ev)
    now = time.time()
    manifest: dict[str, Any] = {
        "format": "stockade-forensics/1", "stockade": __version__, "host": os.uname().nodename,
        "captured": iso_time(now), "container": ev.container.to_dict(), "freezer_state": ev.freezer_state,
        "notes": ev.notes,
        "members": [{"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                    for name, data in members],
    }
    members.append(("manifest.json", _json(manifest)))
    digest = hashlib.sha256()
    size = 0

    class _Hashing(io.RawIOBase):
        def __init__(self, raw: io.BufferedWriter) -> None:
            self.raw = raw

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            nonlocal size
            data = bytes(b)
            digest.update(data)
            size += len(data)
            self.raw.write(data)
            return len(data)

    with os.fdopen(fd, "wb") as raw:
        sink = _Hashing(raw)
        with tarfile.open(fileobj=sink, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for name, data in members:
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size = len(data)
                info.mtime = int(now)
                info.mode = 0o600
                info.type = tarfile.REGTYPE
                tar.addfile(info, io.BytesIO(data))
        raw.flush()
        os.fsync(raw.fileno())
    return BundleResult(path=path, size=size, sha256=digest.hexdigest(), members=len(members),
                        files_archived=len(ev.files), processes=len(ev.processes))


def bundle_name(c: Container, now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(now or time.time(), tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in c.name)[:64] or c.short_id
    return f"{safe}-{c.short_id}-{stamp}"


def open_default(directory: str, name: str) -> tuple[int, str]:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, name + ".tar.gz")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return fd, path


def open_for_peer(out: str, uid: int, gid: int, groups: Callable[[], set[int]]) -> tuple[int, str]:
    """Create `out` for the caller: never over an existing file or through a final symlink,
    and (for a caller other than root) only where that caller could create it, owned by them."""
    if not os.path.isabs(out):
        raise ForensicsError("out must be an absolute path", "bad_request")
    parent, base = os.path.split(os.path.normpath(out))
    if not base:
        raise ForensicsError("out must name a file", "bad_request")
    try:
        dirfd = os.open(parent or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise ForensicsError(f"cannot use folder {parent}: {e.strerror}", "bad_request") from None
    try:
        if uid != 0:
            st = os.fstat(dirfd)
            if st.st_uid == uid:
                ok = bool(st.st_mode & stat.S_IWUSR)
            elif st.st_gid in groups():
                ok = bool(st.st_mode & stat.S_IWGRP)
            else:
                ok = bool(st.st_mode & stat.S_IWOTH)
            if not ok:
                raise ForensicsError(f"user {uid} may not create files in {parent}", "forbidden")
        try:
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dirfd)
        except FileExistsError:
            raise ForensicsError(f"{out} exists; choose a new file name", "conflict") from None
        except OSError as e:
            raise ForensicsError(f"cannot create {out}: {e.strerror}", "failed") from None
        if uid != 0:
            os.fchown(fd, uid, gid)
        return fd, os.path.join(parent, base)
    finally:
        os.close(dirfd)
