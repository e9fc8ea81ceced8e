"""FeedManager: the feeds component. It keeps the registry, syncs feeds on their schedule
and on demand, loads each feed into an index and swaps it in, and answers the detector's
`match_*` calls.

A download that fails, is empty, is garbage or is too big changes nothing but the feed's
status and error: the last good set stays in force, and its body stays in SQLite so that a
restart loads it again without asking the publisher.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from ..models import iso_time
from .catalogue import FeedSpec, is_abusech, load_catalogue, merge_config, polite_interval
from .fetch import FetchError, fetch
from .index import FeedIndex, build_index
from .matcher import Matcher
from .models import Feed, FeedHit, SyncResult
from .parsers import FeedFormatError, parse
from .ranges import ProtectedRanges, host_networks

if TYPE_CHECKING:
    from ..config import Settings
    from ..ports import DockerCalls, Publish
    from ..store.feeds import FeedRepo

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 << 20
SCHEDULER_TICK = 1.0
FAILED_RETRY = 300.0  # after a failure, try again this soon (or at the interval if shorter)
CONCURRENT_SYNCS = 2
HIT_REPEAT_WINDOW = 60.0  # the same value from the same container: one hit row per minute
RECENT_HITS = 1000
PROTECTED_REFRESH = 60.0  # re-read this host's Docker networks at most this often


class FeedManager:
    def __init__(self, settings: "Settings", repo: "FeedRepo", publish: "Publish",
                 docker: "DockerCalls | None" = None) -> None:
        self.settings = settings
        self.repo = repo
        self.publish = publish
        self.docker = docker  # to read this host's own networks (never listed as threats)
        self.matcher = Matcher()
        self.catalogue: dict[str, FeedSpec] = {}
        self.specs: dict[str, FeedSpec] = {}
        self.feeds: dict[str, Feed] = {}  # the registry, cached (the store is the truth at start)
        self.indexes: dict[str, FeedIndex] = {}  # loaded feeds, by name
        self.recent_hits: deque[dict[str, Any]] = deque(maxlen=RECENT_HITS)
        self.fetch_timeout = 30.0
        self.fetch_deadline = 180.0
        self.default_max_bytes = DEFAULT_MAX_BYTES
        self._digests: dict[str, bytes] = {}  # sha256 of the body each index was built from
        self._inflight: dict[str, asyncio.Task[SyncResult]] = {}
        self._semaphore = asyncio.Semaphore(CONCURRENT_SYNCS)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._protected = ProtectedRanges.build()
        self._protected_at = 0.0
        self._last_hit: dict[tuple[str, str, str, str], float] = {}
        self._listeners: list[Callable[[], None]] = []
        self.booted = asyncio.Event()
        # httpx logs every request, httpcore and pyroute2 every step: not for the enforcer log.
        for noisy in ("httpx", "httpcore", "pyroute2"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    # -- the matching API (synchronous: called by the detector for every event) ----------
    def match_ip(self, ip: str) -> FeedHit | None:
        return self.matcher.match_ip(ip)

    def match_domain(self, name: str) -> FeedHit | None:
        return self.matcher.match_domain(name)

    def match_hash(self, hexdigest: str) -> FeedHit | None:
        return self.matcher.match_hash(hexdigest)

    def ip_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Every listed address/CIDR of every loaded feed, disjoint: for an nftables interval
        set or an LPM-trie BPF map. Call again (in a worker thread) after on_change fires."""
        return self.matcher.ip_networks()

    def ip_ranges(self) -> list[tuple[int, int, int, int]]:
        """The same as integers: (version, first, last, prefix length), sorted, disjoint."""
        return self.matcher.ip_ranges()

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every swap of the loaded sets (enforcement resyncs)."""
        self._listeners.append(callback)

    def record_hit(self, hit: FeedHit, container_name: str, container_id: str, alert_id: int | None) -> None:
        """Keep a hit for `feeds.hits` and announce it on topic `feed` (write-behind, no await)."""
        now = time.time()
        feed = self.feeds.get(hit.feed)
        if feed is not None:
            feed.hits += 1
        key = (hit.feed, hit.indicator, hit.matched, container_id)
        last = self._last_hit.get(key)
        if last is not None and now - last < HIT_REPEAT_WINDOW:
            self.repo.count_hit(hit.feed)
            return
        if len(self._last_hit) > 10_000:
            self._last_hit = {k: t for k, t in self._last_hit.items() if now - t < HIT_REPEAT_WINDOW}
        self._last_hit[key] = now
        data = {"time": iso_time(now), "feed": hit.feed, "indicator": hit.indicator, "type": hit.type,
                "matched": hit.matched, "container": container_name, "container_id": container_id,
                "alert_id": alert_id}
        self.repo.record_hit({**data, "time_epoch": now})
        self.recent_hits.appendleft(data)
        self.publish("feed", {"hit": data})

    # -- component life cycle -------------------------------------------------------------
    async def start(self) -> None:
        self.catalogue = load_catalogue()
        self.specs = merge_config(self.catalogue, self.settings.feeds)
        await self._reconcile()
        for row in reversed(await self.repo.recent_hits(RECENT_HITS)):
            row = dict(row)
            row["time"] = iso_time(row["time"])
            row.pop("id", None)
            self.recent_hits.appendleft(row)
        # Loading a million-entry feed takes seconds: the enforcer answers meanwhile.
        self._spawn(self._boot(), "feeds-boot")

    async def stop(self) -> None:
        for task in [*self._tasks, *self._inflight.values()]:
            task.cancel()
        for task in [*self._tasks, *self._inflight.values()]:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
        self._tasks.clear()
        self._inflight.clear()

    def status(self) -> dict[str, Any]:
        enabled = [f for f in self.feeds.values() if f.enabled]
        return {"feeds": {
            "enabled": len(enabled), "loaded": len(self.indexes),
            "entries": sum(i.entries for i in self.indexes.values()),
            "failed": sum(1 for f in enabled if f.status == "failed"),
            "hits": sum(f.hits for f in self.feeds.values()),
        }}

    async def _reconcile(self) -> None:
        """Bring the registry in line with the catalogue and the config."""
        repo = self.repo
        stored = {f.name: f for f in await repo.all()}
        for name, feed in list(stored.items()):
            # A feed the config (or an older catalogue) defined, and no longer does: gone.
            if feed.source in ("config", "catalogue") and name not in self.specs:
                log.info("feeds: %s is no longer in the %s: removed", name, feed.source)
                await repo.remove(name)
                del stored[name]
        for name, spec in self.specs.items():
            feed = stored.get(name)
            if feed is None:
                feed = Feed(name=name, url=spec.url, format=spec.format, enabled=spec.enabled, local=spec.local,
                            interval=polite_interval(spec.url, spec.interval, self.catalogue, name), columns=spec.columns,
                            max_bytes=spec.max_bytes, source=spec.source, configured=bool(spec.configured),
                            description=spec.description, created=time.time())
                await repo.add(feed)
                stored[name] = feed
                continue
            if feed.source == "user" and not spec.configured:
                continue  # a person's own feed of the same name as a catalogue one: theirs wins
            wanted: dict[str, Any] = {"url": spec.url, "format": spec.format, "columns": spec.columns,
                                      "description": spec.description, "source": spec.source,
                                      "configured": bool(spec.configured)}
            if spec.configured:
                for key in ("enabled", "local", "interval", "max_bytes"):
                    if key in spec.configured:
                        wanted[key] = getattr(spec, key)
            elif feed.configured:
                # Its config table is gone: back to what the catalogue ships (disabled).
                wanted.update(enabled=spec.enabled, local=spec.local, interval=spec.interval, max_bytes=spec.max_bytes)
            wanted["interval"] = polite_interval(wanted["url"], wanted.get("interval", feed.interval), self.catalogue, name)
            changed = {k: v for k, v in wanted.items() if getattr(feed, k) != v}
            if changed:
                await repo.update_settings(name, **changed)
                for k, v in changed.items():
                    setattr(feed, k, v)
        self.feeds = stored

    async def _boot(self) -> None:
        try:
            await self._refresh_protected(force=True)
            for feed in list(self.feeds.values()):
                if feed.enabled:
                    await self._load_stored(feed)
            self._install()
        finally:
            self.booted.set()
        self._scheduler = self._spawn(self._schedule(), "feeds-scheduler")

    async def _load_stored(self, feed: Feed) -> None:
        body = await self.repo.last_body(feed.name)
        if body is None:
            return
        try:
            index = await asyncio.to_thread(self._compile, feed, body, self._protected_for(feed))
        except FeedFormatError as e:
            log.warning("feeds: stored body of %s no longer parses: %s", feed.name, e)
            return
        self.indexes[feed.name] = index
        self._digests[feed.name] = await asyncio.to_thread(_sha256, body)
        log.info("feeds: %s loaded from the store: %d entries", feed.name, index.entries)

    # -- scheduling -----------------------------------------------------------------------
    async def _schedule(self) -> None:
        while True:
            now = time.time()
            for feed in list(self.feeds.values()):
                if feed.enabled and feed.name not in self._inflight and self._due(feed, now):
                    self._spawn(self.sync(feed.name), f"feeds-sync-{feed.name}")
            await asyncio.sleep(SCHEDULER_TICK)

    @staticmethod
    def _due(feed: Feed, now: float) -> bool:
        if feed.last_attempt is None:
            return True
        wait = min(feed.interval, FAILED_RETRY) if feed.status == "failed" else feed.interval
        return now >= feed.last_attempt + wait

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("feeds: %s failed: %r", task.get_name(), task.exception())

    # -- sync -----------------------------------------------------------------------------
    async def sync(self, name: str) -> SyncResult:
        """Sync one feed now; a sync of it already running is joined, not repeated."""
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.create_task(self._sync(name), name=f"feeds-sync-{name}")
            self._inflight[name] = task
            task.add_done_callback(lambda t, n=name: self._inflight.pop(n, None) if self._inflight.get(n) is t else None)
        # Shielded: a client that hangs up does not abort a download half-way.
        return await asyncio.shield(task)

    async def _sync(self, name: str) -> SyncResult:
        async with self._semaphore:
            feed = self.feeds.get(name)
            if feed is None:
                return SyncResult(name=name, status="skipped", error="feed removed")
            started = time.monotonic()
            feed.last_attempt = time.time()
            loaded = name in self.indexes  # conditional requests only when we hold the body
            try:
                fetched = await fetch(
                    feed.url, etag=feed.etag if loaded else "", last_modified=feed.last_modified if loaded else "",
                    max_bytes=feed.max_bytes or self.default_max_bytes, timeout=self.fetch_timeout,
                    deadline=self.fetch_deadline, auth_headers=self._auth_headers(name))
            except FetchError as e:
                return await self._failed(feed, str(e), started)
            if fetched.status == "not_modified":
                return await self._succeeded(feed, None, started, "not_modified", fetched.etag or feed.etag,
                                             fetched.last_modified or feed.last_modified)
            downloaded = time.monotonic()
            digest = await asyncio.to_thread(_sha256, fetched.body)
            if loaded and self._digests.get(name) == digest:  # a server without validators
                return await self._succeeded(feed, None, started, "not_modified", fetched.etag, fetched.last_modified)
            await self._refresh_protected()
            try:
                index = await asyncio.to_thread(self._compile, feed, fetched.body, self._protected_for(feed))
            except FeedFormatError as e:
                return await self._failed(feed, f"not a usable {feed.format} feed: {e}", started)
            problem = _unusable(index, len(fetched.body))
            if problem:
                return await self._failed(feed, problem, started, index)
            if self.feeds.get(name) is not feed or not feed.enabled:
                return SyncResult(name=name, status="skipped", error="feed removed or disabled during sync")
            self.indexes[name] = index
            self._digests[name] = digest
            self._install()
            swap = time.monotonic() - downloaded
            feed.entries, feed.rejected, feed.dropped = index.entries, index.rejected, index.dropped
            result = await self._succeeded(feed, fetched.body, started, "updated", fetched.etag, fetched.last_modified)
            result.bytes = len(fetched.body)
            result.swap_seconds = swap
            log.info("feeds: %s updated: %d entries, %d bad lines, %d dropped (%.2f s to swap)",
                     name, index.entries, index.rejected, index.dropped, swap)
            return result

    def _compile(self, feed: Feed, body: bytes, protected: ProtectedRanges | None) -> FeedIndex:
        """Parse and index (runs on a worker thread: the loop keeps serving events)."""
        parsed = parse(feed.format, body, feed.columns)
        return build_index(feed.name, parsed, protected, feed.description)

    def _protected_for(self, feed: Feed) -> ProtectedRanges | None:
        return None if feed.local else self._protected

    async def _refresh_protected(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._protected_at < PROTECTED_REFRESH:
            return
        self._protected = ProtectedRanges.build(await host_networks(self.docker))
        self._protected_at = time.monotonic()

    def _install(self) -> None:
        self.matcher.install({n: i for n, i in self.indexes.items() if n in self.feeds and self.feeds[n].enabled})
        for callback in self._listeners:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a listener's bug must not stop a swap
                log.exception("feeds: change listener failed")

    def _auth_headers(self, name: str) -> Callable[[str], dict[str, str]]:
        def headers(url: str) -> dict[str, str]:
            if not is_abusech(url):
                return {}
            spec = self.specs.get(name)
            key = (spec.auth_key if spec else "") or self.settings.abusech_auth_key
            return {"Auth-Key": key} if key else {}
        return headers

    async def _succeeded(self, feed: Feed, body: bytes | None, started: float, status: str,
                         etag: str, last_modified: str) -> SyncResult:
        feed.last_sync = time.time()
        feed.status = "ok"
        feed.error = ""
        feed.etag, feed.last_modified = etag, last_modified
        await self._save(feed, body)
        return SyncResult(name=feed.name, status=status, entries=feed.entries, rejected=feed.rejected,
                          dropped=feed.dropped, seconds=time.monotonic() - started)

    async def _failed(self, feed: Feed, error: str, started: float, index: FeedIndex | None = None) -> SyncResult:
        feed.status = "failed"
        feed.error = error
        log.warning("feeds: %s: sync failed, keeping the last good set: %s", feed.name, error)
        await self._save(feed, None)
        result = SyncResult(name=feed.name, status="failed", error=error, seconds=time.monotonic() - started)
        if index is not None:
            result.entries, result.rejected, result.dropped = index.entries, index.rejected, index.dropped
        return result

    async def _save(self, feed: Feed, body: bytes | None) -> None:
        if self.feeds.get(feed.name) is not feed:
            return  # removed meanwhile
        try:
            await self.repo.record_sync(feed, body)
        except Exception as e:  # noqa: BLE001 - the set is in force; the store says why it lags
            log.warning("feeds: cannot store the sync of %s: %s", feed.name, e)
        self.publish("feed", self.describe(feed))

    # -- registry changes (called by the ops) ---------------------------------------------
    def describe(self, feed: Feed) -> dict[str, Any]:
        spec = self.specs.get(feed.name)
        has_key = bool((spec.auth_key if spec else "") or (self.settings.abusech_auth_key and is_abusech(feed.url)))
        data = feed.public(has_auth_key=has_key)
        data["loaded"] = feed.name in self.indexes
        return data

    async def add(self, feed: Feed) -> Feed:
        feed.interval = polite_interval(feed.url, feed.interval, self.catalogue, feed.name)
        feed.created = time.time()
        await self.repo.add(feed)
        self.feeds[feed.name] = feed
        return feed

    async def remove(self, name: str) -> None:
        task = self._inflight.pop(name, None)
        if task is not None:
            task.cancel()
        self.feeds.pop(name, None)
        self.indexes.pop(name, None)
        self._digests.pop(name, None)
        self._install()
        await self.repo.remove(name)

    async def change(self, feed: Feed, **values: Any) -> None:
        """enabled / local / interval: stored, then applied to what is matched."""
        if "interval" in values:
            values["interval"] = polite_interval(feed.url, values["interval"], self.catalogue, feed.name)
        await self.repo.update_settings(feed.name, **values)
        reload = "local" in values and values["local"] != feed.local
        for key, value in values.items():
            setattr(feed, key, value)
        if not feed.enabled:
            self.indexes.pop(feed.name, None)
            self._digests.pop(feed.name, None)
        elif reload or feed.name not in self.indexes:
            await self._refresh_protected()
            await self._load_stored(feed)
            if feed.name in self.indexes:
                index = self.indexes[feed.name]
                feed.entries, feed.rejected, feed.dropped = index.entries, index.rejected, index.dropped
                await self._save(feed, None)
        self._install()


def _sha256(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def _unusable(index: FeedIndex, size: int) -> str:
    """Why a parsed download must not replace the last good set, or ''."""
    if index.entries == 0:
        if index.dropped:
            return (f"no usable entries: all {index.dropped} are private or reserved ranges "
                    "(mark the feed local if it lists your own network)")
        if index.rejected:
            return f"no usable entries: {index.rejected} bad lines (first: {index.samples[0]!r})"
        return f"empty feed ({size} bytes, no entries)"
    if index.rejected > index.entries + index.dropped:
        return (f"mostly garbage: {index.rejected} bad lines, {index.entries} entries "
                f"(first bad: {index.samples[0]!r})")
    return ""
