"""Pins: the sensors' kernel objects kept in bpffs so that protect outlives the enforcer.

Layout, one folder per enforcer instance (`Settings.bpf_pin_dir`, by default
/sys/fs/bpf/stockade/<nftables table name>, so test enforcers never share one):

    maps-<ms>/<name>     the policy maps (watched, exec_allow, syscall_allow, config,
                         local_ips, syscalls_seen); bcc opens them by path at compile time
                         (BPF_TABLE_PINNED, common.h), or creates and pins them the first time.
                         A new folder only when a release changes a map's layout (bcc would
                         open a pinned map of another layout without a word: map_layout()).
    links/<generation>/<program>
                         one bpf_link per attached program; a pinned link keeps its program
                         attached after the process that made it is gone
    links/<generation>/tails/<array>
                         that generation's program arrays (tail calls): the kernel empties a
                         program array once no fd or pin holds it, so its programs' tail
                         calls would fall through once the enforcer is gone

Every program is attached through a link, never through bcc's legacy perf ioctl (which
ends with the process): tracepoint programs by BPF_LINK_CREATE on a tracepoint perf event
(the link holds the perf event), raw tracepoints by BPF_RAW_TRACEPOINT_OPEN. A restarted
enforcer attaches its new generation and writes its policy first, and only then unpins
the older generations (and maps folders), so at every moment at least one generation
decides kill-on-exec.

Plain bpf(2) and perf_event_open(2) through ctypes: bcc has no link API.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import struct
import time
from pathlib import Path
from typing import Any, Iterable

BPFFS = "/sys/fs/bpf"
BPF_FS_MAGIC = 0xCAFE4A11

_SYS_BPF = 321  # x86_64
_SYS_PERF_EVENT_OPEN = 298
_BPF_MAP_LOOKUP_ELEM = 1
_BPF_OBJ_PIN = 6
_BPF_OBJ_GET = 7
_BPF_OBJ_GET_INFO_BY_FD = 15
_BPF_RAW_TRACEPOINT_OPEN = 17
_BPF_LINK_CREATE = 28
_BPF_PERF_EVENT = 41  # enum bpf_attach_type
_PERF_TYPE_TRACEPOINT = 2
_PERF_SAMPLE_RAW = 1 << 10
_PERF_FLAG_FD_CLOEXEC = 1 << 3
_TRACEFS = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class PinError(Exception):
    """A bpf(2) call for pinning failed; the message is one line."""


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    rc = _libc.syscall(_SYS_BPF, cmd, attr, len(attr))
    if rc < 0:
        e = ctypes.get_errno()
        raise PinError(f"{what}: {os.strerror(e)}")
    return int(rc)


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(os.fsencode(path))
    attr = ctypes.create_string_buffer(struct.pack("=QII", ctypes.addressof(p), fd, 0), 32)
    _bpf(_BPF_OBJ_PIN, attr, f"pin {path}")


def obj_get(path: str) -> int:
    p = ctypes.create_string_buffer(os.fsencode(path))
    attr = ctypes.create_string_buffer(struct.pack("=QII", ctypes.addressof(p), 0, 0), 32)
    return _bpf(_BPF_OBJ_GET, attr, f"open {path}")


def link_ids(fd: int) -> tuple[int, int]:
    """(link id, program id) of a link fd."""
    info = ctypes.create_string_buffer(64)
    attr = ctypes.create_string_buffer(struct.pack("=IIQ", fd, len(info), ctypes.addressof(info)), 16)
    _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr, "link info")
    _type, link_id, prog_id = struct.unpack_from("=III", info.raw)
    return link_id, prog_id


def tail_call_ids(path: str) -> list[int]:
    """The program id in each slot of a pinned program array (0: an empty slot)."""
    fd = obj_get(path)
    try:
        _type, key_size, value_size, entries = map_layout(fd)
        ids = []
        for i in range(entries):
            key = ctypes.create_string_buffer(struct.pack("=I", i), key_size)
            value = ctypes.create_string_buffer(value_size)
            attr = ctypes.create_string_buffer(
                struct.pack("=IIQQQ", fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0), 32)
            if _libc.syscall(_SYS_BPF, _BPF_MAP_LOOKUP_ELEM, attr, len(attr)) < 0:
                ids.append(0)  # ENOENT: nothing in the slot
            else:
                ids.append(struct.unpack_from("=I", value.raw)[0])
        return ids
    finally:
        os.close(fd)


def map_layout(fd: int) -> tuple[int, int, int, int]:
    """(type, key size, value size, max entries) of a map fd."""
    info = ctypes.create_string_buffer(96)
    attr = ctypes.create_string_buffer(struct.pack("=IIQ", fd, len(info), ctypes.addressof(info)), 16)
    _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr, "map info")
    mtype, _id, key, value, entries = struct.unpack_from("=IIIII", info.raw)
    return mtype, key, value, entries


def _tracepoint_id(category: str, name: str) -> int:
    for base in _TRACEFS:
        try:
            return int(Path(f"{base}/{category}/{name}/id").read_text())
        except OSError:
            continue
    raise PinError(f"no tracepoint {category}:{name} in tracefs")


def attach_tracepoint_link(prog_fd: int, category: str, name: str) -> int:
    """A bpf_link of a TRACEPOINT program on category:name (the link holds the perf event)."""
    attr = bytearray(112)  # perf_event_attr, PERF_ATTR_SIZE_VER5
    struct.pack_into("=IIQQQ", attr, 0, _PERF_TYPE_TRACEPOINT, len(attr), _tracepoint_id(category, name), 1,
                     _PERF_SAMPLE_RAW)
    struct.pack_into("=I", attr, 48, 1)  # wakeup_events
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    # One event on CPU 0 is enough: a tracepoint runs its programs on every CPU.
    pfd = _libc.syscall(_SYS_PERF_EVENT_OPEN, buf, -1, 0, -1, _PERF_FLAG_FD_CLOEXEC)
    if pfd < 0:
        raise PinError(f"perf_event_open {category}:{name}: {os.strerror(ctypes.get_errno())}")
    try:
        attr2 = ctypes.create_string_buffer(struct.pack("=IIII", prog_fd, pfd, _BPF_PERF_EVENT, 0), 64)
        return _bpf(_BPF_LINK_CREATE, attr2, f"link {category}:{name}")
    finally:
        os.close(pfd)


def attach_raw_tracepoint_link(prog_fd: int, name: str) -> int:
    n = ctypes.create_string_buffer(name.encode())
    attr = ctypes.create_string_buffer(struct.pack("=QI", ctypes.addressof(n), prog_fd), 32)
    return _bpf(_BPF_RAW_TRACEPOINT_OPEN, attr, f"raw tracepoint {name}")


def bpffs_mounted(path: str = BPFFS) -> bool:
    """True when `path` is on a bpf filesystem (statfs f_type)."""
    buf = ctypes.create_string_buffer(128)  # struct statfs
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return False
    return struct.unpack_from("=q", buf.raw)[0] == BPF_FS_MAGIC


class PinDir:
    """One enforcer instance's folder in bpffs (see the module docstring)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.maps_dir = ""  # chosen by prepare()
        self.links_dir = os.path.join(root, "links")
        self.generation = ""  # this process's, once attached
        self.adopted: dict[str, Any] = {}  # what was pinned when this process started

    def usable(self) -> str:
        """'' when pins can be made here, else why not (one line)."""
        if not bpffs_mounted(BPFFS):
            return f"bpffs is not mounted at {BPFFS} (run make setup)"
        if not os.path.realpath(self.root).startswith(BPFFS + "/"):
            return f"{self.root} is not under {BPFFS}"
        return ""

    def prepare(self) -> None:
        """Create the folders; remember what a previous enforcer left pinned."""
        self.adopted = self.describe()
        folders = self._map_dirs()
        self.maps_dir = folders[-1] if folders else self._new_maps_dir()
        os.makedirs(self.maps_dir, exist_ok=True)
        os.makedirs(self.links_dir, exist_ok=True)

    def fresh_maps(self) -> None:
        """Pin this generation's maps in a new folder: the pinned ones have another layout."""
        self.maps_dir = self._new_maps_dir()
        os.makedirs(self.maps_dir)

    def _new_maps_dir(self) -> str:
        return os.path.join(self.root, f"maps-{time.time_ns() // 1_000_000}")

    def _map_dirs(self) -> list[str]:
        try:
            names = [n for n in os.listdir(self.root) if n.startswith("maps-")]
        except FileNotFoundError:
            return []
        return [os.path.join(self.root, n) for n in sorted(names, key=lambda n: int(n[5:]) if n[5:].isdigit() else 0)]

    def generations(self) -> list[str]:
        try:
            return sorted(os.listdir(self.links_dir))
        except FileNotFoundError:
            return []

    def pin_links(self, links: Iterable[tuple[str, int]], tails: Iterable[tuple[str, int]] = ()) -> str:
        """Pin (program name, link fd) pairs as a new generation; closes the fds. `tails`:
        (name, fd) of its program arrays, pinned beside them (the fds stay open)."""
        gen = f"{time.time_ns() // 1_000_000}-{os.getpid()}"
        folder = os.path.join(self.links_dir, gen)
        os.makedirs(folder)
        tails = list(tails)
        if tails:
            os.makedirs(os.path.join(folder, "tails"))
        for name, fd in tails:
            obj_pin(fd, os.path.join(folder, "tails", name))
        for name, fd in links:
            try:
                obj_pin(fd, os.path.join(folder, name))
            finally:
                os.close(fd)
        self.generation = gen
        return gen

    def retire_others(self) -> list[str]:
        """Unpin every generation but this process's: their programs detach (the kernel frees
        a link when its last pin and fd are gone). Call only once this generation is pinned."""
        gone = []
        for gen in self.generations():
            if gen != self.generation:
                shutil.rmtree(os.path.join(self.links_dir, gen), ignore_errors=True)
                gone.append(gen)
        for folder in self._map_dirs():
            if folder != self.maps_dir:  # an older layout's maps: only the retired programs used them
                shutil.rmtree(folder, ignore_errors=True)
        return gone

    def describe(self) -> dict[str, Any]:
        """What is pinned now: maps (names, since when), link generations (programs, since when)."""
        folders = self._map_dirs()
        maps = _entries(self.maps_dir or (folders[-1] if folders else ""))
        gens = []
        for gen in self.generations():
            progs = _entries(os.path.join(self.links_dir, gen))
            gens.append({"generation": gen, "programs": len(progs),
                         "since": min((t for t in progs.values()), default=0.0),
                         "pid": int(gen.rsplit("-", 1)[-1]) if "-" in gen else 0})
        return {"dir": self.root, "maps_dir": self.maps_dir or (folders[-1] if folders else ""),
                "maps": sorted(maps), "maps_since": min(maps.values(), default=0.0), "links": gens}

    def remove(self) -> list[str]:
        """Unpin everything of this instance (uninstall); returns what was removed."""
        removed = []
        for dirpath, _dirs, files in os.walk(self.root, topdown=False):
            for f in files:
                os.unlink(os.path.join(dirpath, f))
                removed.append(os.path.join(dirpath, f))
            os.rmdir(dirpath)
        parent = os.path.dirname(self.root.rstrip("/"))
        try:
            os.rmdir(parent)  # /sys/fs/bpf/stockade, when this was the last instance
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.ENOENT, errno.EEXIST):
                raise
        return removed


def _entries(folder: str) -> dict[str, float]:
    """name -> pin time (bpffs sets an inode's times when it is pinned)."""
    out: dict[str, float] = {}
    try:
        for e in os.scandir(folder):
            if e.is_file(follow_symlinks=False):
                out[e.name] = e.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        pass
    return out
