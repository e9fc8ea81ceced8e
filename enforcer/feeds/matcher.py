"""Matching against every loaded feed at once: what the detector calls for each event.

Synchronous and allocation-light: one parse of the observed value, then a bisect or a set
lookup per feed. The tuple of indexes is replaced whole when a feed changes, so a lookup
running between two events always sees one consistent set.
"""

from __future__ import annotations

import ipaddress
import socket
from .index import FeedIndex, sorted_in_buckets
from .models import HASH_BY_LENGTH, FeedHit

_pton = socket.inet_pton
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6


class Matcher:
    def __init__(self) -> None:
        self.indexes: tuple[FeedIndex, ...] = ()
        self._ip: tuple[FeedIndex, ...] = ()
        self._names: tuple[FeedIndex, ...] = ()
        self._hashes: tuple[FeedIndex, ...] = ()
        self.generation = 0  # bumped on every swap; enforcement resyncs its sets on change

    def install(self, indexes: dict[str, FeedIndex]) -> None:
        """Make exactly these indexes the ones matched (a few assignments: atomic for asyncio)."""
        ordered = tuple(indexes[name] for name in sorted(indexes))
        self._ip = tuple(i for i in ordered if i.has_ips)
        self._names = tuple(i for i in ordered if i.has_names)
        self._hashes = tuple(i for i in ordered if i.digests)
        self.indexes = ordered
        self.generation += 1

    # -- the matching API ----------------------------------------------------------------
    def match_ip(self, ip: str) -> FeedHit | None:
        if not self._ip:
            return None
        try:
            if ":" in ip:
                value = int.from_bytes(_pton(_AF_INET6, ip.partition("%")[0]), "big")
                if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d
                    family, value = 4, value & 0xFFFFFFFF
                else:
                    family = 6
            else:
                value = int.from_bytes(_pton(_AF_INET, ip), "big")
                family = 4
        except (OSError, ValueError, TypeError):
            return None
        for index in self._ip:
            hit = index.match_address(family, value, ip)
            if hit is not None:
                return hit
        return None

    def match_domain(self, name: str) -> FeedHit | None:
        if not self._names or not name:
            return None
        name = name.lower().rstrip(".")
        labels = name.split(".")
        # Every parent with at least two labels: single labels (TLDs) are never indexed.
        parents = [".".join(labels[i:]) for i in range(len(labels) - 1)]
        for index in self._names:
            hit = index.match_names(name, parents)
            if hit is not None:
                return hit
        return None

    def match_hash(self, hexdigest: str) -> FeedHit | None:
        if not self._hashes or len(hexdigest) not in (32, 40, 64):
            return None
        try:
            digest = bytes.fromhex(hexdigest)
        except (ValueError, TypeError):
            return None
        algorithm = HASH_BY_LENGTH[len(digest)]
        matched = hexdigest.lower()
        for index in self._hashes:
            hit = index.match_digest(digest, algorithm, matched)
            if hit is not None:
                return hit
        return None

    # -- export for enforcement ----------------------------------------------------------
    def ip_ranges(self) -> list[tuple[int, int, int, int]]:
        """Every listed address and CIDR of every loaded feed as (version, first, last,
        prefix length) integers, sorted and disjoint (a block listed inside another, or by
        two feeds, appears once): nftables interval-set elements or LPM-trie keys."""
        out: list[tuple[int, int, int, int]] = []
        for version, bits in ((4, 32), (6, 128)):
            keys: list[int] = []
            for index in self._ip:
                ranges = index.v4 if version == 4 else index.v6
                keys.extend(start << 8 | plen for start, plen in zip(ranges.starts, ranges.plens))
            covered = -1
            for key in sorted_in_buckets(keys, bits):
                start, plen = key >> 8, key & 0xFF
                end = start | ((1 << (bits - plen)) - 1)
                if start <= covered:
                    continue
                out.append((version, start, end, plen))
                covered = end
        return out

    def ip_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """ip_ranges() as ipaddress networks. For a million entries this takes seconds:
        call it from a worker thread (asyncio.to_thread) after on_change fires."""
        return [ipaddress.IPv4Network((start, plen)) if version == 4 else ipaddress.IPv6Network((start, plen))
                for version, start, _end, plen in self.ip_ranges()]
