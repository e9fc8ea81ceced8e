"""Field offsets of the running kernel's structs, read from its own BTF.

The kernel headers on a host are often older than the kernel (PLATFORM.md: 6.1 headers, a
6.18 kernel), so a struct read by a compiled-in offset would read the wrong field. The
running kernel describes its own types in /sys/kernel/btf/vmlinux; this module reads the
few offsets the sensors need from there and hands them to the BPF text as constants.
Without BTF, or when a field is gone, the caller turns the feature that needs it off and
says so: an offset is never guessed.

The format (Documentation/bpf/btf.rst): a header, then type records, then the strings.
Only structs, unions and the records that must be stepped over are decoded."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F

# kind -> bytes that follow the 12-byte common record (vlen-dependent kinds apart)
_FIXED_TAIL = {1: 4, 3: 12, 14: 4, 17: 4}
_PER_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
_STRUCT, _UNION = 4, 5
_MODIFIERS = {8, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type_tag: follow .type


class BtfError(Exception):
    """The BTF is missing, malformed, or lacks a field; the message is one line."""


@dataclass(frozen=True)
class _Type:
    kind: int
    name: str
    ref: int  # size for structs/unions, the referred type for the others
    members: tuple[tuple[str, int, int], ...]  # (name, type id, bit offset)


class Btf:
    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BtfError("BTF: file too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != MAGIC:
            raise BtfError("BTF: bad magic (not little-endian BTF)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        types = data[hdr_len + type_off: hdr_len + type_off + type_len]
        self._strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self._types: list[_Type | None] = [None]  # type id 0 is void
        self._by_name: dict[str, list[int]] = {}
        pos = 0
        while pos < len(types):
            name_off, info, ref = struct.unpack_from("<III", types, pos)
            pos += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            members: tuple[tuple[str, int, int], ...] = ()
            if kind in (_STRUCT, _UNION):
                ms = []
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", types, pos)
                    pos += 12
                    ms.append((self._str(m_name), m_type, m_off & 0xFFFFFF if kflag else m_off))
                members = tuple(ms)
            elif kind in _PER_VLEN:
                pos += _PER_VLEN[kind] * vlen
            else:
                pos += _FIXED_TAIL.get(kind, 0)
            name = self._str(name_off)
            self._types.append(_Type(kind, name, ref, members))
            if kind in (_STRUCT, _UNION) and name:
                self._by_name.setdefault(name, []).append(len(self._types) - 1)

    @classmethod
    def of_running_kernel(cls, path: Path = VMLINUX) -> Btf:
        try:
            return cls(path.read_bytes())
        except OSError as e:
            raise BtfError(f"BTF: cannot read {path}: {e.strerror or e}") from None

    def _str(self, off: int) -> str:
        end = self._strings.find(b"\0", off)
        return self._strings[off:end if end >= 0 else None].decode(errors="replace")

    def _resolve(self, tid: int) -> int:
        for _ in range(32):
            t = self._types[tid]
            if t is None or t.kind not in _MODIFIERS:
                return tid
            tid = t.ref
        return tid

    def offset(self, struct_name: str, field: str) -> int:
        """Byte offset of `field` in `struct struct_name`, looking inside anonymous struct and
        union members as C does. Raises BtfError if the struct or field is not there."""
        ids = [i for i in self._by_name.get(struct_name, []) if self._types[i] and self._types[i].kind == _STRUCT]
        if not ids:
            raise BtfError(f"BTF: no struct {struct_name}")
        # A forward-declared or duplicated name: the definition with members wins.
        tid = max(ids, key=lambda i: len(self._types[i].members))  # type: ignore[union-attr]
        bits = self._find(tid, field, 0)
        if bits is None:
            raise BtfError(f"BTF: struct {struct_name} has no field {field}")
        if bits % 8:
            raise BtfError(f"BTF: {struct_name}.{field} is a bit field")
        return bits // 8

    def _find(self, tid: int, field: str, base: int) -> int | None:
        t = self._types[tid]
        if t is None:
            return None
        for name, m_type, m_off in t.members:
            if name == field:
                return base + m_off
            if not name:
                inner = self._types[self._resolve(m_type)]
                if inner is not None and inner.kind in (_STRUCT, _UNION):
                    found = self._find(self._resolve(m_type), field, base + m_off)
                    if found is not None:
                        return found
        return None


# The fields the rewrite guard reads (sensors/bpf/common.h inode helpers): the task's open
# files and executable, and the identity (device, inode number) of an open file.
INODE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("OFF_TASK_FILES", "task_struct", "files"),
    ("OFF_TASK_MM", "task_struct", "mm"),
    ("OFF_MM_EXE_FILE", "mm_struct", "exe_file"),
    ("OFF_FILES_FDT", "files_struct", "fdt"),
    ("OFF_FDT_MAX_FDS", "fdtable", "max_fds"),
    ("OFF_FDT_FD", "fdtable", "fd"),
    ("OFF_FILE_INODE", "file", "f_inode"),
    ("OFF_FILE_MODE", "file", "f_mode"),
    ("OFF_INODE_INO", "inode", "i_ino"),
    ("OFF_INODE_SB", "inode", "i_sb"),
    ("OFF_SB_DEV", "super_block", "s_dev"),
)


def inode_offsets(btf: Btf | None = None) -> dict[str, int]:
    """The offsets of INODE_FIELDS by define name; BtfError if any is missing."""
    btf = btf or Btf.of_running_kernel()
    return {define: btf.offset(s, f) for define, s, f in INODE_FIELDS}
