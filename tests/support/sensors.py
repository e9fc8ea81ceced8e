"""Helpers for the sensor tests: a subscriber to the enforcer's `sensor` topic, and a
SensorHub running in-process on its own event loop (for the kernel policy hooks, which
have no socket op). Both collect events in a list and wait for matches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from typing import Any, Callable, Iterator

from support.harness import container_info


class EventLog:
    """Events seen so far (dicts), with waiting helpers; thread-safe."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def add(self, ev: dict[str, Any]) -> None:
        with self._cond:
            self.events.append(ev)
            self._cond.notify_all()

    def matching(self, **want: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if all(_match(e.get(k), v) for k, v in want.items())]

    def wait_for(self, timeout: float = 15.0, **want: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if all(_match(e.get(k), v) for k, v in want.items())]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [{k: e.get(k) for k in ("type", "path", "op", "name", "direction", "comm", "pid")}
                            for e in self.events if e.get("container_id") == want.get("container_id")
                            and e.get("type") != "SyscallEvent"]
                    raise AssertionError(f"no event matching {want} within {timeout:g}s; "
                                         f"this container's events: {seen[-30:]}")
                self._cond.wait(min(left, 0.2))


def _match(value: Any, want: Any) -> bool:
    if callable(want):
        try:
            return bool(want(value))
        except Exception:  # noqa: BLE001
            return False
    return value == want


class SensorSubscriber:
    """Subscribes to the `sensor` topic of a running enforcer and logs every event."""

    def __init__(self, socket_path: str) -> None:
        self.log = EventLog()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(socket_path)
        self._sock.sendall(b'{"id": 1, "op": "subscribe", "topics": ["sensor"]}\n')
        self._file = self._sock.makefile("r", encoding="utf-8")
        reply = json.loads(self._file.readline())
        if not reply.get("ok"):
            raise RuntimeError(f"subscribe failed: {reply}")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._file:
                msg = json.loads(line)
                if msg.get("event") == "sensor":
                    self.log.add(msg["data"])
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


class FakeInventory:
    """The inventory boundary for an in-process hub: containers added by the test."""

    def __init__(self) -> None:
        self.containers: dict[str, Any] = {}
        self._listeners: list[Callable[[Any], Any]] = []

    def subscribe(self, listener: Callable[[Any], Any]) -> None:
        self._listeners.append(listener)

    def by_cgroup(self, cgroup_id: int) -> Any:
        return next((c for c in self.containers.values() if c.cgroup_id == cgroup_id), None)

    def by_ip(self, ip: str) -> Any:
        return next((c for c in self.containers.values() if ip in c.addresses()), None)

    def add(self, c: Any) -> None:
        from enforcer.inventory import InventoryChange

        self.containers[c.id] = c
        for listener in self._listeners:
            listener(InventoryChange("added", c))


def container_model(name: str) -> Any:
    """A models.Container for a running container, with its real cgroup id."""
    from enforcer.inventory.cgroups import cgroup_for_pid
    from enforcer.models import Container, NetworkAttachment

    info = container_info(name)
    pid = int(info["State"]["Pid"])
    cg = cgroup_for_pid(pid)
    assert cg is not None, f"no cgroup v2 for {name}"
    nets = [NetworkAttachment(network=n, ip=v.get("IPAddress") or "")
            for n, v in (info["NetworkSettings"]["Networks"] or {}).items()]
    return Container(id=info["Id"], name=name, app=name, service=name, image=info["Config"]["Image"],
                     state="running", pid=pid, cgroup_id=cg.cgroup_id, cgroup_path=cg.path, networks=nets)


@contextlib.contextmanager
def running_hub(**hub_args: Any) -> Iterator["HubRunner"]:
    """A HubRunner for a fixture: closed afterwards, whatever the tests did."""
    r = HubRunner(**hub_args)
    try:
        yield r
    finally:
        r.close()


class HubRunner:
    """A SensorHub on a private event loop thread, fed by a FakeInventory."""

    def __init__(self, on_event: Callable[[Any], None] | None = None, **hub_args: Any) -> None:
        """on_event(ev) is called on the loop for every event, after the log has it."""
        from enforcer.sensors.hub import SensorHub
        from enforcer.sensors.wiring import queue_deliver, sensor_event_dict

        self.inventory = FakeInventory()
        self.log = EventLog()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def make() -> SensorHub:
            queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=100_000)
            def tap(ev: Any, sensor: str) -> None:
                self.log.add(sensor_event_dict(ev, sensor))
                if on_event is not None:
                    on_event(ev)

            hub = SensorHub(self.inventory, queue_deliver(queue), tap=tap, **hub_args)
            self._drain = asyncio.ensure_future(_drain(queue))  # the detector's part
            await hub.start()
            await asyncio.wait_for(hub.ready.wait(), 120)
            return hub

        self.hub = self.run(make())
        if not self.hub.loaded:
            raise RuntimeError(f"sensors did not load: {self.hub.error}")

    def run(self, coro: Any, timeout: float = 150) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def go() -> Any:
            return fn(*args)

        return self.run(go())

    def close(self) -> None:
        try:
            self.run(self.hub.stop(), timeout=30)
            self.run(_cancel(self._drain), timeout=10)  # finished before the loop stops
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


async def _cancel(task: "asyncio.Future[Any]") -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _drain(queue: asyncio.Queue[Any]) -> None:
    while True:
        await queue.get()

