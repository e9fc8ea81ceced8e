"""InodeWatch: sensitive files watched by their identity (inode), not by a path string.

Why: the eBPF file sensor sees the string a process passed to open(). `ln -s /etc /tmp/e;
cat /tmp/e/shadow`, a hard link to /etc/shadow, `cd /etc && cat shadow` all reach the same
inode through strings that do not name it. Here each watched container's sensitive files
(detect/rules.py) are resolved inside its root with openat2(RESOLVE_IN_ROOT) to an O_PATH
fd, and that inode gets a fanotify mark (sensors/fanotify.py): whatever path reaches it,
the kernel reports the open, with an fd of the opened file (its dev/ino; its path as the
kernel resolved it) and the pid. Directories of secrets (/root/.ssh/, /etc/sudoers.d/...)
are marked with FAN_EVENT_ON_CHILD.

What it does
- Re-resolves every running container's targets every `refresh` seconds and when the
  inventory changes (a replaced /etc/shadow is a new inode; a started container has none).
- A reader thread (never the event loop: a permission event blocks the opener until it is
  answered) attributes each event to a container by the pid's cgroup (a descendant cgroup
  counts as its container); host processes, this process included, are always allowed and
  never reported. A process gone before we look is charged to the container owning the mark.
- Protect mode (`protected(container_id)` true, re-read at each refresh): on the container's
  own root filesystem the mark asks FAN_OPEN_PERM instead of FAN_OPEN and the open is
  refused (EPERM); in other modes nothing waits for this process. Files bind-mounted from the host
  get notification marks only, so a host open never waits for us. If the enforcer dies the
  kernel answers pending permission events "allow": a dead enforcer never wedges a container.
- Hands an `InodeEvent` (a FileEvent, sensitive) to `deliver` (the detector's queue).
- Bounded: marks in all (`max_marks`) and per container, events waiting for the loop
  (`max_pending`). A kernel queue overflow (FAN_Q_OVERFLOW), a full loop hand-off or a mark
  budget exhausted is counted and raised as an `InodeEvent(lost=n)` for every watched
  container: we cannot know whose events were lost, so all are told (fail closed).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import posixpath
import select
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..detect import rules
from ..inventory.cgroups import cgroup_for_pid
from ..models import Container
from . import fanotify as fan
from .events import InodeEvent

log = logging.getLogger(__name__)

Deliver = Callable[[InodeEvent], bool]

# Directories whose every entry is a secret (rules.SENSITIVE_PREFIXES ending in "/").
_SECRET_DIRS = tuple(p.rstrip("/") for p in rules.SENSITIVE_PREFIXES if p.endswith("/"))
# Name prefixes inside a directory (/etc/ssh/ssh_host_*): the directory is listed.
_NAME_PREFIXES = tuple(p for p in rules.SENSITIVE_PREFIXES if not p.endswith("/"))
_HOME_DIRS = (".ssh", ".gnupg", ".aws", ".kube", ".docker")  # rules._HOME_SECRETS
MAX_LISTED = 64  # entries read of /home or /etc/ssh per container: a huge directory is cut short

_WRITE = fan.FAN_MODIFY | fan.FAN_CLOSE_WRITE
DEDUP_SECONDS = 1.0
LOST_ALERT_EVERY = 5.0


class WatchInventory(Protocol):
    @property
    def containers(self) -> dict[str, Container]: ...

    def subscribe(self, listener: Callable[[Any], Any]) -> None: ...

    def by_cgroup(self, cgroup_id: int) -> Container | None: ...


@dataclass(slots=True)
class Mark:
    path: str  # the name it is watched under inside the container
    kind: str  # "file" | "dir" (children watched) | "write" (writes only: /etc/passwd)
    perm: bool  # FAN_OPEN_PERM: its container is in protect mode and it is on the container's own root fs
    owners: set[str] = field(default_factory=set)  # container ids (a shared bind mount: several)


@dataclass(slots=True)
class Target:
    path: str
    kind: str


def targets(list_dir: Callable[[str], list[str]]) -> list[Target]:
    """Every path to resolve in one container: the sensitive list, directories of secrets,
    the files sensitive to writes, ssh host keys and home directories' secret folders."""
    out = [Target(p, "file") for p in sorted(rules.SENSITIVE_FILES)]
    out += [Target(d, "dir") for d in _SECRET_DIRS]
    out += [Target(p, "write") for p in sorted(rules.SENSITIVE_WRITE_FILES - rules.SENSITIVE_FILES)]
    for prefix in _NAME_PREFIXES:
        parent, name = posixpath.split(prefix)
        out += [Target(posixpath.join(parent, n), "file") for n in list_dir(parent) if n.startswith(name)]
    for user in list_dir("/home"):
        out += [Target(f"/home/{user}/{d}", "dir") for d in _HOME_DIRS]
    return out


class InodeWatch:
    def __init__(self, inventory: WatchInventory, deliver: Deliver, protected: Callable[[str], bool], *,
                 refresh: float = 2.0, max_marks: int = 8192, max_per_container: int = 256,
                 max_pending: int = 10_000) -> None:
        self.inventory = inventory
        self.deliver = deliver
        self.protected = protected
        self.refresh = refresh
        self.max_marks = max_marks
        self.max_per_container = max_per_container
        self.max_pending = max_pending
        self.error = ""
        self._group = -1
        self._marks: dict[tuple[int, int], Mark] = {}
        self._dirs: dict[str, dict[str, Mark]] = {}  # container id -> dir path -> mark
        self._dev_owner: dict[int, str] = {}  # st_dev of a container's root filesystem -> container id
        self._identity: dict[tuple[str, str], tuple[tuple[int, int], int]] = {}  # (cid, path) -> (dev, ino), nlink
        self._by_container: dict[str, set[tuple[int, int]]] = {}
        self._deny: frozenset[str] = frozenset()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending = 0
        self._post_lock = threading.Lock()
        self._recent: dict[tuple[str, int, str, int], float] = {}
        self._last_lost_alert = 0.0
        self._lost_unreported = 0
        self._self_pid = os.getpid()
        # counters (status)
        self.events = 0
        self.denied = 0
        self.host_opens = 0
        self.coalesced = 0
        self.overflows = 0
        self.lost = 0
        self.over_budget = 0
        self.errors = 0
        self.refreshed = 0.0

    # -- component ------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._group = fan.init()
        except OSError as e:
            self.error = str(e)
            log.error("inode watch: %s; sensitive files are watched by path only", e)
            return
        self.inventory.subscribe(lambda change: self._wake.set())
        self._thread = threading.Thread(target=self._read_loop, name="stockade-inode-watch", daemon=True)
        self._thread.start()
        self._task = asyncio.create_task(self._refresh_loop(), name="inode-watch-refresh")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        if self._group >= 0:
            os.close(self._group)  # the kernel allows whatever was still pending
            self._group = -1

    @property
    def running(self) -> bool:
        return self._group >= 0 and self._thread is not None and self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        return {"inode_watch": {
            "running": self.running, "error": self.error, "marks": len(self._marks),
            "max_marks": self.max_marks, "containers": len(self._by_container), "protected": len(self._deny),
            "marked": {cid: len(keys) for cid, keys in list(self._by_container.items())},
            "events": self.events, "denied": self.denied, "host_opens": self.host_opens,
            "coalesced": self.coalesced, "overflows": self.overflows, "lost": self.lost,
            "over_budget": self.over_budget, "errors": self.errors, "refreshed": self.refreshed}}

    # -- marking (a worker thread, every `refresh` s and on inventory changes) -------------
    async def _refresh_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                running = [c for c in self.inventory.containers.values() if c.pid and c.state == "running"]
                self._deny = frozenset(c.id for c in running if self.protected(c.id))
                await asyncio.to_thread(self._mark_all, running)
                self.refreshed = time.time()
            except Exception as e:  # noqa: BLE001 - keep watching what is marked
                self.errors += 1
                self.error = f"refresh: {e}"[:200]
                log.exception("inode watch: refresh failed")
            self._report_lost()
            try:
                await asyncio.wait_for(self._wake.wait(), self.refresh)
            except asyncio.TimeoutError:
                pass

    def _mark_all(self, running: list[Container]) -> None:
        live = {c.id for c in running}
        for cid in list(self._by_container):
            if cid not in live:  # gone: its overlay is unmounted and the kernel drops its marks
                for key in self._by_container.pop(cid):
                    m = self._marks.get(key)
                    if m is not None:
                        m.owners.discard(cid)
                        if not m.owners:
                            del self._marks[key]
                self._dirs.pop(cid, None)
                for dev in [d for d, owner in self._dev_owner.items() if owner == cid]:
                    del self._dev_owner[dev]
                for k in [k for k in self._identity if k[0] == cid]:
                    del self._identity[k]
        for c in running:
            try:
                self._mark_container(c)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ESRCH):  # it has just stopped
                    self.errors += 1
                    self.error = f"{c.name}: {e}"[:200]

    def _mark_container(self, c: Container) -> None:
        rootfd = os.open(f"/proc/{c.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            root_dev = os.fstat(rootfd).st_dev
            self._dev_owner[root_dev] = c.id
            mine = self._by_container.setdefault(c.id, set())
            dirs = self._dirs.setdefault(c.id, {})
            resolved: set[str] = set()
            for t in targets(lambda d: _list_in_root(rootfd, d)):
                fd = _open_path_in_root(rootfd, t.path)
                if fd < 0:
                    continue
                resolved.add(t.path)
                try:
                    st = os.fstat(fd)
                    kind, is_dir = t.kind, stat.S_ISDIR(st.st_mode)
                    if (kind == "dir") != is_dir or not (is_dir or stat.S_ISREG(st.st_mode)):
                        continue  # /dev/null masking /proc/kcore, sockets: not for this watch
                    key = (st.st_dev, st.st_ino)
                    self._check_identity(c.id, t.path, key, st.st_nlink if not is_dir else 1)
                    # Permission events only where a denial is due: each one holds the
                    # opener until this process answers, which costs it a thread wake-up.
                    perm = st.st_dev == root_dev and kind != "write" and c.id in self._deny
                    m = self._marks.get(key)
                    if m is not None and c.id in m.owners and m.perm == perm:
                        continue
                    if m is None and (len(self._marks) >= self.max_marks or len(mine) >= self.max_per_container):
                        self.over_budget += 1
                        self._lost_unreported += 1  # told as lost: a file we could not watch
                        continue
                    if m is not None and m.perm != perm:  # the mode changed: swap the open bit
                        fan.mark_fd(self._group, fd, fan.FAN_OPEN if perm else fan.FAN_OPEN_PERM,
                                    fan.FAN_MARK_REMOVE)
                    fan.mark_fd(self._group, fd, _mask(kind, perm))
                    if m is None:
                        m = self._marks[key] = Mark(t.path, kind, perm)
                    m.perm = perm
                    m.owners.add(c.id)
                    mine.add(key)
                    if kind == "dir":
                        dirs[t.path] = m
                finally:
                    os.close(fd)
            for gone in [k for k in self._identity if k[0] == c.id and k[1] not in resolved]:
                # Moved away or removed, by whatever path: a sensitive write too.
                key, _nlink = self._identity.pop(gone)
                self._post(InodeEvent(time=time.time(), container_id=c.id, op="unlink", path=gone[1],
                                      sensitive=True, dev=key[0], ino=key[1], opened_as="no longer there"))
        finally:
            os.close(rootfd)

    def _check_identity(self, cid: str, path: str, key: tuple[int, int], nlink: int) -> None:
        """What no open shows: the name now reaches another inode (replaced: mv onto it,
        unlink and create), or the inode got a second name (a hard link made by any path)."""
        seen = self._identity.get((cid, path))
        self._identity[(cid, path)] = (key, nlink)
        if seen is None:
            if nlink > 1:  # linked before we first looked
                self._post(InodeEvent(time=time.time(), container_id=cid, op="link", path=path, sensitive=True,
                                      dev=key[0], ino=key[1], opened_as=f"{nlink} links"))
            return
        (old_key, old_nlink) = seen
        if old_key != key:
            self._post(InodeEvent(time=time.time(), container_id=cid, op="replace", path=path, sensitive=True,
                                  dev=key[0], ino=key[1], opened_as=f"inode {old_key[1]} -> {key[1]}"))
        elif nlink > old_nlink:
            self._post(InodeEvent(time=time.time(), container_id=cid, op="link", path=path, sensitive=True,
                                  dev=key[0], ino=key[1], opened_as=f"{nlink} links"))

    # -- events (the reader thread) ------------------------------------------------------
    def _read_loop(self) -> None:
        group = self._group
        poller = select.poll()
        poller.register(group, select.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(500):
                    continue
                try:
                    buf = os.read(group, 64 * 1024)
                except BlockingIOError:
                    continue
                for rec in fan.parse(buf):
                    self._handle(rec)
        except Exception as e:  # noqa: BLE001
            self.error = f"reader: {e}"[:200]
            log.exception("inode watch: reader stopped")
            # Nobody would answer permission events any more: close the group, so the
            # kernel allows them instead of leaving containers blocked in open().
            if self._group >= 0:
                os.close(self._group)
                self._group = -1

    def _handle(self, rec: fan.Record) -> None:
        if rec.mask & fan.FAN_Q_OVERFLOW or rec.fd == fan.FAN_NOFD:
            self.overflows += 1
            self._lost_unreported += 1
            return
        perm = bool(rec.mask & fan.FAN_OPEN_PERM)
        allow = True
        mark: Mark | None = None
        cid: str | None = None
        comm = ""
        try:
            st = os.fstat(rec.fd)
            mark = self._marks.get((st.st_dev, st.st_ino))
            opened_as = _fd_path(rec.fd)
            cid, path = self._attribute(rec.pid, mark, opened_as, st.st_dev)
            if cid is None:
                self.host_opens += 1
            else:
                allow = not (perm and cid in self._deny)
                comm = _comm(rec.pid)  # while a permission event still holds the opener
        except Exception:  # noqa: BLE001 - answer first, whatever happened
            self.errors += 1
            allow = not (perm and mark is not None and mark.owners & self._deny)
            cid = None
        finally:
            if perm:
                try:
                    fan.respond(self._group, rec.fd, allow)
                except OSError:
                    self.errors += 1
            os.close(rec.fd)
        if cid is None:
            return
        if not allow:
            self.denied += 1
        op = "write" if rec.mask & _WRITE else "read"
        if mark is not None and mark.kind == "write" and op == "read":
            return  # /etc/passwd is read by everyone: only its writes matter
        self._post(InodeEvent(
            time=time.time(), pid=rec.pid, tid=rec.pid, comm=comm, container_id=cid, op=op,
            path=path, sensitive=True, dev=st.st_dev, ino=st.st_ino, opened_as=opened_as, denied=not allow))

    def _attribute(self, pid: int, mark: Mark | None, opened_as: str, dev: int) -> tuple[str | None, str]:
        """(container id or None for the host, the path to report)."""
        if pid == self._self_pid:
            return None, ""
        # An exiting process (its root already released) may read as the root cgroup: as gone.
        cg = cgroup_for_pid(pid) if _alive(pid) else None
        cid: str | None = None
        if cg is not None:
            c = self.inventory.by_cgroup(cg.cgroup_id)
            if c is None:  # a descendant cgroup is still its container
                c = next((x for x in list(self.inventory.containers.values())
                          if x.cgroup_path and cg.path.startswith(x.cgroup_path + "/")), None)
            if c is None:
                return None, ""
            cid = c.id
        if mark is not None:
            if cid is None:  # it exited before we looked: charge the container that owns the file
                cid = next(iter(mark.owners), None)
            return cid, mark.path
        # A child of a watched directory: the kernel's path names it.
        path = opened_as.removesuffix(" (deleted)")
        if cid is None:  # gone: the filesystem it is on says whose root it is
            cid = self._dev_owner.get(dev)
        if cid is None:  # a bind-mounted directory: only if a single container watches it
            parent = posixpath.dirname(path)
            owners = [k for k, dirs in list(self._dirs.items()) if parent in dirs]
            cid = owners[0] if len(owners) == 1 else None
        return cid, path

    def _post(self, ev: InodeEvent) -> None:
        with self._post_lock:  # the reader thread and the refresh worker both post
            self._post_locked(ev)

    def _post_locked(self, ev: InodeEvent) -> None:
        now = time.monotonic()
        key = (ev.container_id, ev.ino, ev.op, ev.pid)
        if now - self._recent.get(key, -1e9) < DEDUP_SECONDS:  # denials too: `denied` counts them all
            self.coalesced += 1
            return
        if len(self._recent) > 10_000:
            self._recent.clear()
        self._recent[key] = now
        if self._pending >= self.max_pending or self._loop is None:
            self.lost += 1
            self._lost_unreported += 1
            return
        self._pending += 1
        try:
            self._loop.call_soon_threadsafe(self._emit, ev)
        except RuntimeError:
            self._pending -= 1  # the loop has closed (the lock is held: no re-entry)

    # -- on the loop --------------------------------------------------------------------
    def _emit(self, ev: InodeEvent) -> None:
        with self._post_lock:
            self._pending -= 1
        self.events += 1
        if not self.deliver(ev):
            self.lost += 1
            self._lost_unreported += 1
        self._report_lost()

    def _report_lost(self) -> None:
        now = time.monotonic()
        if not self._lost_unreported or now - self._last_lost_alert < LOST_ALERT_EVERY:
            return
        with self._post_lock:
            n, self._lost_unreported = self._lost_unreported, 0
        self._last_lost_alert = now
        for cid in list(self._by_container):
            self.deliver(InodeEvent(time=time.time(), container_id=cid, op="lost", lost=n, sensitive=True))


def _mask(kind: str, perm: bool) -> int:
    if kind == "write":
        return _WRITE
    opened = fan.FAN_OPEN_PERM if perm else fan.FAN_OPEN
    mask = opened | fan.FAN_MODIFY | fan.FAN_CLOSE_WRITE
    return mask | fan.FAN_EVENT_ON_CHILD if kind == "dir" else mask


# openat2(2): resolve inside the container's root (sensors/paths.py does the same for reads).
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _open_path_in_root(rootfd: int, path: str, flags: int = os.O_PATH | os.O_CLOEXEC) -> int:
    """An fd of `path` resolved inside the root, symlinks followed as the container would;
    -1 when it is not there. O_PATH: no open event of our own, nothing read."""
    how = _OpenHow(flags=flags, mode=0, resolve=_RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, rootfd, path.encode("utf-8", "surrogateescape"), ctypes.byref(how),
                       ctypes.sizeof(how))
    return int(fd) if fd >= 0 else -1


def _list_in_root(rootfd: int, path: str) -> list[str]:
    fd = _open_path_in_root(rootfd, path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        return []
    try:
        names: list[str] = []
        with os.scandir(fd) as it:
            for entry in it:
                names.append(entry.name)
                if len(names) >= MAX_LISTED:
                    break
        return names
    finally:
        os.close(fd)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.stat(f"/proc/{pid}/root")
        return True
    except OSError:
        return False


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
