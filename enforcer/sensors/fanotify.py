"""fanotify(7) through ctypes: a group, inode marks, and its event records.

Why fanotify: a mark sits on an inode, so every way of reaching that inode (any path, a
symlinked directory, a hard link, a path relative to a dirfd or the cwd) raises the same
event, and each event carries an fd of the file the kernel opened (its dev/ino and its
path as the kernel resolved it). Verified on this machine's overlayfs (kernel 6.18):
inode marks on the overlay inode through /proc/<pid>/root fire for opens from inside the
container, survive a copy-up, and FAN_OPEN_PERM can deny; when the group's fd is closed
(the enforcer dies) a pending permission event is answered "allow" by the kernel.

Only what the inode watch needs: init, mark an inode by an O_PATH fd, read records,
answer permission events. No Python binding on PyPI is needed for that.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass

# fanotify_init flags
FAN_CLOEXEC = 0x01
FAN_NONBLOCK = 0x02
FAN_CLASS_CONTENT = 0x04  # the class that may receive permission events
# fanotify_mark flags
FAN_MARK_ADD = 0x01
FAN_MARK_REMOVE = 0x02
# event mask bits
FAN_MODIFY = 0x02
FAN_CLOSE_WRITE = 0x08
FAN_OPEN = 0x20
FAN_Q_OVERFLOW = 0x4000
FAN_OPEN_PERM = 0x10000
FAN_EVENT_ON_CHILD = 0x08000000
# answers
FAN_ALLOW = 0x01
FAN_DENY = 0x02

FAN_NOFD = -1
_META = struct.Struct("IBBHQii")  # struct fanotify_event_metadata (uapi, version 3)
_RESPONSE = struct.Struct("iI")  # struct fanotify_response
FANOTIFY_METADATA_VERSION = 3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]


@dataclass(slots=True)
class Record:
    mask: int
    fd: int  # FAN_NOFD for an overflow; else an fd the reader must close
    pid: int


def init() -> int:
    """A content-class group (so permission events are possible), non-blocking fd."""
    fd = _libc.fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK,
                             os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_init: {os.strerror(err)}")
    return int(fd)


AT_FDCWD = -100


def mark_fd(group: int, obj_fd: int, mask: int, flags: int = FAN_MARK_ADD) -> None:
    """Mark the inode `obj_fd` (an O_PATH fd) refers to (FAN_MARK_REMOVE: take those mask
    bits off). Through its /proc/self/fd magic link: the kernel follows it to the file the
    fd holds, no name is looked up again (a NULL pathname with an O_PATH dirfd is refused
    here with EBADF)."""
    if _libc.fanotify_mark(group, flags, mask, AT_FDCWD, f"/proc/self/fd/{obj_fd}".encode()) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_mark: {os.strerror(err)}")


def parse(buf: bytes) -> list[Record]:
    out: list[Record] = []
    off = 0
    while off + _META.size <= len(buf):
        length, version, _, _, mask, fd, pid = _META.unpack_from(buf, off)
        if version != FANOTIFY_METADATA_VERSION or length < _META.size:
            break  # an ABI we do not know: stop rather than misread
        out.append(Record(mask, fd, pid))
        off += length
    return out


def respond(group: int, fd: int, allow: bool) -> None:
    os.write(group, _RESPONSE.pack(fd, FAN_ALLOW if allow else FAN_DENY))
