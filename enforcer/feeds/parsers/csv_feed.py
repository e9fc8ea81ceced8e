"""`csv`: comma-separated exports such as abuse.ch's URLhaus, ThreatFox, MalwareBazaar and
Feodo Tracker, with a column mapping.

The mapping (`columns`) names, for each indicator type, the column holding it, by header
name or 0-based index: `{"url": "url"}`, `{"sha256": "sha256_hash", "md5": "md5_hash"}`.
A feed whose rows mix types (ThreatFox) maps `indicator` and `type` instead:
`{"indicator": "ioc_value", "type": "ioc_type"}`; the type column's words (`ip:port`,
`domain`, `url`, `sha256_hash`...) say how to read each row. `delimiter` is optional.

Without a mapping, the header decides: abuse.ch writes it as the last comment line before
the data (`# id,dateadded,url,...`), and well-known column names are recognised.
"""

from __future__ import annotations

import csv
from typing import Any, Callable

from .common import FeedFormatError, ParseResult, iter_lines

# Indicator types a column can be mapped to, and how a value of each is added.
COLUMN_TYPES = ("ip", "ip:port", "domain", "url", "sha256", "md5", "sha1", "hash")
MAPPING_KEYS = COLUMN_TYPES + ("indicator", "type", "delimiter")

# Header names of well-known exports -> indicator type.
KNOWN_COLUMNS: dict[str, str] = {
    "url": "url", "dst_ip": "ip", "ip_address": "ip", "ip": "ip", "ipv4": "ip", "ipv6": "ip",
    "domain": "domain", "hostname": "domain", "sha256_hash": "sha256", "sha256": "sha256",
    "md5_hash": "md5", "md5": "md5", "sha1_hash": "sha1", "sha1": "sha1",
}

# Words of a type column (ThreatFox `ioc_type` and the like) -> indicator type.
TYPE_WORDS: dict[str, str] = {
    "ip:port": "ip:port", "ip": "ip", "ipv4": "ip", "ipv6": "ip", "ipv4-addr": "ip", "ipv6-addr": "ip",
    "cidr": "ip", "domain": "domain", "hostname": "domain", "domain-name": "domain", "fqdn": "domain",
    "url": "url", "sha256_hash": "sha256", "sha256": "sha256", "md5_hash": "md5", "md5": "md5",
    "sha1_hash": "sha1", "sha1": "sha1",
}


def check_columns(columns: dict[str, Any]) -> str:
    """'' when the mapping can be used, else one line saying what is wrong with it."""
    if not isinstance(columns, dict):
        return "columns must be a mapping of indicator type to column"
    for key, value in columns.items():
        if key not in MAPPING_KEYS:
            return f"unknown column mapping key {key!r} (use {', '.join(MAPPING_KEYS)})"
        if key == "delimiter":
            if not isinstance(value, str) or len(value) != 1:
                return "delimiter must be one character"
        elif not (isinstance(value, str) and value) and not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1000):
            return f"column for {key} must be a header name or a 0-based index"
    if ("indicator" in columns) != ("type" in columns):
        return "map both indicator and type, or neither"
    return ""


def parse(body: bytes, options: dict[str, Any] | None = None) -> ParseResult:
    columns = dict(options or {})
    problem = check_columns(columns)
    if problem:
        raise FeedFormatError(problem)
    delimiter = columns.pop("delimiter", ",")
    header: list[str] | None = None
    data_lines: list[str] = []
    for raw in iter_lines(body):
        if not raw.strip():
            continue
        if raw.lstrip().startswith("#"):
            if not data_lines:  # the last comment line before the data may be the header
                text = raw.lstrip()[1:].strip()
                if delimiter in text:
                    header = _split(text, delimiter)
            continue
        data_lines.append(raw)
    if header is None and data_lines and not columns_are_indexes(columns):
        # A plain header line (no leading #), as most CSV files have.
        candidate = _split(data_lines[0], delimiter)
        if any(name.lower() in KNOWN_COLUMNS or name in columns.values() for name in candidate):
            header = candidate
            data_lines = data_lines[1:]
    plan = _plan(columns, header)
    result = ParseResult()
    for fields, raw in zip(csv.reader(data_lines, delimiter=delimiter, skipinitialspace=True), data_lines):
        result.lines += 1
        if not _row(result, plan, fields):
            result.reject(raw)
    return result


def columns_are_indexes(columns: dict[str, Any]) -> bool:
    return bool(columns) and all(isinstance(v, int) for k, v in columns.items())


def _split(text: str, delimiter: str) -> list[str]:
    return [f.strip() for f in next(csv.reader([text], delimiter=delimiter, skipinitialspace=True), [])]


Plan = tuple[list[tuple[int, str]], tuple[int, int] | None]


def _plan(columns: dict[str, Any], header: list[str] | None) -> Plan:
    """Column indexes to read: [(index, type)] and the (indicator, type) pair if mapped."""
    index_of = {name.lower(): i for i, name in enumerate(header or [])}

    def resolve(ref: Any) -> int:
        if isinstance(ref, int):
            return ref
        if ref.lower() in index_of:
            return index_of[ref.lower()]
        if ref.isdigit():
            return int(ref)
        raise FeedFormatError(f"column {ref!r} is not in the header" if header else
                              f"column {ref!r} named but the feed has no header line")

    if not columns:
        if header is None:
            raise FeedFormatError("csv feed has no header line: give a column mapping")
        lowered = [h.lower() for h in header]
        if "ioc_value" in lowered and "ioc_type" in lowered:
            return [], (lowered.index("ioc_value"), lowered.index("ioc_type"))
        typed = [(i, KNOWN_COLUMNS[h]) for i, h in enumerate(lowered) if h in KNOWN_COLUMNS]
        if not typed:
            raise FeedFormatError("no known indicator column in the csv header: give a column mapping")
        return typed, None
    pair = None
    if "indicator" in columns:
        pair = (resolve(columns["indicator"]), resolve(columns["type"]))
    typed = [(resolve(ref), kind) for kind, ref in columns.items() if kind in COLUMN_TYPES]
    return typed, pair


def _adder(result: ParseResult, kind: str) -> Callable[[str], bool]:
    if kind == "ip":
        return result.add_ip
    if kind == "ip:port":
        return result.add_ip_port
    if kind == "domain":
        return result.add_domain
    if kind == "url":
        return result.add_url
    if kind == "hash":
        return result.add_hash
    return lambda value: result.add_hash(value.lower(), kind)


def _row(result: ParseResult, plan: Plan, fields: list[str]) -> bool:
    typed, pair = plan
    added = 0
    for index, kind in typed:
        if index >= len(fields):
            return False
        value = fields[index].strip()
        if not value or value.lower() in ("n/a", "none", "null", "-"):
            continue
        if not _adder(result, kind)(value):
            return False
        added += 1
    if pair is not None:
        value_at, type_at = pair
        if max(value_at, type_at) >= len(fields):
            return False
        kind = TYPE_WORDS.get(fields[type_at].strip().lower())
        if kind is None or not _adder(result, kind)(fields[value_at].strip()):
            return False
        added += 1
    return added > 0
