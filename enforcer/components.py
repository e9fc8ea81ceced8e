"""The optional layers of the enforcer, built in order. Each is a component with
start(), stop() and register_ops(server); see daemon.Enforcer.add_component."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .daemon import Enforcer


def build_components(enforcer: "Enforcer") -> list[Any]:
    from .feeds import FeedManager

    components: list[Any] = []
    enforcer.feeds = FeedManager(enforcer)  # match_ip / match_domain / match_hash for the detector
    components.append(enforcer.feeds)
    return components
