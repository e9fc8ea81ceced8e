"""The detector on qualified syscalls (clone namespace flags, packet/raw sockets) and
io_uring, through a real enforcer rig: alerted in every mode, learned under their own
name (a learned `socket` or `clone` does not cover them), and `killed` when the kernel
stopped the call at entry."""

from __future__ import annotations

import asyncio

from support.rig import Rig
from enforcer.sensors.events import SyscallEvent


async def test_qualified_calls_are_dangerous_and_learned_apart_from_the_plain_call(tmp_path):
    rig = Rig(tmp_path / "rig", learn_seconds=3600.0)
    await rig.start()
    try:
        c = rig.container("lone", "lone", "lone", ip="10.6.0.2", lone=True)
        await rig.feed(SyscallEvent(container_id=c.id, nr=41, name="socket", first=True),
                       SyscallEvent(container_id=c.id, nr=56, name="clone", first=True))
        profile = rig.profiles.for_container(c.id).profile
        rig.profiles.activate(profile)
        assert await rig.call("alerts") == []
        await rig.feed(
            SyscallEvent(container_id=c.id, nr=520, name="socket:packet", dangerous=True, first=True,
                         args={"family": "AF_PACKET", "type": "0x3"}),
            SyscallEvent(container_id=c.id, nr=516, name="clone:newuser", dangerous=True, ret=-1,
                         args={"flags": "0x10000011"}),
            SyscallEvent(container_id=c.id, nr=425, name="io_uring_setup", dangerous=True, killed=True, ret=-4),
        )
        got = {a["subject"]: a for a in await rig.call("alerts")}
        assert set(got) == {"socket:packet", "clone:newuser", "io_uring_setup"}
        assert got["socket:packet"]["detail"]["family"] == "AF_PACKET" and got["socket:packet"]["severity"] == "high"
        assert got["clone:newuser"]["summary"] == "dangerous syscall clone:newuser (failed: EPERM)"
        assert got["io_uring_setup"]["action"] == "killed" and got["io_uring_setup"]["detail"]["killed"] is True
        assert got["io_uring_setup"]["summary"] == "dangerous syscall io_uring_setup (killed at entry)"
        assert not profile.allows_syscall(520, "socket:packet") and profile.allows_syscall(41, "socket")
    finally:
        await rig.stop()


async def test_dangerous_bits_of_the_kernel_bitmap_are_not_learned(tmp_path):
    # The kernel's per-cgroup bitmap also holds what runc did in the container's cgroup
    # (it creates the namespaces there): only the detector, which knows the caller, learns
    # a dangerous call; the bitmap adds the harmless ones whose events were lost.
    rig = Rig(tmp_path / "rig", learn_seconds=0.2)
    rig.compose("blog", {"web": {"expose": [{"port": 8080}]}})
    await rig.start()
    try:
        web = rig.container("blog_web_1", "blog", "web")
        rig.hooks.used[web.cgroup_id] = {0, 41, 56, 272, 425, 512, 516, 520}
        p = rig.profiles.for_container(web.id).profile
        for _ in range(250):
            if p.state == "active":
                break
            await asyncio.sleep(0.02)
        assert p.state == "active"
        assert {0, 41, 56} <= p.syscalls and not p.syscalls & {272, 425, 512, 516, 520}
    finally:
        await rig.stop()
