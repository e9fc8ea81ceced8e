"""The records of the feeds layer: a feed of the registry, a hit, the outcome of a sync."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..models import FORMATS, FeedFormat  # noqa: F401 - defined with the data model (the CLI offers them too)

IndicatorType = Literal["ip", "cidr", "domain", "url", "sha256", "md5", "sha1"]
INDICATOR_TYPES: tuple[str, ...] = ("ip", "cidr", "domain", "url", "sha256", "md5", "sha1")

# Hash algorithm by digest length in bytes: how match_hash tells them apart.
HASH_BY_LENGTH: dict[int, str] = {16: "md5", 20: "sha1", 32: "sha256"}


@dataclass(slots=True, frozen=True)
class FeedHit:
    """One observed value found on a feed: what the detector turns into a `threat` alert.

    feed: the feed's name; indicator: the listed entry as the feed has it (an IP, a CIDR, a
    domain, a URL or a hash); type: the indicator's kind; matched: the value that was seen
    (the peer address, the queried name, the file's digest).
    """

    feed: str
    indicator: str
    type: str
    matched: str
    description: str = ""  # what the feed lists, e.g. "botnet command-and-control servers"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Feed:
    """A feed of the registry with its last sync, as stored and as the `feeds` op shows it."""

    name: str
    url: str
    format: str
    enabled: bool = True
    local: bool = False  # a feed of your own network: private ranges are kept
    interval: float = 3600.0  # seconds between scheduled syncs
    columns: dict[str, Any] = field(default_factory=dict)  # csv: indicator type -> column
    max_bytes: int = 0  # download cap; 0: the manager's default
    source: str = "user"  # user | catalogue | config
    configured: bool = False  # a [feeds.NAME] config table set some of it (it wins at start)
    description: str = ""
    created: float = 0.0
    last_sync: float | None = None  # last successful download (or 304)
    last_attempt: float | None = None
    status: str = "never"  # never | ok | not_modified | failed | disabled | loading
    etag: str = ""
    last_modified: str = ""
    entries: int = 0
    rejected: int = 0
    dropped: int = 0
    error: str = ""
    hits: int = 0

    def public(self, has_auth_key: bool = False) -> dict[str, Any]:
        """The `feeds` op shape (docs/protocol.md); secrets never leave the enforcer."""
        return {
            "name": self.name, "url": self.url, "format": self.format, "enabled": self.enabled,
            "local": self.local, "interval": self.interval, "last_sync": self.last_sync,
            "last_attempt": self.last_attempt, "status": self.status, "entries": self.entries,
            "rejected": self.rejected, "dropped": self.dropped, "error": self.error, "hits": self.hits,
            "columns": self.columns, "max_bytes": self.max_bytes, "source": self.source,
            "description": self.description, "auth_key": has_auth_key,
        }


@dataclass(slots=True)
class SyncResult:
    """What one sync of one feed did; the `feeds.sync` op returns a list of these."""

    name: str
    status: str  # updated | not_modified | failed | skipped
    entries: int = 0
    rejected: int = 0
    dropped: int = 0
    bytes: int = 0
    error: str = ""
    seconds: float = 0.0  # download + parse + swap
    swap_seconds: float = 0.0  # from the end of the download to the new set being matched

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
