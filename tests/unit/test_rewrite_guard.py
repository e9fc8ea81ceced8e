"""The rewrite guard's user-space parts: kernel struct offsets from the running kernel's
BTF (sensors/btf.py) and the sweeps of stale marks (sensors/rewrite_marks.py). The guard
itself, in the kernel, is tested against real containers in
tests/integration/test_redteam_rewrite.py."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from enforcer.sensors.btf import INODE_FIELDS, Btf, BtfError, inode_offsets
from enforcer.sensors.exec_identity import identity, plain_path
from enforcer.sensors.rewrite_marks import kernel_dev, process_start_monotonic_ns, stale

VMLINUX = Path("/sys/kernel/btf/vmlinux")


def _btf(types: bytes, strings: bytes) -> bytes:
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def _struct(name_off: int, size: int, members: list[tuple[int, int, int]]) -> bytes:
    out = struct.pack("<III", name_off, (4 << 24) | len(members), size)
    return out + b"".join(struct.pack("<III", *m) for m in members)


def test_a_field_inside_an_anonymous_member_is_found_at_its_whole_offset():
    # strings: 0 "", 1 "outer", 7 "a", 9 "deep"
    strings = b"\0outer\0a\0deep\0"
    int_type = struct.pack("<III", 0, 1 << 24, 8) + struct.pack("<I", 64)  # id 1: an 8-byte int
    inner = _struct(0, 16, [(9, 1, 64)])  # id 2: anonymous { long deep at byte 8 }
    outer = _struct(1, 32, [(7, 1, 0), (0, 2, 128)])  # id 3: struct outer { a; anonymous at byte 16 }
    btf = Btf(_btf(int_type + inner + outer, strings))
    assert btf.offset("outer", "a") == 0
    assert btf.offset("outer", "deep") == 24
    with pytest.raises(BtfError, match="no field missing"):
        btf.offset("outer", "missing")
    with pytest.raises(BtfError, match="no struct nothere"):
        btf.offset("nothere", "a")


def test_bad_btf_is_one_line_not_a_guess():
    with pytest.raises(BtfError, match="bad magic"):
        Btf(b"\0" * 64)
    with pytest.raises(BtfError, match="too short"):
        Btf(b"\x9f\xeb")
    with pytest.raises(BtfError, match="cannot read"):
        Btf.of_running_kernel(Path("/nonexistent/vmlinux"))


@pytest.mark.skipif(not VMLINUX.exists(), reason="this kernel has no BTF")
def test_the_running_kernel_has_every_field_the_guard_reads():
    offsets = inode_offsets()
    assert set(offsets) == {d for d, _s, _f in INODE_FIELDS}
    assert all(isinstance(v, int) and 0 <= v < 16384 for v in offsets.values())
    assert offsets["OFF_TASK_MM"] != offsets["OFF_TASK_FILES"]


def test_a_stat_device_becomes_the_kernels_dev_t():
    assert kernel_dev(os.makedev(0, 52)) == 52
    assert kernel_dev(os.makedev(254, 1)) == (254 << 20) | 1


def test_only_marks_on_that_device_and_older_than_the_cutoff_are_stale():
    marks = [(52, 10, 100), (52, 11, 300), (53, 10, 100)]
    assert stale(marks, 52, 200) == [(52, 10)]
    assert stale(marks, 52, 1000) == [(52, 10), (52, 11)]
    assert stale(marks, 99, 1000) == []


def test_a_process_start_time_is_on_the_clock_the_kernel_marks_with():
    started = process_start_monotonic_ns(os.getpid())
    assert started is not None and started <= time.monotonic_ns()
    assert process_start_monotonic_ns(2 ** 22 + 12345) is None


def test_an_allow_list_key_names_the_file_of_its_path():
    assert plain_path("/bin/busybox:ls") == "/bin/busybox"
    assert plain_path("/usr/bin/node") == "/usr/bin/node"
    for key in ("./run", "/proc/self/exe:sh", "/dev/fd/3", "node"):
        assert plain_path(key) is None, key


def test_the_identity_of_a_path_is_the_file_it_resolves_to_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF")
    (root / "bin" / "sh").symlink_to("/bin/busybox")  # absolute: resolved inside the root
    st = os.stat(root / "bin" / "busybox")
    want = (kernel_dev(st.st_dev), st.st_ino)
    assert identity(str(root), "/bin/busybox") == want
    assert identity(str(root), "/bin/sh") == want
    assert identity(str(root), "/bin/missing") is None
    (root / "bin" / "escape").symlink_to("/../../../etc/passwd")  # never leaves the root
    assert identity(str(root), "/bin/escape") is None


def test_a_scripts_identity_is_its_interpreters_as_the_kernel_runs_it(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "run.sh").write_text("#!/bin/sh -e\necho hi\n")
    (root / "nested").write_text("#!/run.sh\n")
    (root / "loop").write_text("#!/loop\n")
    st = os.stat(root / "bin" / "busybox")
    want = (kernel_dev(st.st_dev), st.st_ino)
    assert identity(str(root), "/run.sh") == want
    assert identity(str(root), "/nested") == want
    assert identity(str(root), "/loop") is None  # deeper than the kernel follows
