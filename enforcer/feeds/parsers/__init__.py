"""Feed formats: each parser turns a downloaded body into a ParseResult (validated
indicators and the count of bad lines, which are skipped). `parse(format, body, columns)`
picks the parser; FeedFormatError means the body as a whole is not that format."""

from __future__ import annotations

from typing import Any, Callable

from . import csv_feed, domain_list, hash_list, ip_list, stix
from .common import FeedFormatError, ParseResult, normalise_domain

PARSERS: dict[str, Callable[[bytes, Any], ParseResult]] = {
    "ip-list": ip_list.parse,
    "domain-list": domain_list.parse,
    "sha256-list": hash_list.parse_sha256,
    "md5-list": hash_list.parse_md5,
    "sha1-list": hash_list.parse_sha1,
    "csv": csv_feed.parse,
    "stix": stix.parse,
}


def parse(fmt: str, body: bytes, columns: dict[str, Any] | None = None) -> ParseResult:
    try:
        parser = PARSERS[fmt]
    except KeyError:
        raise FeedFormatError(f"unknown feed format {fmt!r}") from None
    return parser(body, columns or {})


__all__ = ["PARSERS", "parse", "ParseResult", "FeedFormatError", "normalise_domain", "check_columns"]
check_columns = csv_feed.check_columns
