"""`sha256-list`, `md5-list`, `sha1-list`: one hex digest per line (MalwareBazaar's txt
exports, Prisma's custom malware feed). `#` comments; a digest of the wrong length for
the list is a bad line.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from .common import ParseResult, iter_lines

Parser = Callable[[bytes, "dict[str, object] | None"], ParseResult]


def parse_hashes(body: bytes, options: dict[str, object] | None = None, *, algorithm: str) -> ParseResult:
    result = ParseResult()
    add_hash = result.add_hash
    for raw in iter_lines(body):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        cut = line.find("#")
        if cut != -1:
            line = line[:cut].strip()
        result.lines += 1
        # Some lists add a file name after the digest (sha256sum's "DIGEST  name").
        entry = line.split(None, 1)[0] if line else ""
        if not add_hash(entry.lower(), algorithm):
            result.reject(raw)
    return result


parse_sha256: Parser = partial(parse_hashes, algorithm="sha256")
parse_md5: Parser = partial(parse_hashes, algorithm="md5")
parse_sha1: Parser = partial(parse_hashes, algorithm="sha1")
