"""Safe reads of a container's changed files, for the bundle.

Of a running (or frozen) container the files are read through /proc/<pid>/root and never
outside it: the parent directory is opened with openat2(RESOLVE_IN_ROOT), the last
component without following a symlink (a link planted as /tmp/x -> /etc/shadow is recorded
as a link, not read through). Of a stopped container each path is fetched with Docker's
archive API instead, in memory. Only regular files are kept, under caps, with safe member
names (`member_path`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import stat
import tarfile
from typing import Any

from ...models import Container, iso_time
from ...sensors.paths import open_in_root

MAX_FILE_BYTES = 8 << 20  # a changed file larger than this is hashed, not archived
MAX_TOTAL_BYTES = 64 << 20  # changed files archived per bundle
MAX_FILES = 2000  # changed files archived per bundle
MAX_HASH_BYTES = 1 << 30  # larger files are listed without a hash

DIFF_KINDS = {0: "changed", 1: "added", 2: "deleted"}


def _open_parent_in_root(root: str, path: str) -> int:
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
