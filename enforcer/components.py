"""The optional layers of the enforcer, built in order. Each is a component with
start(), stop() and register_ops(server); see daemon.Enforcer.add_component."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .daemon import Enforcer


def build_components(enforcer: "Enforcer") -> list[Any]:
    from .feeds import FeedManager

    components: list[Any] = []
    if enforcer.settings.sensors:
        from .sensors.hub import SensorHub
        from .sensors.wiring import queue_deliver, queue_depth, sensor_topic_tap, stats_topic

        server = enforcer.server
        enforcer.sensors = SensorHub(  # eBPF sensors -> enforcer.events
            enforcer.inventory, queue_deliver(enforcer.events), queue_depth=queue_depth(enforcer.events),
            tap=sensor_topic_tap(server.publish, server.has_subscribers),
            publish_stats=stats_topic(server.publish, server.has_subscribers))
        components.append(enforcer.sensors)
    enforcer.feeds = FeedManager(enforcer)  # match_ip / match_domain / match_hash for the detector
    components.append(enforcer.feeds)
    from .detect import AlertBook, Detector
    from .profiles import ProfileBook

    enforcer.profiles = ProfileBook(enforcer)  # profiles, modes, kernel allow-lists
    enforcer.alerts = AlertBook(enforcer)  # raise_alert(...) for every layer; folding, store, publish
    enforcer.detector = Detector(enforcer)  # consumes enforcer.events
    components += [enforcer.profiles, enforcer.alerts, enforcer.detector]
    from .enforce.component import Enforcement

    enforcer.enforcement = Enforcement(enforcer)  # blocks, freezes, kills, forensics; respond() in protect
    components.append(enforcer.enforcement)
    return components
