"""What connects a SensorHub to the rest of the enforcer, built by the composition root.

The hub knows neither the event queue nor the socket server: it is given
- `deliver(event) -> bool`: `queue_deliver(queue)` puts on the detector's queue and
  answers False when it is full (the hub counts the event as lost);
- `tap(event, sensor)`: `sensor_topic_tap(publish, has_subscribers)` publishes every
  event on the `sensor` topic (the event's fields + "sensor" + "type"), built only
  while someone is subscribed;
- `publish_stats(build)`: `stats_topic(publish, has_subscribers)` publishes build() on
  the `stats` topic, built only while someone is subscribed;
- `queue_depth() -> (queued, maxsize)`: `queue_depth(queue)`, reported by `stats`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Callable

from .events import SensorEvent

Publish = Callable[[str, Any], None]
HasSubscribers = Callable[[str], bool]


def queue_deliver(queue: asyncio.Queue[Any]) -> Callable[[SensorEvent], bool]:
    def deliver(ev: SensorEvent) -> bool:
        try:
            queue.put_nowait(ev)
        except asyncio.QueueFull:
            return False
        return True

    return deliver


def queue_depth(queue: asyncio.Queue[Any]) -> Callable[[], tuple[int, int]]:
    return lambda: (queue.qsize(), queue.maxsize)


def sensor_event_dict(ev: SensorEvent, sensor: str) -> dict[str, Any]:
    """One event as the `sensor` topic carries it."""
    data = dataclasses.asdict(ev)
    data["sensor"] = sensor
    data["type"] = type(ev).__name__
    return data


def sensor_topic_tap(publish: Publish, has_subscribers: HasSubscribers) -> Callable[[SensorEvent, str], None]:
    def tap(ev: SensorEvent, sensor: str) -> None:
        if has_subscribers("sensor"):
            publish("sensor", sensor_event_dict(ev, sensor))

    return tap


def stats_topic(publish: Publish, has_subscribers: HasSubscribers) -> Callable[[Callable[[], dict[str, Any]]], None]:
    def publish_stats(build: Callable[[], dict[str, Any]]) -> None:
        if has_subscribers("stats"):
            publish("stats", build())

    return publish_stats
