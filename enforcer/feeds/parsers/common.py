"""What every parser fills: a ParseResult of validated indicators and a count of bad lines.

Parsers only split a format into candidate values; the checks live here, once, so an IP
from a STIX pattern is held to the same rules as an IP from a plain list. Addresses are
kept as integers (`start << 8 | prefix length`) so that a million of them cost megabytes,
not hundreds of megabytes, and sort cheaply when the index is built.
"""

from __future__ import annotations

import socket
from array import array
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import urlsplit

from ..models import HASH_BY_LENGTH

MAX_SAMPLES = 5  # bad lines kept (cut short) to say what was wrong
URL_SCHEMES = ("http", "https", "ftp", "tcp", "udp")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_HASH_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64}  # hex digits

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_pton = socket.inet_pton


@dataclass(slots=True)
class ParseResult:
    v4: array = field(default_factory=lambda: array("Q"))  # start << 8 | prefix length
    v6: list[int] = field(default_factory=list)  # start << 8 | prefix length
    ip_urls: dict[tuple[int, int], str] = field(default_factory=dict)  # (4|6, address) -> URL it came from
    domains: set[str] = field(default_factory=set)  # listed names: subdomains match too
    url_hosts: dict[str, str] = field(default_factory=dict)  # host of a listed URL -> the URL (exact host)
    hashes: dict[str, list[bytes]] = field(default_factory=lambda: {"sha256": [], "md5": [], "sha1": []})
    lines: int = 0  # candidate entries looked at (comments and blank lines not counted)
    rejected: int = 0
    samples: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return (len(self.v4) + len(self.v6) + len(self.domains) + len(self.url_hosts)
                + sum(len(v) for v in self.hashes.values()))

    def reject(self, line: str) -> None:
        self.rejected += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(line[:120])

    # -- addresses ------------------------------------------------------------------------
    def add_ip(self, text: str, url: str = "") -> bool:
        """An address or CIDR, v4 or v6. Host bits under the mask are cleared (as ipset does)."""
        addr, slash, plen_text = text.partition("/")
        try:
            if ":" in addr:
                value = int.from_bytes(_pton(_AF_INET6, addr), "big")
                bits = 128
            else:
                value = int.from_bytes(_pton(_AF_INET, addr), "big")
                bits = 32
        except (OSError, ValueError):
            return False
        if slash:
            if not plen_text.isdigit() or len(plen_text) > 3:
                return False
            plen = int(plen_text)
            if plen > bits:
                return False
            value &= ~((1 << (bits - plen)) - 1)
        else:
            plen = bits
        if bits == 32:
            self.v4.append(value << 8 | plen)
            if url and plen == 32:
                self.ip_urls.setdefault((4, value), url)
        else:
            mapped = value >> 32 == 0xFFFF and plen >= 96
            if mapped:  # ::ffff:a.b.c.d is an IPv4 address
                self.v4.append((value & 0xFFFFFFFF) << 8 | (plen - 96))
                return True
            self.v6.append(value << 8 | plen)
            if url and plen == 128:
                self.ip_urls.setdefault((6, value), url)
        return True

    def add_ip_port(self, text: str, url: str = "") -> bool:
        """An address with an optional port (ThreatFox `ip:port`, `[v6]:port`); the port is ignored."""
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
                return False
            return self.add_ip(host, url)
        if text.count(":") == 1:
            host, _, port = text.partition(":")
            if not port.isdigit():
                return False
            return self.add_ip(host, url)
        return self.add_ip(text, url)

    # -- names ----------------------------------------------------------------------------
    def add_domain(self, text: str) -> bool:
        name = normalise_domain(text)
        if name is None:
            return False
        self.domains.add(name)
        return True

    def add_url(self, text: str) -> bool:
        """A URL: its host is what a container can be seen reaching (DNS name or address)."""
        text = text.strip()
        if "://" not in text:
            return False
        try:
            parts = urlsplit(text)
            host = parts.hostname or ""
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            return False
        if parts.scheme.lower() not in URL_SCHEMES or not host:
            return False
        if self.add_ip(host, url=text):
            return True
        name = normalise_domain(host)
        if name is None:
            return False
        self.url_hosts.setdefault(name, text)
        return True

    # -- hashes ---------------------------------------------------------------------------
    def add_hash(self, text: str, algorithm: str = "") -> bool:
        """A hex digest; `algorithm` ("sha256", "md5", "sha1") insists on that length."""
        text = text.strip()
        if algorithm and len(text) != _HASH_LENGTH[algorithm]:
            return False
        if len(text) not in (32, 40, 64) or " " in text:
            return False
        try:
            digest = bytes.fromhex(text)
        except ValueError:
            return False
        self.hashes[HASH_BY_LENGTH[len(digest)]].append(digest)
        return True


def normalise_domain(text: str) -> str | None:
    """A lower-case DNS name without the trailing dot, or None if it is not a usable one.

    A single label (`com`) is refused: listing it would match every name under it.
    A leading `*.` (wildcard) is dropped: a listed name matches its subdomains anyway.
    """
    name = text.strip().lower().rstrip(".")
    if name.startswith("*."):
        name = name[2:]
    if not name or len(name) > 253:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = name.split(".")
    if len(labels) < 2:
        return None
    for label in labels:
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return None
        if not _HOST_CHARS.issuperset(label):
            return None
    if labels[-1].isdigit():  # an IPv4 address, not a name
        return None
    return name


def strip_comment(line: str) -> str:
    """The line without a `#` or `;` comment and surrounding space."""
    for mark in ("#", ";"):
        cut = line.find(mark)
        if cut != -1:
            line = line[:cut]
    return line.strip()


def iter_lines(body: bytes, chunk: int = 1 << 18) -> Iterator[str]:
    """The body's lines, split a slice at a time: one `splitlines()` of a million-line
    body holds the GIL for a quarter second, and parsing runs beside the event loop."""
    text = decode(body)
    start = 0
    while start < len(text):
        end = text.find("\n", start + chunk)
        end = len(text) if end == -1 else end + 1
        yield from text[start:end].splitlines()
        start = end


def decode(body: bytes) -> str:
    """Feed bodies are text; a stray invalid byte must not lose the whole feed."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    return body.decode("utf-8", errors="replace")


class FeedFormatError(Exception):
    """The body is not this format at all (not one bad line: the whole thing); one line."""
