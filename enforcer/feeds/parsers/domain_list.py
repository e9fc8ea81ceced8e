"""`domain-list`: one DNS name per line; a listed name matches its subdomains too.

Also reads hosts-file lines (`0.0.0.0 evil.example`), the other common way block lists
of names are published, and ignores `#` comments.
"""

from __future__ import annotations

from .common import ParseResult, iter_lines, strip_comment

_SINKHOLES = frozenset(("0.0.0.0", "127.0.0.1", "::", "::1"))


def parse(body: bytes, options: dict[str, object] | None = None) -> ParseResult:
    result = ParseResult()
    for raw in iter_lines(body):
        line = raw.strip()
        if not line or line[0] in "#;!":
            continue
        words = strip_comment(line).split()
        if not words:
            continue
        if len(words) >= 2 and words[0] in _SINKHOLES:
            words = words[1:]
        result.lines += 1
        if len(words) != 1 or not result.add_domain(words[0]):
            result.reject(raw)
    return result
