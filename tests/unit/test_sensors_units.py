"""The sensors' hub without a kernel: delivery, the tap, counting, the wiring to a queue
and the socket topics, and the profiles' hooks over the kernel maps (failures are logged
once per kind, never raised)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from enforcer.profiles.kernel import KernelMapHooks, NullKernelHooks, hooks_for_maps
from enforcer.sensors.decode import Decoded
from enforcer.sensors.events import ExecEvent, NetworkEvent
from enforcer.sensors.hub import SensorHub
from enforcer.sensors.kernel_maps import KernelMaps
from enforcer.sensors.program import SensorLoadError
from enforcer.sensors.wiring import queue_deliver, queue_depth, sensor_topic_tap, stats_topic
from support.sensors import FakeInventory


def _no_kernel() -> Any:
    raise SensorLoadError("no kernel in this test")


async def _hub(**args: Any) -> tuple[SensorHub, asyncio.Queue[Any]]:
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
    hub = SensorHub(FakeInventory(), queue_deliver(queue), queue_depth=queue_depth(queue), loader=_no_kernel, **args)
    await hub.start()
    await asyncio.wait_for(hub.ready.wait(), 10)
    return hub, queue


async def test_events_are_delivered_tapped_and_counted_a_full_queue_counts_as_lost():
    tapped: list[tuple[Any, str]] = []
    hub, queue = await _hub(tap=lambda ev, sensor: tapped.append((ev, sensor)))
    try:
        assert not hub.loaded and "no kernel" in hub.error
        hub.maps.set_policy(77, 3, "alert")  # watched by policy only: no container id yet
        events = [ExecEvent(cgroup_id=77, path="/bin/ls"), NetworkEvent(cgroup_id=5)]
        hub._deliver([Decoded(ev, ev.sensor) for ev in events])
        assert queue.get_nowait() is events[0]
        assert [(e, s) for e, s in tapped] == [(events[0], "process"), (events[1], "network")]
        by_name = {s.name: s for s in hub.stats()}
        assert (by_name["process"].events, by_name["process"].lost) == (1, 0)
        assert (by_name["network"].events, by_name["network"].lost_queue) == (0, 1)
        result = hub.stats_result()
        assert (result["events_total"], result["lost_total"], result["queued"], result["queue_max"]) == (1, 1, 0, 1)
        assert hub.maps.policy(77) == (3, "alert") and hub.maps.syscall_bitmap(77) == set()
    finally:
        await hub.stop()


async def test_a_failing_tap_does_not_stop_delivery(caplog):
    def tap(ev: Any, sensor: str) -> None:
        raise RuntimeError("observer broke")

    hub, queue = await _hub(tap=tap)
    try:
        with caplog.at_level(logging.ERROR):
            hub._deliver([Decoded(ExecEvent(cgroup_id=1), "process")])
        assert queue.qsize() == 1 and "tap failed" in caplog.text
    finally:
        await hub.stop()


def test_the_sensor_and_stats_topics_are_built_only_for_subscribers():
    published: list[tuple[str, Any]] = []
    listening: set[str] = set()
    tap = sensor_topic_tap(lambda t, d: published.append((t, d)), lambda t: t in listening)
    publish_stats = stats_topic(lambda t, d: published.append((t, d)), lambda t: t in listening)
    built: list[int] = []

    def build() -> dict[str, Any]:
        built.append(1)
        return {"events_total": 0}

    tap(ExecEvent(path="/bin/ls"), "process")
    publish_stats(build)
    assert published == [] and built == []
    listening.update({"sensor", "stats"})
    tap(ExecEvent(path="/bin/ls", cgroup_id=9), "process")
    publish_stats(build)
    (t1, ev), (t2, stats) = published
    assert (t1, ev["type"], ev["sensor"], ev["path"], ev["cgroup_id"]) == ("sensor", "ExecEvent", "process", "/bin/ls", 9)
    assert (t2, stats) == ("stats", {"events_total": 0})


class _BrokenMaps(KernelMaps):
    def allow_exec(self, profile_id: int, paths: Any) -> None:
        raise OSError("map full")

    def syscall_bitmap(self, cgroup_id: int) -> set[int]:
        raise OSError("gone")


def test_kernel_map_hooks_log_a_failing_update_once_and_never_raise(caplog):
    maps = _BrokenMaps(own_cgroup_id=0)
    hooks = hooks_for_maps(maps)
    assert isinstance(hooks, KernelMapHooks) and hooks.self_exec_by_applet
    assert isinstance(hooks_for_maps(None), NullKernelHooks)
    with caplog.at_level(logging.WARNING):
        hooks.set_exec_allowlist(1, ["/bin/ls"])
        hooks.set_exec_allowlist(1, ["/bin/ls", "/bin/cat"])
        assert hooks.used_syscalls(5) == set()
    assert caplog.text.count("allow_exec failed") == 1 and caplog.text.count("syscall_bitmap failed") == 1
    hooks.set_syscall_allowlist(1, [0, 1])
    hooks.set_policy(5, 1, "protect")
    assert maps._syscall_allow[1] == {0, 1} and maps.policy(5) == (1, "protect")


def test_a_policy_for_the_enforcers_own_container_does_not_watch_it():
    # Run as a container, the enforcer is in the inventory and the profile book gives it a
    # profile and a policy like any other container: the policy must not make it watched
    # (seen with the image: its own bpf() calls and reads of /proc became alerts on itself).
    maps = KernelMaps(own_cgroup_id=4242)
    maps.set_policy(4242, 7, "alert")
    assert maps.policy(4242) is None and maps.watched_count == 0
    maps.set_policy(4243, 8, "protect")
    assert maps.policy(4243) == (8, "protect") and maps.watched_count == 1
