"""Forensics bundles: one tar.gz that captures a (frozen) container for later analysis.

The caller freezes the container first (enforcement does), so processes, sockets and
files hold still while they are read. Members, all under one top folder:

  manifest.json      container, time, host, Stockade version, and the sha256 and size of
                     every other member (the bundle's own sha256 is returned to the caller)
  inspect.json       `docker inspect`
  processes.json     every process: pid/ppid, argv, exe and its sha256, cwd, uid, fds
  process_tree.json  the same as a tree
  sockets.json       TCP/UDP sockets of each network namespace (/proc/<pid>/net/tcp*),
                     with the pids and fds that own them
  changes.json       `docker diff`, each added/changed file with kind, size, sha256, and
                     whether its content is in the bundle
  files/<path>       the changed files themselves, up to the caps below (of a stopped
                     container: fetched through Docker's archive API instead)
  alerts.json        the container's recent incidents; audit.json the actions taken on it
  blocks.json, profile.json (when present), logs.txt (the log tail), summary.txt

Reading the container's files never leaves its root: the parent directory is opened with
openat2(RESOLVE_IN_ROOT) on /proc/<pid>/root, the last component without following a
symlink (a link planted as /tmp/x -> /etc/shadow is recorded as a link, not read through).
Only regular files are archived, as mode 0600 members with safe names.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import posixpath
import stat
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from . import __version__
from .enforce.processes import ProcessInfo, attach_socket_owners, process_info, process_tree, read_sockets
from .inventory.cgroups import cgroup_pids
from .models import Container, iso_time

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 8 << 20  # a changed file larger than this is hashed, not archived
MAX_TOTAL_BYTES = 64 << 20  # changed files archived per bundle
MAX_FILES = 2000  # changed files archived per bundle
MAX_HASH_BYTES = 1 << 30  # larger files are listed without a hash
LOG_TAIL_LINES = 2000

DIFF_KINDS = {0: "changed", 1: "added", 2: "deleted"}


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


@dataclass(slots=True)
class Evidence:
    """Everything gathered, before it is written."""

    container: Container
    inspect: dict[str, Any] = field(default_factory=dict)
    processes: list[ProcessInfo] = field(default_factory=list)
    sockets: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)  # member name, content
    alerts: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    logs: bytes = b""
    freezer_state: str = ""
    notes: list[str] = field(default_factory=list)


# -- reading the container ----------------------------------------------------------------------
def gather_processes(c: Container) -> tuple[list[ProcessInfo], list[dict[str, Any]]]:
    hashes: dict[tuple[int, int], str] = {}
    pids = cgroup_pids(c.cgroup_path) if c.cgroup_path else []
    infos = [process_info(pid, hashes) for pid in pids]
    sockets: list[dict[str, Any]] = []
    seen_ns: set[str] = set()
    for p in infos:
        if p.error or not p.netns or p.netns in seen_ns:
            continue
        seen_ns.add(p.netns)
        for s in read_sockets(p.pid):
            s["netns"] = p.netns
            sockets.append(s)
    attach_socket_owners(sockets, infos)
    return infos, sockets


def _open_parent_in_root(root: str, path: str) -> int:
    from .sensors.paths import open_in_root

    parent = posixpath.dirname(path) or "/"
    fd = open_in_root(root, parent)
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotADirectoryError(parent)
    return fd


def read_changed_file(root: str, path: str, budget: int) -> tuple[dict[str, Any], bytes | None]:
    """Facts about one changed path, and its content if it is a regular file within budget."""
    facts: dict[str, Any] = {"path": path}
    try:
        dirfd = _open_parent_in_root(root, path)
    except OSError as e:
        facts["error"] = f"cannot open its directory: {e.strerror or e}"
        return facts, None
    try:
        name = posixpath.basename(path)
        st = os.lstat(name, dir_fd=dirfd)
        facts.update(mode=oct(stat.S_IMODE(st.st_mode)), uid=st.st_uid, gid=st.st_gid, size=st.st_size,
                     mtime=iso_time(st.st_mtime))
        if stat.S_ISLNK(st.st_mode):
            facts["type"] = "symlink"
            facts["target"] = os.readlink(name, dir_fd=dirfd)
            return facts, None
        if stat.S_ISDIR(st.st_mode):
            facts["type"] = "directory"
            return facts, None
        if not stat.S_ISREG(st.st_mode):
            facts["type"] = "special"
            return facts, None
        facts["type"] = "file"
        if st.st_size > MAX_HASH_BYTES:
            facts["skipped"] = "larger than the hash cap"
            return facts, None
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            h = hashlib.sha256()
            keep = st.st_size <= min(MAX_FILE_BYTES, budget)
            content = bytearray()
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
                if keep:
                    content += chunk
                    if len(content) > MAX_FILE_BYTES:  # it grew while we read
                        keep = False
                        content = bytearray()
        finally:
            os.close(fd)
        facts["sha256"] = h.hexdigest()
        if not keep:
            facts["skipped"] = "over the size cap" if st.st_size > MAX_FILE_BYTES else "bundle size cap reached"
            return facts, None
        return facts, bytes(content)
    except OSError as e:
        facts["error"] = e.strerror or str(e)
        return facts, None
    finally:
        os.close(dirfd)


def member_path(container_path: str) -> str | None:
    """A safe tar member name for a container path (None if it cannot be one)."""
    norm = posixpath.normpath("/" + container_path).lstrip("/")
    parts = norm.split("/")
    if not norm or any(p in ("", ".", "..") for p in parts):
        return None
    # Plain ASCII without control characters: whoever lists or extracts the bundle sees one line each.
    safe = "/".join(json.dumps(p.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))[1:-1]
                    .replace("/", "_") for p in parts)
    return "files/" + safe


def gather_changes(c: Container, diff: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, bytes]], int]:
    root = f"/proc/{c.pid}/root" if c.pid else ""
    changes: list[dict[str, Any]] = []
    files: list[tuple[str, bytes]] = []
    budget = MAX_TOTAL_BYTES
    skipped = 0
    for item in diff:
        path = str(item.get("Path", ""))
        kind = DIFF_KINDS.get(int(item.get("Kind", -1)), "unknown")
        entry: dict[str, Any] = {"path": path, "kind": kind}
        if kind != "deleted" and root:
            facts, content = read_changed_file(root, path, budget)
            entry.update(facts)
            if content is not None:
                name = member_path(path)
                if name is None or len(files) >= MAX_FILES:
                    entry["skipped"] = "unsafe name" if name is None else "file count cap reached"
                else:
                    files.append((name, content))
                    budget -= len(content)
                    entry["member"] = name
            if entry.get("type") == "file" and "member" not in entry:
                skipped += 1
        changes.append(entry)
    return changes, files, skipped


def gather_changes_archived(api: Any, c: Container, diff: list[dict[str, Any]]) -> tuple[
        list[dict[str, Any]], list[tuple[str, bytes]], int]:
    """The same for a container that is not running (no /proc root): each changed path is
    fetched with Docker's archive API (`docker cp`), one tar per path, read in memory."""
    changes: list[dict[str, Any]] = []
    files: list[tuple[str, bytes]] = []
    budget = MAX_TOTAL_BYTES
    skipped = 0
    for item in diff:
        path = str(item.get("Path", ""))
        kind = DIFF_KINDS.get(int(item.get("Kind", -1)), "unknown")
        entry: dict[str, Any] = {"path": path, "kind": kind}
        changes.append(entry)
        if kind == "deleted":
            continue
        try:
            stream, info = api.get_archive(c.id, path)
            mode = int(info.get("mode", 0))
            entry.update(size=int(info.get("size", 0)), mode=oct(mode & 0o7777), target=info.get("linkTarget") or None)
            if mode & (1 << 31):  # Go's os.ModeDir
                entry["type"] = "directory"
                continue
            if mode & (1 << 27):  # os.ModeSymlink
                entry["type"] = "symlink"
                continue
            entry["type"] = "file"
            if entry["size"] > min(MAX_FILE_BYTES, budget) or len(files) >= MAX_FILES:
                entry["skipped"] = "over the size cap" if entry["size"] > MAX_FILE_BYTES else "bundle cap reached"
                skipped += 1
                continue
            raw = b"".join(stream)
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                member = next((m for m in tar.getmembers() if m.isreg()), None)
                data = tar.extractfile(member).read() if member is not None else None  # type: ignore[union-attr]
        except Exception as e:  # noqa: BLE001 - one path must not lose the bundle
            entry["error"] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            continue
        if data is None:
            continue
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        name = member_path(path)
        if name is None:
            entry["skipped"] = "unsafe name"
            skipped += 1
            continue
        files.append((name, data))
        budget -= len(data)
        entry["member"] = name
    return changes, files, skipped


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


class Forensics:
    """Gathers the evidence of one container and writes the bundle (enforcer side)."""

    def __init__(self, enforcer: Any) -> None:
        self.enforcer = enforcer

    async def capture(self, c: Container, *, out: str | None, uid: int, gid: int, groups: Callable[[], set[int]],
                      freezer_state: str, blocks: list[dict[str, Any]]) -> BundleResult:
        ev = Evidence(container=c, freezer_state=freezer_state, blocks=blocks)
        docker = self.enforcer.docker
        try:
            ev.inspect = await docker.inspect_container(c.id) or {}
        except Exception as e:  # noqa: BLE001 - the engine may be down; the rest still helps
            ev.notes.append(f"docker inspect failed: {e}")
        if c.state in ("running", "paused"):
            ev.processes, ev.sockets = await asyncio.to_thread(gather_processes, c)
        else:
            ev.notes.append(f"container is {c.state}: no processes or sockets")
        try:
            diff = await docker.call(lambda api: api.diff(c.id)) or []
        except Exception as e:  # noqa: BLE001
            diff = []
            ev.notes.append(f"docker diff failed: {e}")
        if c.state in ("running", "paused") and c.pid:
            ev.changes, ev.files, skipped = await asyncio.to_thread(gather_changes, c, diff)
        else:
            ev.changes, ev.files, skipped = await docker.call(lambda api: gather_changes_archived(api, c, diff))
        if skipped:
            ev.notes.append(f"{skipped} changed files listed with their hash but not archived (caps)")
        try:
            ev.logs = await docker.call(lambda api: api.logs(c.id, stdout=True, stderr=True, timestamps=True,
                                                              tail=LOG_TAIL_LINES))
        except Exception as e:  # noqa: BLE001
            ev.notes.append(f"docker logs failed: {e}")
        ev.alerts = await self._alerts(c)
        ev.audit = await self._audit(c)
        ev.profile = self._profile(c)
        name = bundle_name(c)
        if out:
            fd, path = await asyncio.to_thread(open_for_peer, out, uid, gid, groups)
        else:
            try:
                fd, path = await asyncio.to_thread(open_default, self.enforcer.settings.forensics_dir, name)
            except OSError as e:
                raise ForensicsError(f"cannot create the bundle in {self.enforcer.settings.forensics_dir}: "
                                     f"{e.strerror}") from None
        try:
            result = await asyncio.to_thread(write_bundle, fd, name, ev, path)
        except OSError as e:
            raise ForensicsError(f"writing {path} failed: {e.strerror or e}") from None
        result.files_skipped = skipped
        return result

    async def _alerts(self, c: Container) -> list[dict[str, Any]]:
        from .store.alerts import AlertQuery

        q = AlertQuery(container=c.id, limit=1000)
        book = self.enforcer.alerts
        try:
            if book is not None:
                return [a.to_dict() for a in await book.query(q)]
            return [inc.alert.to_dict() for inc in await self.enforcer.store.alerts.query(q)]
        except Exception as e:  # noqa: BLE001
            log.warning("forensics: alerts of %s: %s", c.name, e)
            return []

    async def _audit(self, c: Container) -> list[dict[str, Any]]:
        entries = await self.enforcer.store.audit.recent(limit=10_000)
        names = {c.name, c.id, c.short_id}
        return [e.to_dict() for e in entries if e.target in names or (len(e.target) >= 4 and c.id.startswith(e.target))]

    def _profile(self, c: Container) -> dict[str, Any] | None:
        book = self.enforcer.profiles
        att = book.attached.get(c.id) if book is not None and hasattr(book, "attached") else None
        if att is None:
            return None
        try:
            return book.profile_view(att)
        except Exception as e:  # noqa: BLE001
            log.debug("forensics: profile of %s: %s", c.name, e)
            return None
