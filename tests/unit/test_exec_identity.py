"""Exec identity: a multi-call binary is keyed by its applet (basename of argv[0]), the same
way in user space (profiles/model.py) as in the kernel (bpf/process.c, mirrored here
byte for byte), multi-call binaries are recognised by content (sensors/multicall.py), and
the profile tells the kernel which exec paths to key by applet."""

from __future__ import annotations

import os
import sys

import pytest

from enforcer.profiles.kernel import KernelMapHooks, RecordingKernelHooks
from enforcer.profiles.model import APPLET_LEN, Profile, applet_of, exec_identity, process_entry
from enforcer.sensors.kernel_maps import KernelMaps
from enforcer.sensors.multicall import MIN_KNOWN_NAMES, MultiCallScan, has_applet_table, is_multicall
from enforcer.sensors.paths import FNV_OFFSET, FNV_PRIME, MASK64, path_hash


def kernel_key(path: str, argv0: bytes | None, multicall: bool) -> int:
    """What bpf/process.c computes (applet_hash), written out again from the C."""
    h = path_hash(path)
    if not (multicall or path == "/proc/self/exe"):
        return h
    colon = ((h ^ ord(":")) * FNV_PRIME) & MASK64
    if not argv0 or len(argv0) >= APPLET_LEN - 1:
        return colon
    raw = argv0
    name, base = colon, FNV_OFFSET
    for c in raw:
        name = colon if c == ord("/") else ((name ^ c) * FNV_PRIME) & MASK64
        base = FNV_OFFSET if c == ord("/") else ((base ^ c) * FNV_PRIME) & MASK64
    path_base = FNV_OFFSET
    for c in path.encode()[:255]:
        path_base = FNV_OFFSET if c == ord("/") else ((path_base ^ c) * FNV_PRIME) & MASK64
    if name == colon:
        return colon
    return h if base == path_base else name


@pytest.mark.parametrize("argv0", ["nc", "/usr/bin/nc", "sh", "/bin/sh", "-sh", "exe", "s", "x" * 45, "x" * 46,
                                   "x" * 46 + "/nc", "/" * 44 + "sh/nc", "/" * 45 + "sh", "./x/y/wget", "a" * 80,
                                   "d/" + "n" * 60, "/bin/", "", "ünï"])
@pytest.mark.parametrize("path,multicall", [("/bin/sh", True), ("/bin/sh", False), ("/proc/self/exe", False)])
def test_user_space_keys_an_exec_as_the_kernel_does(path, multicall, argv0):
    identity = exec_identity(path, [argv0] if argv0 else [], multicall)
    assert path_hash(identity) == kernel_key(path, argv0.encode(), multicall), identity


def test_the_applet_is_the_basename_of_argv0_and_nothing_else():
    assert exec_identity("/bin/sh", ["nc", "-l", "-p", "4445"], multicall=True) == "/bin/sh:nc"
    assert exec_identity("/bin/sh", ["/usr/bin/nc"], multicall=True) == "/bin/sh:nc"
    assert exec_identity("/bin/sh", ["sh", "-c", "x"], multicall=True) == "/bin/sh"  # its own name
    assert exec_identity("/bin/sh", ["/bin/sh"], multicall=True) == "/bin/sh"
    assert exec_identity("/bin/sh", ["-sh"], multicall=True) == "/bin/sh:-sh"  # a login shell is not sh
    assert exec_identity("/bin/sh", ["nc"], multicall=False) == "/bin/sh"  # not multi-call: the path decides
    # No applet both sides can name: "PATH:", never the plain path (which allows sh).
    assert exec_identity("/bin/sh", [], multicall=True) == "/bin/sh:"
    assert exec_identity("/bin/sh", ["dir/"], multicall=True) == "/bin/sh:"
    assert exec_identity("/bin/sh", ["x" * 46 + "/nc"], multicall=True) == "/bin/sh:"  # basename past the read
    assert exec_identity("/bin/sh", ["/" * 44 + "sh/nc"], multicall=True) == "/bin/sh:"
    assert exec_identity("/bin/sh", ["x" * 45], multicall=True) == "/bin/sh:" + "x" * 45  # read whole
    assert exec_identity("/proc/self/exe", ["/bin/wget"]) == "/proc/self/exe:wget"
    assert applet_of(["x" * 100]) == ""


def _table(names: list[bytes]) -> bytes:
    return b"\x7fELF" + os.urandom(5000) + b"\x00" + b"\x00".join(names) + b"\x00" + os.urandom(5000)


def test_a_binary_with_an_applet_table_is_multi_call_without_any_banner():
    applets = [b"[", b"[[", b"acpid", b"arp", b"ash", b"awk", b"base64", b"basename", b"cat", b"chmod", b"chown",
               b"cp", b"cut", b"date", b"dd", b"df", b"echo", b"env", b"grep", b"head", b"id", b"ip", b"kill",
               b"ln", b"ls", b"mkdir", b"mount", b"mv", b"nc", b"ping", b"ps", b"rm", b"sed", b"sh", b"sleep",
               b"tail", b"tar", b"wget", b"zcat"]
    data = _table(applets)
    assert is_multicall(data) and has_applet_table(data)
    # Split across two reads at any point: still found.
    for cut in (5003, 5010, 5100, len(data) - 5010):
        scan = MultiCallScan()
        scan.update(data[:cut])
        scan.update(data[cut:])
        assert scan.found, cut
    # A few command names in a row (a shell's builtins, a usage text) are not a table.
    assert not is_multicall(_table(applets[:MIN_KNOWN_NAMES // 2]))
    assert not is_multicall(b"usage: cat ls mkdir " * 100)


def test_banners_and_real_binaries():
    assert is_multicall(b"xx\x00BusyBox v1.36.1 (2023) multi-call binary.\x00")
    assert is_multicall(b"\x00Toybox 0.8.9 multicall binary\x00")
    if os.path.exists("/bin/busybox"):
        with open("/bin/busybox", "rb") as f:
            assert is_multicall(f.read())
    with open(sys.executable, "rb") as f:  # python is not one
        scan = MultiCallScan()
        while chunk := f.read(1 << 20):
            scan.update(chunk)
        assert not scan.found


def test_the_profile_lists_multi_call_paths_for_the_kernel_and_forgets_them_on_relearn():
    p = Profile(1, "app", "svc", "sha256:x")
    p.add(process_entry("/bin/sh", "s" * 64, exe="/bin/sh"))
    p.add(process_entry("/bin/sh:nc", "", source="seed", exe="/bin/sh"))
    p.add(process_entry("/usr/bin/python3", "p" * 64))
    assert p.kernel_multicall_paths() == {"/bin/sh"}
    assert p.kernel_exec_paths() == {"/bin/sh", "/bin/sh:nc", "/usr/bin/python3"}
    assert p.process_verdict("/bin/sh", "s" * 64) == "known"
    assert p.process_verdict("/bin/sh:wget", "s" * 64) == "unknown"
    p.clear_learned()
    assert p.kernel_multicall_paths() == {"/bin/sh"}  # the seed stays
    p.entries["process"].clear()
    p.clear_learned()
    assert p.kernel_multicall_paths() == set()


def test_the_kernel_hooks_write_multi_call_paths_and_drop_them_with_a_rewrite():
    maps = KernelMaps(own_cgroup_id=0)
    hooks = KernelMapHooks(maps)
    hooks.set_exec_allowlist(3, ["/bin/sh"])
    hooks.set_multicall_paths(3, ["/bin/sh", "/bin/ls"])
    assert maps._multicall[3] == {path_hash("/bin/sh"), path_hash("/bin/ls")}
    hooks.set_multicall_paths(3, ["/bin/sh"])  # one taken out: the profile is written again
    assert maps._multicall[3] == {path_hash("/bin/sh")}
    assert maps._exec_allow[3] == {path_hash("/bin/sh")}
    maps.clear_profile(3)
    assert 3 not in maps._multicall
    rec = RecordingKernelHooks()
    rec.set_multicall_paths(3, ["/bin/sh"])
    assert rec.multicall == {3: {"/bin/sh"}}


async def test_the_detector_learns_applets_and_alerts_on_another_applet_at_the_same_path(tmp_path):
    import asyncio

    from support.rig import Rig

    from enforcer.sensors.events import ExecEvent

    rig = Rig(tmp_path / "rig", learn_seconds=3600.0)
    await rig.start()
    try:
        c = rig.container("lone", "lone", "lone", ip="10.5.0.7", lone=True)
        busybox = "b" * 64
        await rig.feed(ExecEvent(container_id=c.id, path="/bin/sh", argv=["sh", "-c", "x"], sha256=busybox,
                                 binary="/bin/busybox", multicall=True))
        p = rig.profiles.for_container(c.id).profile
        assert p.process_verdict("/bin/sh", busybox) == "known" and p.multicall_paths == {"/bin/sh"}
        rig.profiles.activate(p)
        await asyncio.sleep(0.1)
        assert "/bin/sh" in rig.hooks.exec_allow[p.id] and rig.hooks.multicall[p.id] == {"/bin/sh"}
        # The same binary, the same path, another applet: its own program. The profile keys
        # /bin/sh by applet even when this event's hash was not classified (e.g. skipped).
        await rig.feed(ExecEvent(container_id=c.id, path="/bin/sh", argv=["nc", "-l", "-p", "4445"],
                                 sha256="", binary="/bin/busybox"))
        (a,) = await rig.call("alerts")
        assert a["subject"] == "/bin/sh:nc" and a["detail"]["path"] == "/bin/sh"
        assert a["detail"]["applet"] == "/bin/sh:nc"
    finally:
        await rig.stop()


def test_seeds_mark_a_multi_call_binary_by_its_content_whatever_its_name(tmp_path):
    from enforcer.models import Container
    from enforcer.profiles.seed import SeedInput, seed_entries

    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "toolbox").write_bytes(b"\x7fELF\x00" + b"\x00BusyBox v1.36.1 multi-call binary\x00")
    (root / "bin" / "sh").symlink_to("toolbox")  # relative: resolved inside the root
    (root / "bin" / "wget").symlink_to("toolbox")
    (root / "bin" / "app").write_bytes(b"\x7fELF\x00 an ordinary program")
    os.mkfifo(root / "bin" / "fifo")  # never read (it would block the loop)
    c = Container(id="d" * 64, name="x", app="x", service="x", image="img")
    image = {"Cmd": ["sh", "-c", "wget -q http://web/; /bin/app; /bin/fifo"], "Env": ["PATH=/bin"]}
    entries = [e for e in seed_entries(SeedInput(c, image, None, lambda s: {}, root=str(root))) if e.kind == "process"]
    by_path = {e.data["path"]: e.data.get("multicall", "") for e in entries}
    assert by_path == {"/bin/sh": "/bin/sh", "/bin/wget": "/bin/wget", "/bin/app": "", "/bin/fifo": "",
                       "/proc/self/exe:wget": ""}
