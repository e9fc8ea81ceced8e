"""Network blocks as data: parsing what a person typed, and turning the stored blocks plus
the live inventory into the set elements the kernel should hold (pure: no kernel, no I/O).

A block cuts a container (by name) off from a peer in both directions: another container
(by name: its addresses are looked up each time they may have changed) or an address or
CIDR, on every port or on one port (tcp, udp or both).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .ruleset import PROTO_NUMBERS, Element, Ruleset, empty_ruleset

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PROTOS = ("tcp", "udp", "any")


@lru_cache(maxsize=65536)
def as_network(text: str) -> Network | None:
    """An address or CIDR as a network (host bits dropped), or None if it is not one."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def _cidr(net: Network) -> str:
    return str(net)


def _merged(nets: list[Network]) -> list[Network]:
    """Overlapping or adjacent networks as the fewest disjoint ones (one stays as it is)."""
    if len(nets) == 1:
        return nets
    return list(ipaddress.collapse_addresses(nets))  # type: ignore[type-var]


@dataclass(slots=True)
class BlockView:
    """What the desired state says about one block: the addresses it is in force for."""

    own: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(self.own and self.peers)


@dataclass(slots=True)
class BlockInput:
    id: int
    container: str  # name
    peer: str
    peer_kind: str  # container | network
    port: int  # 0: every port
    proto: str  # tcp | udp | any


def desired_ruleset(blocks: Iterable[BlockInput], addresses: Callable[[str], list[str]],
                    protect: Iterable[str] = (), threats: Iterable[Network] = ()) -> tuple[Ruleset, dict[int, BlockView]]:
    """The elements every set should hold, and per block where it applies.

    `addresses(name)` gives a container's current addresses ([] when it is not running):
    a stopped container's rules go away and come back with its next address.
    """
    any_port: dict[str, list[Network]] = defaultdict(list)
    one_port: dict[tuple[str, int, int], list[Network]] = defaultdict(list)
    views: dict[int, BlockView] = {}
    for b in blocks:
        own = [a for a in addresses(b.container) if as_network(a) is not None]
        if b.peer_kind == "network":
            net = as_network(b.peer)
            peer_nets = [net] if net is not None else []
        else:
            peer_nets = [n for n in (as_network(a) for a in addresses(b.peer)) if n is not None]
        view = views[b.id] = BlockView(own=own, peers=[_cidr(n) for n in peer_nets])
        if not view.active:
            continue
        protos = [PROTO_NUMBERS[b.proto]] if b.proto in PROTO_NUMBERS else list(PROTO_NUMBERS.values())
        for addr in own:
            own_net = as_network(addr)
            assert own_net is not None
            version = own_net.version
            nets = [n for n in peer_nets if n.version == version]
            if not nets:
                continue
            key = _cidr(own_net).split("/")[0]
            if b.port:
                for proto in protos:
                    one_port[(key, proto, b.port)].extend(nets)
            else:
                any_port[key].extend(nets)
    sets: dict[str, set[Element]] = {name: set() for name in empty_ruleset()}
    for addr, nets in any_port.items():
        v = nets[0].version
        for net in _merged(nets):
            kind = "x" if net.prefixlen == net.max_prefixlen else ""  # one address: the hash set
            sets[f"blk{kind}{v}"].add((addr, _cidr(net)))
    for (addr, proto, port), nets in one_port.items():
        v = nets[0].version
        for net in _merged(nets):
            kind = "x" if net.prefixlen == net.max_prefixlen else ""
            sets[f"blkp{kind}{v}"].add((addr, _cidr(net), proto, port))
    for addr in protect:
        ip = ipaddress.ip_address(addr)
        sets[f"protect{ip.version}"].add((str(ip),))
    v4 = [n for n in threats if n.version == 4]
    v6 = [n for n in threats if n.version == 6]
    for version, nets in ((4, v4), (6, v6)):
        for net in ipaddress.collapse_addresses(nets):  # type: ignore[type-var]
            sets[f"threat{version}"].add((str(net),))
    return {k: frozenset(v) for k, v in sets.items()}, views
