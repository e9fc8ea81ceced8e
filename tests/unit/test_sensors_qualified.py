"""Calls judged by their arguments (clone namespace flags, packet and raw sockets), io_uring
as dangerous, and the watched-cgroup levels the kernel walks for nested cgroups: the
user-space half (layout, decoding, kernel-map values, the detector's rule) without a kernel."""

from __future__ import annotations

import ctypes as ct

import pytest

from enforcer.detect import rules
from enforcer.enforce.exports import profile_syscalls
from enforcer.profiles.model import Profile, syscall_entry
from enforcer.sensors import layout as L
from enforcer.sensors.decode import SYSCALL_NAMES, Decoder, qualifier_args
from enforcer.sensors.events import SyscallEvent
from enforcer.sensors.kernel_maps import KernelMaps, _bits, cgroup_level
from enforcer.models import Container


def _record(nr: int, flags: int = 0, arg0: int = 0, arg1: int = 0, ret: int = 0) -> ct.Array:
    rec = L.SyscallRec()
    rec.h.type = L.EV_SYSCALL
    rec.h.flags = flags
    rec.h.cgroup = 77
    rec.h.pid = 1234
    rec.h.comm = b"redteam"
    rec.nr, rec.ret, rec.arg0, rec.arg1 = nr, ret, arg0, arg1
    return ct.create_string_buffer(bytes(rec), ct.sizeof(rec))


def _decode(buf: ct.Array) -> SyscallEvent:
    d = Decoder(hasher=None, container_root_pid=lambda cg: 0).decode(ct.addressof(buf), len(buf.raw))  # type: ignore[arg-type]
    assert d is not None and isinstance(d.event, SyscallEvent)
    return d.event


def test_qualified_numbers_follow_the_kernel_bit_order():
    # bpf/syscall.c qualifiers(): bits 0-7 namespace flags in this order, 8 packet, 9 raw.
    assert L.QUALIFIED[512] == "clone:newns" and L.QUALIFIED[516] == "clone:newuser"
    assert L.QUALIFIED[519] == "clone:newtime"
    assert L.QUALIFIED[520] == "socket:packet" and L.QUALIFIED[521] == "socket:raw"
    assert all(L.NR_SYSCALLS <= nr < L.NR_SYSCALL_BITS for nr in L.QUALIFIED)
    assert ct.sizeof(L.SyscallBits) * 8 == L.NR_SYSCALL_BITS and L.NR_SYSCALL_BITS & (L.NR_SYSCALL_BITS - 1) == 0


def test_a_killed_clone_newuser_record_decodes_with_its_flags():
    ev = _decode(_record(516, L.F_DANGEROUS | L.F_KILLED, arg0=0x10000011, ret=-4))
    assert (ev.nr, ev.name, ev.dangerous, ev.killed, ev.ret) == (516, "clone:newuser", True, True, -4)
    assert ev.args == {"flags": "0x10000011"} and ev.cgroup_id == 77 and ev.comm == "redteam"


def test_socket_qualifiers_name_the_family_and_type():
    assert _decode(_record(520, L.F_DANGEROUS, arg0=17, arg1=3)).args == {"family": "AF_PACKET", "type": "0x3"}
    assert _decode(_record(521, L.F_DANGEROUS, arg0=10, arg1=0x80003)).args == {"family": "AF_INET6",
                                                                                "type": "0x80003"}
    # A plain syscall carries no qualifier text, whatever its argument fields say.
    plain = _decode(_record(41, L.F_FIRST, arg0=2, arg1=1))
    assert plain.name == "socket" and plain.args == {} and not plain.killed
    assert qualifier_args(999, L.SyscallRec()) == {}


def test_io_uring_and_qualified_calls_are_dangerous_in_the_kernel_and_the_rules():
    for name, nr in (("io_uring_setup", 425), ("io_uring_enter", 426), ("io_uring_register", 427)):
        assert L.DANGEROUS_SYSCALLS[name] == nr and name in rules.DANGEROUS_SYSCALLS
        assert rules.X86_64_NAMES[nr] == name and SYSCALL_NAMES[nr] == name
    for nr, name in L.QUALIFIED.items():
        assert name in rules.DANGEROUS_SYSCALLS and rules.X86_64_NAMES[nr] == name and SYSCALL_NAMES[nr] == name
    assert "clone" not in rules.DANGEROUS_SYSCALLS and "socket" not in rules.DANGEROUS_SYSCALLS


def test_qualified_numbers_reach_the_kernel_allow_list_and_seccomp_sees_the_base_call():
    maps = KernelMaps(own_cgroup_id=0)
    maps.allow_syscalls(5, [41, 516, 520, 5000])
    assert maps._syscall_allow[5] == {41, 516, 520}  # beyond the bitmap: dropped
    bits = _bits({516})
    assert bits.w[516 // 64] == 1 << (516 % 64)
    p = Profile(1, "a", "s", "d")
    p.add(syscall_entry(516, "clone:newuser"))
    p.add(syscall_entry(41, "socket"))
    assert p.allows_syscall(516, "clone:newuser") and not p.allows_syscall(520, "socket:packet")
    assert profile_syscalls(p) == {"clone", "socket"}


@pytest.mark.parametrize("path,mount,level", [
    ("/sys/fs/cgroup/unified/docker/abc", "/sys/fs/cgroup/unified", 2),
    ("/sys/fs/cgroup/system.slice/docker-abc.scope", "/sys/fs/cgroup", 2),
    ("/sys/fs/cgroup/docker/abc", "/sys/fs/cgroup", 2),
    ("/sys/fs/cgroup/kubepods/burstable/pod1/abc", "/sys/fs/cgroup", 4),
    ("/sys/fs/cgroup", "/sys/fs/cgroup", 0),
    ("/elsewhere/x", "/sys/fs/cgroup", 0),
    ("", "/sys/fs/cgroup", 0),
    ("/sys/fs/cgroup/" + "/".join("d" * 12), "/sys/fs/cgroup", 12),
])
def test_cgroup_level(path, mount, level):
    assert cgroup_level(path, mount) == level


def test_watch_levels_follow_the_watched_containers(monkeypatch):
    monkeypatch.setattr("enforcer.sensors.kernel_maps.cgroup2_mount", lambda: "/sys/fs/cgroup")
    maps = KernelMaps(own_cgroup_id=0)
    a = Container(id="a" * 64, name="a", app="a", service="a", image="i", state="running", cgroup_id=10, cgroup_path="/sys/fs/cgroup/docker/a")
    b = Container(id="b" * 64, name="b", app="b", service="b", image="i", state="running", cgroup_id=11,
                  cgroup_path="/sys/fs/cgroup/kubepods/burstable/pod1/b")
    maps.sync_container(a)
    maps.sync_container(b)
    assert maps.watch_levels == 2 | (4 << 8)  # one level per byte, lowest first
    maps._unwatch(11)
    assert maps.watch_levels == 2
    maps._unwatch(10)
    assert maps.watch_levels == 0  # nothing watched: the kernel does not walk at all
