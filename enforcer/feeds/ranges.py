"""Never cut your own traffic: address space no public feed entry may cover.

Generic lists carry private and reserved space (FireHOL level1 includes 10.0.0.0/8 and the
bogons). Matching or blocking those would alert on, or cut, a host's own containers, its
DNS resolver and its gateway. Entries that overlap any of these ranges are dropped when a
feed is loaded (and counted), unless the feed is marked `local`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from ..ports import DockerCalls

log = logging.getLogger(__name__)

PROTECTED_V4: tuple[str, ...] = (
    "0.0.0.0/8",  # "this" network
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private (RFC 1918)
    "100.64.0.0/10",  # carrier-grade NAT
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "192.0.0.0/24", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # IETF, documentation
    "192.88.99.0/24", "198.18.0.0/15",  # 6to4 relay, benchmarking
    "224.0.0.0/4", "240.0.0.0/4",  # multicast, reserved (and broadcast)
)
PROTECTED_V6: tuple[str, ...] = (
    "::/127",  # unspecified, loopback
    "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48",  # v4-mapped, NAT64
    "100::/64",  # discard
    "2001::/23",  # IETF protocol assignments
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
)


@dataclass(slots=True)
class ProtectedRanges:
    """Sorted, merged ranges per family; `overlaps` is one bisect."""

    starts: dict[int, list[int]] = field(default_factory=dict)
    ends: dict[int, list[int]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # for `status`: what was protected

    @classmethod
    def build(cls, extra: Iterable[str] = ()) -> "ProtectedRanges":
        """The fixed ranges plus `extra` (this host's Docker networks and addresses)."""
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        sources: list[str] = []
        for text in (*PROTECTED_V4, *PROTECTED_V6, *extra):
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                log.debug("feeds: ignoring unusable protected range %r", text)
                continue
            spans[net.version].append((int(net.network_address), int(net.broadcast_address)))
            sources.append(str(net))
        out = cls(sources=sources)
        for family, items in spans.items():
            merged: list[list[int]] = []
            for start, end in sorted(items):
                if merged and start <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            out.starts[family] = [m[0] for m in merged]
            out.ends[family] = [m[1] for m in merged]
        return out

    def overlaps(self, family: int, start: int, end: int) -> bool:
        starts = self.starts[family]
        i = bisect_right(starts, end) - 1
        return i >= 0 and self.ends[family][i] >= start


async def host_networks(docker_source: "DockerCalls | None") -> list[str]:
    """This host's Docker network subnets and interface addresses, best effort.

    Docker's default pools are private already, but a daemon can be configured with any
    pool; and a feed listing this host's own public address must not make it cut itself.
    """
    out: list[str] = []
    if docker_source is not None:
        try:
            networks = await docker_source.call(lambda api: api.networks())
        except Exception as e:  # noqa: BLE001 - the engine may be down; feeds still load
            log.debug("feeds: cannot list Docker networks: %s", e)
            networks = []
        for net in networks or []:
            for config in ((net.get("IPAM") or {}).get("Config") or []):
                if config.get("Subnet"):
                    out.append(config["Subnet"])
    # pyroute2's sync API refuses to run inside an event loop: ask from a worker thread.
    out.extend(await asyncio.to_thread(_interface_addresses))
    return out


def _interface_addresses() -> list[str]:
    try:
        from pyroute2 import IPRoute
    except ImportError:
        return []
    try:
        with IPRoute() as ipr:
            return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr() if a.get_attr("IFA_ADDRESS")]
    except Exception as e:  # noqa: BLE001 - netlink refused: fall back to the fixed ranges
        log.debug("feeds: cannot list interface addresses: %s", e)
        return []
