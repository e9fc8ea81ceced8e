"""Threat feeds: registry, sync, parsing, and matching of IPs, domains and file hashes.

The detector calls `FeedManager.match_ip / match_domain / match_hash` (synchronous) for
every event and `record_hit` for what matched; enforcement reads `ip_networks()` and is
told of changes through `on_change`.
"""

from __future__ import annotations

from .manager import FeedManager
from .matcher import Matcher
from .models import FORMATS, Feed, FeedHit, SyncResult

__all__ = ["FeedManager", "Matcher", "Feed", "FeedHit", "SyncResult", "FORMATS"]
