"""The ports between the enforcer's layers: what one layer may ask of another.

Every component is built by the composition root (daemon.py) with exactly the ports it
needs; none holds the daemon. A port is a `Protocol`, so a test can hand in a small fake
and the type checker says when a component reaches past what it was given. Data flows
one way (sensors -> detector -> alerts -> server); where a lower layer must say something
upward (a container's view changed, an alert to publish) it calls a function it was given.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from .feeds.models import FeedHit
    from .models import Alert, Container
    from .profiles.book import Attachment
    from .profiles.model import Entry, Profile
    from .sensors.events import SensorEvent

# publish(topic, data): one event to the socket's subscribers of that topic.
Publish = Callable[[str, dict[str, Any]], None]
# changed(container): its view (mode, profile state, frozen, blocks...) is no longer what
# clients were last told; the root recomputes it and publishes an `inventory` update.
ContainerChanged = Callable[["Container"], None]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ContainerIndex(Protocol):
    """The inventory as a lookup (the detector's and the sensors' view of it)."""

    containers: dict[str, "Container"]

    def by_ip(self, ip: str) -> "Container | None": ...

    def resolve(self, ref: str) -> "Container | None": ...


class AlertSink(Protocol):
    """Where every layer raises alerts: folding, storing and publishing are the sink's."""

    raised: int

    def raise_alert(self, container: "Container", kind: str, severity: str, summary: str,
                    detail: dict[str, Any], subject: str, rule: str, action: str = "alerted",
                    when: float | None = None, fold_burst: bool = True, *, would: str | None = None,
                    tags: Sequence[str] = (), lineage: dict[str, Any] | None = None,
                    refresh: bool = False) -> "Alert": ...

    def set_action(self, alert_id: int, action: str) -> "Alert | None": ...

    def set_lineage(self, alert_id: int, lineage: dict[str, Any]) -> bool: ...


class FeedMatcher(Protocol):
    """Threat-feed lookups, synchronous (called for every event), and the hit record."""

    def match_ip(self, ip: str) -> "FeedHit | None": ...

    def match_domain(self, name: str) -> "FeedHit | None": ...

    def match_hash(self, hexdigest: str) -> "FeedHit | None": ...

    def record_hit(self, hit: "FeedHit", container_name: str, container_id: str,
                   alert_id: int | None) -> None: ...


class ThreatNetworks(Protocol):
    """Every listed address of every loaded feed, for the kernel; and a change signal."""

    def ip_networks(self) -> list[Network]: ...

    def on_change(self, callback: Callable[[], None]) -> None: ...


# (direction "out"|"in", proto, peer, port): one flow a profile allows (profiles/model.py
# peer entries: peer "app/service", an address, a CIDR, "*" or "loopback"; port or "*").
PeerFlow = tuple[str, str, str, "int | str"]


class NetworkPolicySource(Protocol):
    """Default-deny for protect mode: per protected container (by name, profile active), the
    flows its profile allows; and a signal when that may have changed."""

    def network_policies(self) -> dict[str, list[PeerFlow]]: ...

    def on_policy_change(self, callback: Callable[[], None]) -> None: ...


class ProtectResponse(Protocol):
    """Protect mode's answer to an alert: "killed", "blocked" or None (nothing to stop)."""

    async def respond(self, c: "Container", event: "SensorEvent", alert: "Alert") -> str | None: ...


class ProfileLookup(Protocol):
    """What the detector needs of the profiles: the attachment of a container, and the
    few changes a verdict makes to a profile."""

    def for_container(self, container_id: str) -> "Attachment | None": ...

    def record(self, profile: "Profile", entry: "Entry") -> bool: ...

    def note_use(self, profile: "Profile", kind: str, keys: tuple[str, ...] | list[str]) -> None: ...

    def paths_for_written(self, profile: "Profile", path: str) -> list[str]: ...

    def mark_suspect(self, profile: "Profile", paths: list[str]) -> None: ...

    def clear_suspect(self, profile: "Profile", path: str) -> None: ...


class ModeLookup(Protocol):
    """The effective mode of a container (learn | alert | protect)."""

    def container_mode(self, c: "Container") -> str: ...


class AuditTrail(Protocol):
    """Actions written to the audit log (and announced on the `audit` topic)."""

    async def record(self, uid: int, user: str, op: str, target: str, args: dict[str, Any],
                     result: str) -> None: ...


class StatusSource(Protocol):
    """A part of `stockade status`: a dict merged into the status reply."""

    def status(self) -> dict[str, Any]: ...


class DockerCalls(Protocol):
    """The Docker engine, as the layers that read it directly use it (blocking SDK calls
    run in a thread by the source)."""

    async def call(self, fn: Callable[[Any], Any]) -> Any: ...

    async def inspect_container(self, cid: str) -> dict[str, Any] | None: ...


class Syscalls(Protocol):
    """What the kernel saw a container use (the hooks' bitmap), by cgroup id."""

    def used_syscalls(self, cgroup_id: int) -> set[int]: ...


__all__ = ["AlertSink", "AuditTrail", "ContainerChanged", "ContainerIndex", "DockerCalls", "FeedMatcher",
           "ModeLookup", "Network", "NetworkPolicySource", "PeerFlow", "ProfileLookup", "ProtectResponse", "Publish", "StatusSource",
           "Syscalls", "ThreatNetworks"]


def noop_publish(topic: str, data: dict[str, Any]) -> None:
    """A publish port for parts built without a socket (benches, unit tests)."""


def no_change(c: "Container") -> None:
    """A changed port for parts built without a root."""

