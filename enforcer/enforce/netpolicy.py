"""Default-deny network policy as data: a protected container's profile peers -> the set
elements of the `policy` chain (pure: no kernel, no I/O).

A container in protect mode with an active profile may open only the connections its
profile's peer entries name; every other new connection, to it or from it, is refused at
its first packet by the kernel (ruleset.py: `policy` chain, inet family, `ct state new`).
Packets of established connections are never looked at, so allowed traffic is untouched.

Peers of an entry become addresses here:
  "app/service"  the current addresses of that service's running containers
  an address     itself;  a CIDR  that network
  "*"            any peer; inbound, any peer that is not a known container (a published
                 port is seeded as "in tcp * 8080": reachable from outside the host, not from
                 sibling containers unless the profile names them)
  "loopback"     nothing: the container's own traffic never leaves its network namespace
Port "*" is any port. Only tcp and udp entries exist in profiles; every other protocol
(ICMP echo included) from or to a protected container is refused when it starts a flow.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .ruleset import PROTO_NUMBERS, Element

ANY = "*"
LOOPBACK = "loopback"
DIRECTIONS = {"out": "o", "in": "i"}


@dataclass(frozen=True, slots=True)
class PeerRule:
    """One allowed flow of a protected container: a profile peer entry."""

    direction: str  # out | in
    proto: str  # tcp | udp
    peer: str  # "app/service", address, CIDR, "*" or "loopback"
    port: int | str  # a port or "*"


def set_names(direction: str, version: int) -> dict[str, str]:
    """Shape -> set name for one direction and IP version (ruleset.POLICY_SETS holds them)."""
    d = DIRECTIONS[direction]
    return {"exact": f"p{d}x{version}", "anyport": f"p{d}p{version}", "anypeer": f"p{d}a{version}",
            "anything": f"p{d}w{version}", "net": f"p{d}n{version}", "netanyport": f"p{d}np{version}"}


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def policy_elements(policies: Mapping[str, Iterable[PeerRule]], addresses: Callable[[str], list[str]],
                    service_addresses: Callable[[str], list[str]], containers: Iterable[str] = (),
                    guarded: Iterable[tuple[str, str]] = ()) -> dict[str, set[Element]]:
    """The elements of every policy set.

    `policies`: container name -> its allowed flows (only protected containers appear);
    `addresses(name)`: a container's current addresses ([] when not running: nothing to do);
    `service_addresses("app/service")`: the addresses of that service's running containers;
    `containers`: every known container's address (an inbound "*" peer excludes them);
    `guarded`: (network, the host's address on it) of the networks protected containers are
    on: an unknown address there is refused (fail closed until its policy is in place).
    """
    sets: dict[str, set[Element]] = defaultdict(set)
    guarded = list(guarded)
    if policies or guarded:
        for text in containers:
            a = _network(text)
            if a is not None and a.prefixlen == a.max_prefixlen:
                sets[f"ctr{a.version}"].add((str(a.network_address),))
    nets: dict[int, list] = defaultdict(list)
    for net_text, gateway in guarded:
        net, gw = _network(net_text), _network(gateway)
        if net is None or gw is None or net.version != gw.version:
            continue
        nets[net.version].append(net)
        sets[f"ggw{gw.version}"].add((str(gw.network_address),))
    for version, found in nets.items():
        for net in ipaddress.collapse_addresses(found):
            sets[f"gnet{version}"].add((str(net),))
    for name, rules in policies.items():
        own = [ipaddress.ip_address(a) for a in addresses(name) if _network(a) is not None]
        if not own:
            continue
        for a in own:
            sets[f"prot{a.version}"].add((str(a),))
        # Per (own, shape-key): CIDR peers merged, since concatenated interval sets refuse overlaps.
        peer_nets_of: dict[tuple[str, str, int, int | None], list] = defaultdict(list)
        for r in rules:
            if r.direction not in DIRECTIONS or r.proto not in PROTO_NUMBERS or r.peer == LOOPBACK:
                continue
            proto = PROTO_NUMBERS[r.proto]
            if r.port != ANY:
                try:
                    number = int(r.port)
                except (TypeError, ValueError):
                    continue
                if not 0 < number < 65536:
                    continue
                port: int | None = number
            else:
                port = None
            if r.peer == ANY:
                peers: list = [None]
            elif "/" in r.peer and _network(r.peer) is None:  # "app/service"
                peers = [ipaddress.ip_network(a) for a in service_addresses(r.peer) if _network(a) is not None]
            else:
                net = _network(r.peer)
                peers = [net] if net is not None else []
            for a in own:
                names = set_names(r.direction, a.version)
                key = str(a)
                for peer in peers:
                    if peer is None:
                        if port is None:
                            sets[names["anything"]].add((key, proto))
                        else:
                            sets[names["anypeer"]].add((key, proto, port))
                    elif peer.version != a.version:
                        continue
                    elif peer.prefixlen == peer.max_prefixlen:
                        if port is None:
                            sets[names["anyport"]].add((key, str(peer.network_address), proto))
                        else:
                            sets[names["exact"]].add((key, str(peer.network_address), proto, port))
                    else:
                        peer_nets_of[(r.direction, key, proto, port)].append(peer)
        for (direction, key, proto, port), peer_nets in peer_nets_of.items():
            version = peer_nets[0].version
            names = set_names(direction, version)
            for net in ipaddress.collapse_addresses(peer_nets):
                if port is None:
                    sets[names["netanyport"]].add((key, str(net), proto))
                else:
                    sets[names["net"]].add((key, str(net), proto, port))
    return dict(sets)


def allows(applied: Mapping[str, Iterable[Element]], direction: str, own: str, peer: str, proto: str,
           port: int) -> bool | None:
    """What the applied policy does with a new flow: True (allowed), False (refused by the
    kernel), None (no policy for `own`: the container is not under default-deny)."""
    try:
        a, p = ipaddress.ip_address(own), ipaddress.ip_address(peer)
    except ValueError:
        return None
    if (str(a),) not in set(applied.get(f"prot{a.version}", ())):
        return None
    if a.version != p.version:
        return None  # another address of the container carried this flow
    n = PROTO_NUMBERS.get(proto)
    if n is None:
        return False
    names = set_names(direction, a.version)
    key, pk = str(a), str(p)
    # Inbound from "any peer" means any peer that is not a known container.
    any_peer = direction == "out" or (pk,) not in set(applied.get(f"ctr{p.version}", ()))
    if ((key, pk, n, port) in set(applied.get(names["exact"], ())) or (key, pk, n) in set(applied.get(names["anyport"], ()))
            or (any_peer and ((key, n, port) in set(applied.get(names["anypeer"], ()))
                              or (key, n) in set(applied.get(names["anything"], ()))))):
        return True
    for k, net, pr, *rest in list(applied.get(names["net"], ())) + list(applied.get(names["netanyport"], ())):
        if k == key and pr == n and (not rest or rest[0] == port) and p in ipaddress.ip_network(net):
            return True
    return False
