"""`ip-list`: one address or CIDR per line, v4 and v6, as FireHOL, Spamhaus DROP, Feodo
Tracker and Emerging Threats publish them.

`#` and `;` start comments (Spamhaus writes `1.10.16.0/20 ; SBL256894`); the first word of
what is left is the entry. Lines starting with `{` are Spamhaus DROP's JSON-lines format
(`{"cidr": "1.10.16.0/20", "sblid": ...}`, closed by a `{"type": "metadata", ...}` line).
A range `a.b.c.d-e.f.g.h` becomes the CIDRs that cover it exactly.
"""

from __future__ import annotations

import ipaddress
import json

from .common import ParseResult, iter_lines

MAX_RANGE_CIDRS = 64  # a "range" that needs more CIDRs than this is garbage, not a range


def parse(body: bytes, options: dict[str, object] | None = None) -> ParseResult:
    result = ParseResult()
    add_ip = result.add_ip
    for raw in iter_lines(body):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "{":
            _json_line(result, line)
            continue
        cut = min((i for i in (line.find("#"), line.find(";")) if i != -1), default=-1)
        if cut != -1:
            line = line[:cut]
        words = line.split()
        if not words:
            continue
        result.lines += 1
        entry = words[0]
        if add_ip(entry):
            continue
        if "-" in entry and _add_range(result, entry):
            continue
        result.reject(raw)
    return result


def _json_line(result: ParseResult, line: str) -> None:
    try:
        record = json.loads(line)
    except ValueError:
        result.lines += 1
        result.reject(line)
        return
    if not isinstance(record, dict):
        result.lines += 1
        result.reject(line)
        return
    if record.get("type") == "metadata":
        return
    result.lines += 1
    cidr = record.get("cidr")
    if not isinstance(cidr, str) or not result.add_ip(cidr.strip()):
        result.reject(line)


def _add_range(result: ParseResult, entry: str) -> bool:
    first, _, last = entry.partition("-")
    try:
        lo = ipaddress.ip_address(first.strip())
        hi = ipaddress.ip_address(last.strip())
        if lo.version != hi.version or hi < lo:
            return False
        networks = []
        for net in ipaddress.summarize_address_range(lo, hi):  # type: ignore[arg-type]
            networks.append(net)
            if len(networks) > MAX_RANGE_CIDRS:
                return False
    except ValueError:
        return False
    for net in networks:
        result.add_ip(str(net))
    return True
