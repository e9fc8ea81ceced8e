"""Sync against a real HTTP server on 127.0.0.1 and a real SQLite store: conditional
requests, and every bad answer keeping the last good set (also across a restart).

The one faked boundary is the socket server (publish is recorded instead of sent)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
from typing import Any, AsyncIterator

import pytest

from enforcer.config import Settings
from enforcer.feeds import FeedManager
from enforcer.feeds.fetch import FetchError, fetch
from enforcer.feeds.models import Feed, FeedHit
from enforcer.store import Store
from support.feed_server import FeedServer


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def publish(self, topic: str, data: Any) -> None:
        self.events.append((topic, data))


class ObservedManager(FeedManager):
    """A real FeedManager that keeps its store and what it published, for the assertions."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.published = Published()
        super().__init__(settings, store.feeds, self.published.publish)
        self.store = store


@pytest.fixture
def server(feed_server: FeedServer) -> FeedServer:
    return feed_server


async def start_manager(db_path: str, **settings: Any) -> ObservedManager:
    store = Store(db_path)
    await store.open()
    manager = ObservedManager(Settings(db=db_path, **settings), store)
    await manager.start()
    await asyncio.wait_for(manager.booted.wait(), 30)
    return manager


async def stop_manager(manager: ObservedManager) -> None:
    await manager.stop()
    await manager.store.close()


@pytest.fixture
async def manager(tmp_path) -> AsyncIterator[ObservedManager]:
    m = await start_manager(str(tmp_path / "s.db"))
    yield m
    await stop_manager(m)


async def add(manager: FeedManager, name: str, url: str, fmt: str = "ip-list", **kwargs: Any) -> Feed:
    # Interval long enough that the scheduler never runs during a test: syncs are explicit.
    return await manager.add(Feed(name=name, url=url, format=fmt, interval=3600, **kwargs))


async def test_first_sync_loads_then_304_keeps_the_set_without_a_body(manager, server):
    url = server.serve("/feodo.txt", fixture="feodo_ipblocklist.txt", etag='"abc"',
                       last_modified="Mon, 01 Jan 2024 12:00:00 GMT")
    await add(manager, "feodo", url)
    first = await manager.sync("feodo")
    assert (first.status, first.entries, first.rejected, first.dropped) == ("updated", 5, 1, 1)
    assert manager.match_ip("162.243.103.246").feed == "feodo"
    second = await manager.sync("feodo")
    assert second.status == "not_modified" and second.entries == 5
    requests = server.hits("/feodo.txt")
    assert "if-none-match" not in requests[0]
    assert requests[1]["if-none-match"] == '"abc"'
    assert requests[1]["if-modified-since"] == "Mon, 01 Jan 2024 12:00:00 GMT"
    feed = manager.feeds["feodo"]
    assert feed.status == "ok" and feed.etag == '"abc"' and feed.error == ""
    assert manager.match_ip("162.243.103.246") is not None
    published = [d for t, d in manager.published.events if t == "feed"]
    assert published and published[-1]["name"] == "feodo" and published[-1]["entries"] == 5


async def test_if_modified_since_alone_gets_a_304(manager, server):
    url = server.serve("/lm.txt", "5.5.5.5\n", last_modified="Tue, 02 Jan 2024 00:00:00 GMT")
    await add(manager, "lm", url)
    assert (await manager.sync("lm")).status == "updated"
    assert (await manager.sync("lm")).status == "not_modified"
    assert server.hits("/lm.txt")[1]["if-modified-since"] == "Tue, 02 Jan 2024 00:00:00 GMT"


async def test_a_changed_feed_is_swapped_in_whole(manager, server):
    url = server.serve("/f.txt", "5.5.5.5\n6.6.6.0/24\n", etag='"1"')
    await add(manager, "f", url)
    await manager.sync("f")
    server.serve("/f.txt", "7.7.7.7\n", etag='"2"')
    result = await manager.sync("f")
    assert result.status == "updated" and result.entries == 1 and result.swap_seconds >= 0
    assert manager.match_ip("5.5.5.5") is None and manager.match_ip("6.6.6.1") is None
    assert manager.match_ip("7.7.7.7").indicator == "7.7.7.7"


@pytest.mark.parametrize("fault,kwargs,reason", [
    ("500", {"status": 500}, "HTTP 500"),
    ("truncated", {"truncate": True}, "truncated"),
    ("wrong type", {"content_type": "text/html; charset=utf-8"}, "unexpected content type text/html"),
    ("empty", {"body": b""}, "empty feed"),
    ("garbage", {"body": b"<html>\n<p>Please log in</p>\n<p>to continue</p>\n5.5.5.5\n"}, "mostly garbage"),
    ("all private", {"body": b"10.0.0.0/8\n192.168.0.0/16\n"}, "private or reserved"),
])
async def test_a_bad_download_keeps_the_last_good_set_and_says_why(manager, server, fault, kwargs, reason):
    url = server.serve("/f.txt", "8.8.4.4\n9.9.9.0/24\n", etag='"good"')
    await add(manager, "f", url)
    assert (await manager.sync("f")).status == "updated"
    body = kwargs.pop("body", b"1.1.1.1\n" * 2000)
    server.serve("/f.txt", body, **kwargs)  # no ETag: a full answer comes back
    result = await manager.sync("f")
    assert result.status == "failed", fault
    assert reason in result.error
    feed = manager.feeds["f"]
    assert feed.status == "failed" and reason in feed.error
    assert feed.entries == 2 and feed.etag == '"good"'  # the last good set's numbers stand
    assert manager.match_ip("9.9.9.9").feed == "f"
    assert manager.match_ip("1.1.1.1") is None


async def test_oversize_bodies_are_refused_by_length_and_while_reading(manager, server):
    url = server.serve("/big.txt", "5.5.5.5\n" * 200)
    await add(manager, "big", url, max_bytes=1000)
    result = await manager.sync("big")
    assert result.status == "failed" and "over the 1000-byte cap" in result.error
    assert manager.match_ip("5.5.5.5") is None
    # No Content-Length to trust: the cap holds while reading (gzip would decode past it).
    bomb = gzip.compress(b"5.5.5.5\n" * 100_000)
    server.serve("/bomb.txt", bomb, headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match="over the 4096-byte cap"):
        await fetch(server.url("/bomb.txt"), max_bytes=4096)


async def test_redirects_are_followed_a_few_times_and_loops_refused(manager, server):
    server.serve("/data.txt", "5.5.5.5\n")
    server.serve("/old", status=301, location="/data.txt")
    await add(manager, "moved", server.url("/old"))
    assert (await manager.sync("moved")).status == "updated"
    assert manager.match_ip("5.5.5.5").feed == "moved"
    server.serve("/a", status=302, location="/b")
    server.serve("/b", status=302, location=server.url("/a"))
    await add(manager, "loop", server.url("/a"))
    result = await manager.sync("loop")
    assert result.status == "failed" and "redirect loop" in result.error
    for i in range(10):
        server.serve(f"/hop{i}", status=307, location=f"/hop{i + 1}")
    await add(manager, "long", server.url("/hop0"))
    result = await manager.sync("long")
    assert result.status == "failed" and "more than 5 redirects" in result.error


async def test_cannot_connect_is_a_one_line_error(manager, server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        await add(manager, "down", f"http://127.0.0.1:{port}/x")
        result = await manager.sync("down")
    assert result.status == "failed" and result.error.startswith("cannot connect")
    assert "\n" not in result.error


async def test_a_server_too_slow_to_answer_times_out_and_the_set_stays(manager, server):
    url = server.serve("/slow.txt", "5.5.5.5\n")
    await add(manager, "slow", url)
    await manager.sync("slow")
    server.serve("/slow.txt", "6.6.6.6\n", delay=3)
    manager.fetch_timeout = 0.5
    result = await manager.sync("slow")
    assert result.status == "failed" and result.error.startswith("timed out after 0.5 s")
    assert manager.match_ip("5.5.5.5").feed == "slow"


async def test_a_wrong_format_is_refused_and_the_old_set_kept(manager, server):
    url = server.serve("/s.json", fixture="stix_bundle.json")
    await add(manager, "stix", url, "stix")
    assert (await manager.sync("stix")).status == "updated"
    server.serve("/s.json", "not json at all\n" * 3)
    result = await manager.sync("stix")
    assert result.status == "failed" and "not a usable stix feed: not JSON" in result.error
    assert manager.match_domain("update.stix-bad.net").feed == "stix"


async def test_concurrent_syncs_of_one_feed_make_one_download(manager, server):
    url = server.serve("/f.txt", "5.5.5.5\n")
    await add(manager, "f", url)
    results = await asyncio.gather(*(manager.sync("f") for _ in range(5)))
    assert {r.status for r in results} == {"updated"}
    assert len(server.hits("/f.txt")) == 1


async def test_restart_loads_the_last_good_body_without_downloading(tmp_path, server):
    db = str(tmp_path / "s.db")
    url = server.serve("/mb.txt", fixture="malwarebazaar_sha256.txt", etag='"e1"')
    m = await start_manager(db)
    await add(m, "mb", url, "sha256-list")
    await m.sync("mb")
    server.serve("/mb.txt", status=500)
    assert (await m.sync("mb")).status == "failed"
    await stop_manager(m)

    before = len(server.requests)
    m = await start_manager(db)
    try:
        eicar = hashlib.sha256(b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*").hexdigest()
        assert m.match_hash(eicar).feed == "mb"
        feed = m.feeds["mb"]
        assert feed.status == "failed" and "HTTP 500" in feed.error and feed.entries == 7
        assert len(server.requests) == before or all("if-none-match" in h for _, h in server.requests[before:])
    finally:
        await stop_manager(m)


async def test_disabled_feeds_are_neither_fetched_nor_matched(manager, server):
    url = server.serve("/f.txt", "5.5.5.5\n")
    feed = await add(manager, "f", url, enabled=False)
    await asyncio.sleep(1.5)  # a scheduler tick
    assert server.hits("/f.txt") == []
    await manager.change(feed, enabled=True)
    assert (await manager.sync("f")).status == "updated"
    await manager.change(feed, enabled=False)
    assert manager.match_ip("5.5.5.5") is None
    await manager.change(feed, enabled=True)  # back from the stored body, no download
    assert manager.match_ip("5.5.5.5").feed == "f"
    assert len(server.hits("/f.txt")) == 1


async def test_marking_a_feed_local_reloads_it_with_private_ranges(manager, server):
    url = server.serve("/lab.txt", fixture="local_lab.txt")
    feed = await add(manager, "lab", url)
    result = await manager.sync("lab")
    assert result.status == "failed" and "mark the feed local" in result.error
    await manager.change(feed, local=True)
    assert (await manager.sync("lab")).status == "updated"
    assert manager.match_ip("10.66.1.1").indicator == "10.66.0.0/16"
    assert manager.feeds["lab"].dropped == 0


async def test_scheduled_sync_runs_on_its_interval(manager, server):
    url = server.serve("/f.txt", "5.5.5.5\n", etag='"x"')
    await manager.add(Feed(name="sched", url=url, format="ip-list", interval=10))
    feed = manager.feeds["sched"]
    for _ in range(50):
        if manager.match_ip("5.5.5.5"):
            break
        await asyncio.sleep(0.1)
    assert manager.match_ip("5.5.5.5").feed == "sched"  # never synced: due at once
    feed.last_attempt -= 11  # as if ten seconds had passed
    for _ in range(50):
        if len(server.hits("/f.txt")) >= 2:
            break
        await asyncio.sleep(0.1)
    assert len(server.hits("/f.txt")) == 2 and server.hits("/f.txt")[1]["if-none-match"] == '"x"'


async def test_record_hit_is_kept_published_and_folded_per_minute(manager, server):
    url = server.serve("/f.txt", "5.5.5.5\n")
    await add(manager, "f", url)
    await manager.sync("f")
    hit = manager.match_ip("5.5.5.5")
    assert isinstance(hit, FeedHit)
    manager.record_hit(hit, "web_1", "c" * 64, 17)
    manager.record_hit(hit, "web_1", "c" * 64, 17)  # a repeat within the minute: counted only
    manager.record_hit(hit, "db_1", "d" * 64, 18)
    hits = [d["hit"] for t, d in manager.published.events if t == "feed" and "hit" in d]
    assert [h["container"] for h in hits] == ["web_1", "db_1"]
    assert hits[0] | {"time": None} == {"time": None, "feed": "f", "indicator": "5.5.5.5", "type": "ip",
                                         "matched": "5.5.5.5", "container": "web_1", "container_id": "c" * 64,
                                         "alert_id": 17}
    assert manager.feeds["f"].hits == 3
    assert await manager.store.db.flush()
    rows = await manager.store.feeds.recent_hits()
    assert [r["container"] for r in rows] == ["db_1", "web_1"]
    assert (await manager.store.feeds.get("f")).hits == 3


async def test_abusech_key_goes_to_abusech_hosts_only(tmp_path):
    m = await start_manager(str(tmp_path / "s.db"), abusech_auth_key="sekrit")
    try:
        headers = m._auth_headers("urlhaus")
        assert headers("https://urlhaus.abuse.ch/downloads/csv_online/") == {"Auth-Key": "sekrit"}
        assert headers("https://cdn.elsewhere.example/abuse.ch/x") == {}
        assert headers("https://notabuse.ch/x") == {}
        assert m.describe(m.feeds["urlhaus"])["auth_key"] is True
        assert "sekrit" not in repr(m.describe(m.feeds["urlhaus"]))
    finally:
        await stop_manager(m)


async def test_what_the_config_no_longer_says_is_undone_at_start(tmp_path, server):
    db = str(tmp_path / "s.db")
    url = server.serve("/mine.txt", "5.5.5.5\n")
    m = await start_manager(db, feeds={"mine": {"url": url, "format": "ip-list", "interval": 60},
                                       "feodotracker": {"enabled": True, "url": url}})
    assert m.feeds["mine"].source == "config" and m.feeds["mine"].enabled
    assert m.feeds["feodotracker"].enabled and m.feeds["feodotracker"].url == url
    assert m.feeds["feodotracker"].interval == 1800  # the catalogue's, not below its floor
    await stop_manager(m)
    m = await start_manager(db)
    try:
        assert "mine" not in m.feeds
        assert await m.store.feeds.get("mine") is None
        # A catalogue feed whose table is gone is back to what the catalogue ships: disabled.
        feodo = m.feeds["feodotracker"]
        assert not feodo.enabled and feodo.url.startswith("https://feodotracker.") and not feodo.configured
    finally:
        await stop_manager(m)
