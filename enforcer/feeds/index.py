"""One feed's indicators compiled for matching: no awaits, no allocation beyond the answer.

- Addresses and CIDRs: per family, sorted disjoint ranges (an array of starts and one of
  ends); a lookup is one C-level bisect. CIDRs either nest or are disjoint, so a range
  inside an earlier one adds nothing and is left out.
- Hashes: per algorithm, the digests sorted, their first 8 bytes in an array for the
  bisect, the full digests in one bytes blob to confirm (40 MB per million SHA-256).
- Domains: a set; a name is looked up with each of its parent names.

An index is immutable once built: the manager swaps a whole new index in (one assignment).
"""

from __future__ import annotations

import ipaddress
import socket
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Iterator

from .models import FeedHit
from .parsers.common import ParseResult
from .ranges import ProtectedRanges


class AddressRanges:
    """Disjoint [start, end] ranges of one address family, sorted by start."""

    __slots__ = ("bits", "starts", "ends", "plens")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        # 128-bit values do not fit an array: plain lists for v6.
        self.starts: array | list[int] = array("I") if bits == 32 else []
        self.ends: array | list[int] = array("I") if bits == 32 else []
        self.plens = array("B")

    def __len__(self) -> int:
        return len(self.plens)

    def find(self, value: int) -> int:
        """Index of the range holding value, or -1."""
        i = bisect_right(self.starts, value) - 1
        if i >= 0 and self.ends[i] >= value:
            return i
        return -1

    def network(self, i: int) -> str:
        start = self.starts[i]
        plen = self.plens[i]
        if self.bits == 32:
            text = socket.inet_ntop(socket.AF_INET, start.to_bytes(4, "big"))
        else:
            text = socket.inet_ntop(socket.AF_INET6, start.to_bytes(16, "big"))
        return text if plen == self.bits else f"{text}/{plen}"


def build_ranges(keys: "array | list[int]", bits: int, protected: ProtectedRanges | None) -> tuple[AddressRanges, int]:
    """Ranges from `start << 8 | prefix length` keys; returns them and the number dropped
    for overlapping protected space (None: a local feed, nothing dropped)."""
    ranges = AddressRanges(bits)
    starts_append = ranges.starts.append
    ends_append = ranges.ends.append
    plens_append = ranges.plens.append
    family = 4 if bits == 32 else 6
    overlaps = protected.overlaps if protected is not None else None
    dropped = 0
    covered_to = -1
    previous = -1
    # Sorted by start, then by prefix length: an enclosing CIDR comes before what it holds.
    for key in sorted_in_buckets(keys, bits):
        if key == previous:
            continue
        previous = key
        start = key >> 8
        plen = key & 0xFF
        end = start | ((1 << (bits - plen)) - 1)
        if overlaps is not None and overlaps(family, start, end):
            dropped += 1
            continue
        if start <= covered_to:
            continue
        starts_append(start)
        ends_append(end)
        plens_append(plen)
        covered_to = end
    return ranges, dropped


def sorted_in_buckets(keys: "array | list[int]", bits: int) -> Iterator[int]:
    """`sorted(keys)` in 256 slices by the top byte of the address. One C-level sort of a
    million values holds the GIL for most of a second, and this runs on a worker thread
    beside the event loop: small sorts let the loop in between."""
    buckets: list[list[int]] = [[] for _ in range(256)]
    shift = bits  # key = address << 8 | prefix length: the top byte is key >> bits
    for key in keys:
        buckets[key >> shift].append(key)
    for bucket in buckets:
        bucket.sort()
        yield from bucket


class DigestSet:
    """Sorted digests of one length: an 8-byte-prefix array to bisect, a blob to confirm."""

    __slots__ = ("size", "prefixes", "blob")

    def __init__(self, digests: list[bytes], size: int) -> None:
        self.size = size
        buckets: list[list[bytes]] = [[] for _ in range(256)]  # by first byte: short GIL holds
        for digest in digests:
            buckets[digest[0]].append(digest)
        unique = [d for bucket in buckets for d in sorted(set(bucket))]
        self.prefixes = array("Q", (int.from_bytes(d[:8], "big") for d in unique))
        self.blob = b"".join(unique)

    def __len__(self) -> int:
        return len(self.prefixes)

    def __contains__(self, digest: bytes) -> bool:
        prefix = int.from_bytes(digest[:8], "big")
        i = bisect_left(self.prefixes, prefix)
        size = self.size
        blob = self.blob
        prefixes = self.prefixes
        while i < len(prefixes) and prefixes[i] == prefix:  # rare: equal 64-bit prefixes
            if blob[i * size:(i + 1) * size] == digest:
                return True
            i += 1
        return False


@dataclass(slots=True)
class FeedIndex:
    name: str
    description: str = ""
    v4: AddressRanges = field(default_factory=lambda: AddressRanges(32))
    v6: AddressRanges = field(default_factory=lambda: AddressRanges(128))
    ip_urls: dict[tuple[int, int], str] = field(default_factory=dict)
    domains: frozenset[str] = frozenset()
    url_hosts: dict[str, str] = field(default_factory=dict)
    digests: dict[int, DigestSet] = field(default_factory=dict)  # digest length -> set
    entries: int = 0
    rejected: int = 0
    dropped: int = 0
    samples: list[str] = field(default_factory=list)

    @property
    def has_ips(self) -> bool:
        return bool(len(self.v4) or len(self.v6))

    @property
    def has_names(self) -> bool:
        return bool(self.domains or self.url_hosts)

    # -- matching (all synchronous, called per event) ------------------------------------
    def match_address(self, family: int, value: int, matched: str) -> FeedHit | None:
        ranges = self.v4 if family == 4 else self.v6
        i = ranges.find(value)
        if i < 0:
            return None
        if ranges.plens[i] == ranges.bits:
            url = self.ip_urls.get((family, value))
            if url:
                return FeedHit(self.name, url, "url", matched, self.description)
            return FeedHit(self.name, ranges.network(i), "ip", matched, self.description)
        return FeedHit(self.name, ranges.network(i), "cidr", matched, self.description)

    def match_names(self, name: str, parents: list[str]) -> FeedHit | None:
        """`parents`: name and each parent name (a.b.c -> a.b.c, b.c, c)."""
        url = self.url_hosts.get(name)
        if url is not None:
            return FeedHit(self.name, url, "url", name, self.description)
        domains = self.domains
        for candidate in parents:
            if candidate in domains:
                return FeedHit(self.name, candidate, "domain", name, self.description)
        return None

    def match_digest(self, digest: bytes, algorithm: str, matched: str) -> FeedHit | None:
        digests = self.digests.get(len(digest))
        if digests is not None and digest in digests:
            return FeedHit(self.name, matched, algorithm, matched, self.description)
        return None

    # -- export ---------------------------------------------------------------------------
    def networks(self) -> Iterator[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        for ranges, cls in ((self.v4, ipaddress.IPv4Network), (self.v6, ipaddress.IPv6Network)):
            for start, plen in zip(ranges.starts, ranges.plens):
                yield cls((start, plen))

    def intervals(self, family: int) -> tuple["array | list[int]", "array | list[int]"]:
        ranges = self.v4 if family == 4 else self.v6
        return ranges.starts, ranges.ends


def build_index(name: str, parsed: ParseResult, protected: ProtectedRanges | None,
                description: str = "") -> FeedIndex:
    """Compile a parse result. `protected` None means a local feed: nothing is dropped."""
    v4, dropped4 = build_ranges(parsed.v4, 32, protected)
    v6, dropped6 = build_ranges(parsed.v6, 128, protected)
    index = FeedIndex(name=name, description=description, v4=v4, v6=v6,
                      domains=frozenset(parsed.domains), url_hosts=dict(parsed.url_hosts),
                      rejected=parsed.rejected, dropped=dropped4 + dropped6, samples=list(parsed.samples))
    index.ip_urls = {key: url for key, url in parsed.ip_urls.items()
                     if (v4 if key[0] == 4 else v6).find(key[1]) >= 0}
    for algorithm, size in (("md5", 16), ("sha1", 20), ("sha256", 32)):
        if parsed.hashes[algorithm]:
            index.digests[size] = DigestSet(parsed.hashes[algorithm], size)
    index.entries = (len(v4) + len(v6) + len(index.domains) + len(index.url_hosts)
                     + sum(len(d) for d in index.digests.values()))
    return index
