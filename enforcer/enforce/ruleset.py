"""The nftables layout Stockade owns, and its set elements as JSON (pure: no kernel here).

One table name (setting `nft_table`) in two families:
  inet   <name>: base chains on forward, input and output (routed traffic, container <->
         host, and bridged traffic when br_netfilter hands it to the IP hooks)
  bridge <name>: a base chain on forward (container <-> container on one bridge, also
         when br_netfilter is off)
Both jump to a chain `blocks` whose rules look packets up in sets. The rules never change
at run time; a block is a handful of set elements, so the cost per packet stays the same
with 1 or 10,000 blocks, and adding one is one small atomic transaction.

Sets (each in both tables), keyed by the blocked container's own address first:
  blkx4 / blkx6    addr . peer-address                 every port   (hash)
  blkpx4 / blkpx6  addr . peer-address . proto . port  one port     (hash)
  blk4 / blk6      addr . peer-network                 every port   (interval)
  blkp4 / blkp6    addr . peer-network . proto . port  one port     (interval)
  threat4 / 6    threat-feed networks
  protect4 / 6   addresses of containers in protect mode
Every element has an exact container address in its first field; peer networks of one
address are merged (ipaddress.collapse_addresses) so elements never overlap, which the
kernel's concatenated interval sets (pipapo) refuse. A merged network that is a single
address goes to the hash set: measured here, 1,500 elements in the interval sets made
every forwarded packet slower than 1,000 plain rules would, the hash sets do not.

The rules match every packet, not only new connections: the first packet of a blocked
connection is dropped, and a connection open before the block stalls at its next packet.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

FAMILIES: tuple[str, ...] = ("inet", "bridge")
BLOCK_CHAIN = "blocks"
# Before Docker's iptables-nft filter chains (priority 0): the drop is counted here first.
HOOK_PRIORITY = -10
BASE_CHAINS: dict[str, tuple[str, ...]] = {"inet": ("forward", "input", "output"), "bridge": ("forward",)}

PROTO_NUMBERS = {"tcp": 6, "udp": 17}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}

Element = tuple[Any, ...]
Ruleset = dict[str, frozenset[Element]]

# set name -> (type, flags); type is a list for concatenations.
SETS: dict[str, tuple[Any, list[str]]] = {
    # single peer addresses: hash sets, one lookup costs the same whatever their size
    "blkx4": (["ipv4_addr", "ipv4_addr"], []),
    "blkpx4": (["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"], []),
    "blkx6": (["ipv6_addr", "ipv6_addr"], []),
    "blkpx6": (["ipv6_addr", "ipv6_addr", "inet_proto", "inet_service"], []),
    # peer networks (CIDR): interval sets, slower per lookup and growing with their size
    "blk4": (["ipv4_addr", "ipv4_addr"], ["interval"]),
    "blkp4": (["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"], ["interval"]),
    "blk6": (["ipv6_addr", "ipv6_addr"], ["interval"]),
    "blkp6": (["ipv6_addr", "ipv6_addr", "inet_proto", "inet_service"], ["interval"]),
    "threat4": ("ipv4_addr", ["interval"]),
    "threat6": ("ipv6_addr", ["interval"]),
    "protect4": ("ipv4_addr", []),
    "protect6": ("ipv6_addr", []),
}


# Default-deny of protected containers (netpolicy.py): conntrack decides what is a new
# connection, and the bridge family has no conntrack here (nf_conntrack_bridge is absent),
# so these live in the inet table only; bridged traffic reaches them through br_netfilter.
POLICY_FAMILY = "inet"
POLICY_CHAIN = "policy"
# Refused inbound packets go to NFLOG (refusals.py reads them and raises alerts), at most
# LOG_BURST at once and LOG_RATE a second per rule; the rest are refused all the same,
# counted by the `-unlogged` rules (UNLOGGED suffix).
LOG_PREFIX = "stockade-refused"
LOG_RATE = 25  # packets a second
LOG_BURST = 100  # packets
UNLOGGED = "-unlogged"
LOG_SNAPLEN = 128


def log_group(table: str) -> int:
    """The NFLOG group of a table's refusals: one per table (two enforcers on two tables
    never share one), in 16384-32767, away from the small numbers people pick by hand."""
    return 0x4000 + zlib.crc32(table.encode()) % 0x4000
_POLICY_SHAPES = {"x": ("addr", "addr", "proto", "port"), "p": ("addr", "addr", "proto"),
                  "a": ("addr", "proto", "port"), "w": ("addr", "proto"),
                  "n": ("addr", "net", "proto", "port"), "np": ("addr", "net", "proto")}
_TYPE = {"proto": "inet_proto", "port": "inet_service"}
# set name -> field kinds; addr/net fields take the set's IP version.
POLICY_SHAPES: dict[str, tuple[str, ...]] = {f"prot{v}": ("addr",) for v in (4, 6)}
# Every known container's address (inventory): an inbound "any peer" entry (a published
# port) means any peer that is NOT a container; containers must be named by the profile.
POLICY_SHAPES.update({f"ctr{v}": ("addr",) for v in (4, 6)})
# The networks of protected containers (guarded) and the host's own address on each (its
# gateway): a new connection from or to an address on a guarded network that is neither a
# known container nor the host is refused (fail closed while a (re)started container's
# policy is not yet in place).
POLICY_SHAPES.update({f"gnet{v}": ("net",) for v in (4, 6)})
POLICY_SHAPES.update({f"ggw{v}": ("addr",) for v in (4, 6)})
POLICY_SHAPES.update({f"p{d}{shape}{v}": kinds for d in ("o", "i") for shape, kinds in _POLICY_SHAPES.items()
                      for v in (4, 6)})


def _policy_set(name: str, kinds: tuple[str, ...]) -> tuple[Any, list[str]]:
    addr = "ipv4_addr" if name.endswith("4") else "ipv6_addr"
    types = [addr if k in ("addr", "net") else _TYPE[k] for k in kinds]
    return (types if len(types) > 1 else types[0]), (["interval"] if "net" in kinds else [])


POLICY_SETS: dict[str, tuple[Any, list[str]]] = {n: _policy_set(n, k) for n, k in POLICY_SHAPES.items()}
ALL_SETS: dict[str, tuple[Any, list[str]]] = {**SETS, **POLICY_SETS}


def sets_of(family: str) -> dict[str, tuple[Any, list[str]]]:
    return ALL_SETS if family == POLICY_FAMILY else SETS


def empty_ruleset() -> Ruleset:
    return {name: frozenset() for name in ALL_SETS}


# -- the rules -----------------------------------------------------------------------------
def _field(proto: str, name: str) -> dict[str, Any]:
    return {"payload": {"protocol": proto, "field": name}}


_L4PROTO = {"meta": {"key": "l4proto"}}
_TCP = {"match": {"op": "==", "left": _L4PROTO, "right": "tcp"}}


def _lookup(left: list[dict[str, Any]] | dict[str, Any], set_name: str) -> dict[str, Any]:
    expr = {"concat": left} if isinstance(left, list) else left
    return {"match": {"op": "==", "left": expr, "right": f"@{set_name}"}}


def block_rules() -> list[tuple[str, list[dict[str, Any]]]]:
    """(comment, match expressions) of every rule of the `blocks` chain; each drops."""
    rules: list[tuple[str, list[dict[str, Any]]]] = []
    for ip, v in (("ip", "4"), ("ip6", "6")):
        src, dst = _field(ip, "saddr"), _field(ip, "daddr")
        # Packets from the blocked container (saddr is its address) and to it (daddr);
        # the hash sets (single peers, the common case) are looked up first.
        for kind, suffix in (("x", ""), ("", "-net")):
            rules.append((f"from-container{v}{suffix}", [_lookup([src, dst], f"blk{kind}{v}")]))
            rules.append((f"to-container{v}{suffix}", [_lookup([dst, src], f"blk{kind}{v}")]))
            for own, other, side in ((src, dst, "from"), (dst, src, "to")):
                for port in ("dport", "sport"):
                    rules.append((f"{side}-container{v}-{port}{suffix}",
                                  [_lookup([own, other, _L4PROTO, _field("th", port)], f"blkp{kind}{v}")]))
        rules.append((f"protect-to-threat{v}", [_lookup(src, f"protect{v}"), _lookup(dst, f"threat{v}")]))
        rules.append((f"threat-to-protect{v}", [_lookup(dst, f"protect{v}"), _lookup(src, f"threat{v}")]))
    return rules


def policy_rules(group: int = 0) -> dict[str, list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]]:
    """chain -> (comment, matches, verdict) of the default-deny chains (inet family only).

    `group`: the NFLOG group refused inbound packets are logged to (within the limit).
    `policy` sends a packet that opens a connection from (to) a protected address to that
    direction's chain; each allow-set lookup returns, the last rules refuse. A flow between
    two protected containers must be allowed by both profiles."""
    new = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}
    chains: dict[str, list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]] = {POLICY_CHAIN: []}
    # Packets conntrack cannot place (invalid, untracked) carry no connection the policy
    # allowed: dropped, or a crafted packet (raw socket) could carry data past it. Not
    # ICMPv6: neighbour discovery is never tracked and an address must stay reachable.
    stray = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["invalid", "untracked"]}}
    for ip, v in (("ip", "4"), ("ip6", "6")):
        src, dst = _field(ip, "saddr"), _field(ip, "daddr")
        for side, addr in (("from", src), ("to", dst)):
            # An address on a guarded network that is no known container: refused (see POLICY_SHAPES).
            unbound = [new, _lookup(addr, f"gnet{v}"), {"match": {"op": "!=", "left": addr, "right": f"@ctr{v}"}},
                       {"match": {"op": "!=", "left": addr, "right": f"@ggw{v}"}}]
            chains[POLICY_CHAIN].append((f"unbound-{side}{v}-tcp", [*unbound, _TCP],
                                         [{"counter": None}, {"reject": {"type": "tcp reset"}}]))
            chains[POLICY_CHAIN].append((f"unbound-{side}{v}", unbound,
                                         [{"counter": None}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]))
        for side, own in (("from", src), ("to", dst)):
            not_icmp6 = [{"match": {"op": "!=", "left": _L4PROTO, "right": "ipv6-icmp"}}] if v == "6" else []
            chains[POLICY_CHAIN].append((f"stray-{side}{v}", [stray, _lookup(own, f"prot{v}"), *not_icmp6],
                                         [{"counter": None}, {"drop": None}]))
        for d, own, peer in (("o", src, dst), ("i", dst, src)):
            name = f"{POLICY_CHAIN}-{'out' if d == 'o' else 'in'}{v}"
            chains[POLICY_CHAIN].append(("", [new, _lookup(own, f"prot{v}")], [{"jump": {"target": name}}]))
            dport = _field("th", "dport")
            # Inbound from "any peer" (a published port): any peer but a known container.
            not_container = [{"match": {"op": "!=", "left": peer, "right": f"@ctr{v}"}}] if d == "i" else []
            chains[name] = [
                ("", [_lookup([own, peer, _L4PROTO, dport], f"p{d}x{v}")], [{"return": None}]),
                ("", [_lookup([own, peer, _L4PROTO], f"p{d}p{v}")], [{"return": None}]),
                ("", [_lookup([own, _L4PROTO, dport], f"p{d}a{v}"), *not_container], [{"return": None}]),
                ("", [_lookup([own, _L4PROTO], f"p{d}w{v}"), *not_container], [{"return": None}]),
                ("", [_lookup([own, peer, _L4PROTO, dport], f"p{d}n{v}")], [{"return": None}]),
                ("", [_lookup([own, peer, _L4PROTO], f"p{d}np{v}")], [{"return": None}]),
            ]
            # Refused at once: a TCP reset (connect() fails, nothing was sent), else ICMP.
            tcp = [_TCP]
            refusals = (("-tcp", tcp, {"reject": {"type": "tcp reset"}}),
                        ("", [], {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}))
            for suffix, match, reject in refusals:
                comment = f"deny-{'out' if d == 'o' else 'in'}{v}{suffix}"
                if d == "i":
                    # Inbound: no sensor sees a refused accept, so the kernel tells (NFLOG),
                    # within a limit; over it, refused the same, only counted.
                    over = {"limit": {"rate": LOG_RATE, "per": "second", "burst": LOG_BURST, "inv": True}}
                    chains[name].append((comment + UNLOGGED, [*match, over], [{"counter": None}, reject]))
                    logged = {"log": {"prefix": LOG_PREFIX, "group": group, "snaplen": LOG_SNAPLEN}}
                    chains[name].append((comment, match, [{"counter": None}, logged, reject]))
                else:
                    chains[name].append((comment, match, [{"counter": None}, reject]))
    return chains


def layout_commands(table: str, families: Iterable[str] = FAMILIES) -> list[dict[str, Any]]:
    """Create what is missing and (re)write every rule: idempotent, one transaction."""
    cmds: list[dict[str, Any]] = []
    for fam in families:
        cmds.append({"add": {"table": {"family": fam, "name": table}}})
        for name, (typ, flags) in sets_of(fam).items():
            s: dict[str, Any] = {"family": fam, "table": table, "name": name, "type": typ}
            if flags:
                s["flags"] = flags
            cmds.append({"add": {"set": s}})
        cmds.append({"add": {"chain": {"family": fam, "table": table, "name": BLOCK_CHAIN}}})
        policy = policy_rules(log_group(table)) if fam == POLICY_FAMILY else {}
        for chain in policy:
            cmds.append({"add": {"chain": {"family": fam, "table": table, "name": chain}}})
        for hook in BASE_CHAINS[fam]:
            cmds.append({"add": {"chain": {"family": fam, "table": table, "name": hook, "type": "filter",
                                           "hook": hook, "prio": HOOK_PRIORITY, "policy": "accept"}}})
        # add rule appends: flush first so a restart never doubles the rules.
        for chain in (BLOCK_CHAIN, *policy, *BASE_CHAINS[fam]):
            cmds.append({"flush": {"chain": {"family": fam, "table": table, "name": chain}}})
        for comment, matches in block_rules():
            cmds.append({"add": {"rule": {"family": fam, "table": table, "chain": BLOCK_CHAIN, "comment": comment,
                                          "expr": [*matches, {"counter": None}, {"drop": None}]}}})
        for chain, rules in policy.items():
            for comment, matches, verdict in rules:
                rule: dict[str, Any] = {"family": fam, "table": table, "chain": chain, "expr": [*matches, *verdict]}
                if comment:
                    rule["comment"] = comment
                cmds.append({"add": {"rule": rule}})
        for hook in BASE_CHAINS[fam]:
            # Blocks first (they drop every packet), then the default-deny of new connections.
            for target in (BLOCK_CHAIN, *policy.keys() & {POLICY_CHAIN}):
                cmds.append({"add": {"rule": {"family": fam, "table": table, "chain": hook,
                                              "expr": [{"jump": {"target": target}}]}}})
    return cmds


def delete_table_commands(table: str, families: Iterable[str] = FAMILIES) -> list[dict[str, Any]]:
    return [{"delete": {"table": {"family": fam, "name": table}}} for fam in families]


# -- elements --------------------------------------------------------------------------------
def _net_json(cidr: str) -> Any:
    net = ipaddress.ip_network(cidr, strict=False)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def element_json(set_name: str, element: Element) -> Any:
    kinds = POLICY_SHAPES.get(set_name)
    if kinds is not None:
        parts = [_net_json(x) if k == "net" else x for k, x in zip(kinds, element)]
        return parts[0] if len(parts) == 1 else {"concat": parts}
    if set_name.startswith("blkp"):
        addr, net, proto, port = element
        return {"concat": [addr, _net_json(net), proto, port]}
    if set_name.startswith("blk"):
        addr, net = element
        return {"concat": [addr, _net_json(net)]}
    if set_name.startswith("threat"):
        return _net_json(element[0])
    return element[0]


def element_commands(verb: str, table: str, changes: dict[str, Iterable[Element]],
                     families: Iterable[str] = FAMILIES) -> list[dict[str, Any]]:
    """`add` or `delete` element commands for each set with changes, in every family."""
    cmds: list[dict[str, Any]] = []
    for set_name, elements in changes.items():
        items = [element_json(set_name, e) for e in sorted(elements, key=_sort_key)]
        if not items:
            continue
        for fam in families:
            if set_name not in sets_of(fam):
                continue
            cmds.append({verb: {"element": {"family": fam, "table": table, "name": set_name, "elem": items}}})
    return cmds


def replace_commands(table: str, desired: Ruleset, families: Iterable[str] = FAMILIES) -> list[dict[str, Any]]:
    """Empty every set and fill it with `desired` (in one transaction with whatever precedes)."""
    families = tuple(families)
    cmds: list[dict[str, Any]] = [{"flush": {"set": {"family": fam, "table": table, "name": name}}}
                                  for fam in families for name in sets_of(fam)]
    return cmds + element_commands("add", table, {k: v for k, v in desired.items()}, families)


@dataclass(slots=True)
class Diff:
    add: dict[str, set[Element]]
    delete: dict[str, set[Element]]

    @property
    def empty(self) -> bool:
        return not any(self.add.values()) and not any(self.delete.values())

    def count(self) -> tuple[int, int]:
        return sum(map(len, self.add.values())), sum(map(len, self.delete.values()))


def diff(current: Ruleset, desired: Ruleset) -> Diff:
    add: dict[str, set[Element]] = {}
    delete: dict[str, set[Element]] = {}
    for name in ALL_SETS:
        have, want = current.get(name, frozenset()), desired.get(name, frozenset())
        if want - have:
            add[name] = set(want - have)
        if have - want:
            delete[name] = set(have - want)
    return Diff(add, delete)


def diff_commands(table: str, d: Diff, families: Iterable[str] = FAMILIES) -> list[dict[str, Any]]:
    # Deletions first: a replaced element (e.g. a wider network) would otherwise overlap.
    families = tuple(families)
    return element_commands("delete", table, d.delete, families) + element_commands("add", table, d.add, families)


# -- reading the kernel back -------------------------------------------------------------------
def _net_from_json(value: Any) -> str:
    if isinstance(value, dict) and "prefix" in value:
        p = value["prefix"]
        return str(ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False))
    if isinstance(value, dict) and "range" in value:
        lo, hi = value["range"]
        nets = list(ipaddress.summarize_address_range(ipaddress.ip_address(lo), ipaddress.ip_address(hi)))
        if len(nets) != 1:
            raise ValueError(f"range {lo}-{hi} is not one network")
        return str(nets[0])
    return str(ipaddress.ip_network(str(value), strict=False))


def _proto_from_json(value: Any) -> int:
    if isinstance(value, int):
        return value
    return PROTO_NUMBERS.get(str(value), -1) if not str(value).isdigit() else int(value)


def parse_element(set_name: str, raw: Any) -> Element:
    """An element as listed by libnftables -> the tuple `element_json` was made from."""
    if isinstance(raw, dict) and "elem" in raw:  # an element with a counter or timeout
        raw = raw["elem"].get("val")
    kinds = POLICY_SHAPES.get(set_name)
    if kinds is not None:
        parts = raw["concat"] if len(kinds) > 1 else [raw]
        conv: dict[str, Callable[[Any], Any]] = {"addr": lambda x: str(ipaddress.ip_address(x)),
                                                 "net": _net_from_json, "proto": _proto_from_json, "port": int}
        return tuple(conv[k](x) for k, x in zip(kinds, parts))
    if set_name.startswith("blk"):
        parts = raw["concat"]
        addr = str(ipaddress.ip_address(parts[0]))
        net = _net_from_json(parts[1])
        if set_name.startswith("blkp"):
            return (addr, net, _proto_from_json(parts[2]), int(parts[3]))
        return (addr, net)
    if set_name.startswith("threat"):
        return (_net_from_json(raw),)
    return (str(ipaddress.ip_address(raw)),)


def parse_listing(listing: list[dict[str, Any]]) -> tuple[Ruleset, dict[str, int]]:
    """Set elements and rule counters (by comment) of one family's table listing."""
    sets: dict[str, set[Element]] = {name: set() for name in ALL_SETS}
    counters: dict[str, int] = {}
    for item in listing:
        if "set" in item:
            s = item["set"]
            if s.get("name") in sets:
                for raw in s.get("elem", []) or []:
                    sets[s["name"]].add(parse_element(s["name"], raw))
        elif "rule" in item:
            r = item["rule"]
            comment = r.get("comment")
            if comment:
                for e in r.get("expr", []):
                    if isinstance(e, dict) and isinstance(e.get("counter"), dict):
                        counters[comment] = counters.get(comment, 0) + int(e["counter"].get("packets", 0))
    return {k: frozenset(v) for k, v in sets.items()}, counters


def _sort_key(e: Element) -> tuple[str, ...]:
    return tuple(str(x) for x in e)


def proto_name(number: int) -> str:
    return PROTO_NAMES.get(number, str(number))
