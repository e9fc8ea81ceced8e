"""`stix`: STIX 2.1 bundles. Indicators whose pattern compares `ipv4-addr:value`,
`ipv6-addr:value` (`=` or `ISSUBSET` a CIDR), `domain-name:value`, `url:value` or
`file:hashes.'SHA-256'` (also MD5, SHA-1) are loaded.

A pattern is taken only if every comparison in it is one of those and they are joined by
OR: `[ipv4-addr:value = '1.2.3.4' AND network-traffic:dst_port = 443]` would over-match if
read as the address alone, so it counts as a bad entry. Revoked and expired indicators
are skipped (not bad); other object types are ignored.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ...models import parse_iso_time
from .common import FeedFormatError, ParseResult

_COMPARISON = re.compile(
    r"""(?P<path>[a-z0-9-]+:[A-Za-z0-9_.'"-]+)\s*(?P<op>=|ISSUBSET)\s*'(?P<value>(?:[^'\\]|\\.)*)'"""
)
_GLUE = re.compile(r"^(?:\s|\[|\]|\(|\)|\bOR\b|\x00)*$")
_HASH_NAMES = {"sha-256": "sha256", "sha256": "sha256", "md5": "md5", "sha-1": "sha1", "sha1": "sha1"}


def parse(body: bytes, options: dict[str, Any] | None = None) -> ParseResult:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise FeedFormatError(f"not JSON: {str(e)[:80]}") from None
    if isinstance(document, dict) and document.get("type") == "bundle":
        objects = document.get("objects")
    elif isinstance(document, dict) and document.get("type") == "indicator":
        objects = [document]
    elif isinstance(document, list):
        objects = document
    else:
        raise FeedFormatError("not a STIX bundle (no \"type\": \"bundle\")")
    if not isinstance(objects, list):
        raise FeedFormatError("STIX bundle without an objects list")
    result = ParseResult()
    now = time.time()
    for obj in objects:
        if not isinstance(obj, dict):
            result.lines += 1
            result.reject(str(obj))
            continue
        if obj.get("type") != "indicator":
            continue
        result.lines += 1
        if obj.get("revoked") is True or _expired(obj, now):
            result.lines -= 1
            continue
        pattern = obj.get("pattern")
        if obj.get("pattern_type", "stix") != "stix" or not isinstance(pattern, str) or not _load(result, pattern):
            result.reject(str(obj.get("id") or pattern)[:120] + f" {str(pattern)[:80]}")
    return result


def _expired(obj: dict[str, Any], now: float) -> bool:
    until = obj.get("valid_until")
    if not isinstance(until, str):
        return False
    try:
        return parse_iso_time(until) < now
    except ValueError:
        return False


def _load(result: ParseResult, pattern: str) -> bool:
    """Add every value of the pattern, or nothing (into a scratch result first)."""
    values: list[tuple[str, str]] = []
    rest = _COMPARISON.sub("\x00", pattern)
    if not _GLUE.match(rest):
        return False
    for m in _COMPARISON.finditer(pattern):
        kind = _kind(m.group("path"), m.group("op"))
        if kind is None:
            return False
        values.append((kind, re.sub(r"\\(.)", r"\1", m.group("value"))))
    if not values:
        return False
    scratch = ParseResult()
    for kind, value in values:
        ok = (scratch.add_ip(value) if kind == "ip" else scratch.add_domain(value) if kind == "domain"
              else scratch.add_url(value) if kind == "url" else scratch.add_hash(value.lower(), kind))
        if not ok:
            return False
    _merge(result, scratch)
    return True


def _kind(path: str, op: str) -> str | None:
    obj, _, prop = path.partition(":")
    if obj in ("ipv4-addr", "ipv6-addr") and prop == "value":
        return "ip"
    if op != "=":
        return None
    if obj == "domain-name" and prop == "value":
        return "domain"
    if obj == "url" and prop == "value":
        return "url"
    if obj == "file" and prop.startswith("hashes."):
        name = prop[len("hashes."):].strip("'\"").lower()
        return _HASH_NAMES.get(name)
    return None


def _merge(into: ParseResult, part: ParseResult) -> None:
    into.v4.extend(part.v4)
    into.v6.extend(part.v6)
    for key, url in part.ip_urls.items():
        into.ip_urls.setdefault(key, url)
    into.domains |= part.domains
    for host, url in part.url_hosts.items():
        into.url_hosts.setdefault(host, url)
    for algorithm, digests in part.hashes.items():
        into.hashes[algorithm].extend(digests)
