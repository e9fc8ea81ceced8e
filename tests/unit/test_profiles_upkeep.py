"""A profile's upkeep, through the real socket of the rig's daemon: seeded entries never
used while the profile learned (marked, shown, exported, pruned) and allowed entries
carried over to a new image digest's profile."""

from __future__ import annotations

import re

import pytest

from enforcer.protocol import ProtocolError
from enforcer.sensors.events import ExecEvent, FileEvent, NetworkEvent
from support.rig import Rig

SHA = "a" * 64


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path / "rig", learn_seconds=3600.0)
    r.compose("shop", {"web": {"expose": [{"port": 8080}], "depends_on": ["db", "cache"]},
                       "db": {"expose": [{"port": 5432}]}, "cache": {"expose": [{"port": 6379}]}})
    await r.start()
    yield r
    await r.stop()


def _entry(profile, kind, key):
    return profile.entries[kind][key]


async def _learned(rig):
    """web reaches db (a declared link, used) and never cache (declared, never used), and
    never listens on its declared port."""
    web = rig.container("shop_web_1", "shop", "web", ip="10.5.0.2")
    db = rig.container("shop_db_1", "shop", "db", ip="10.5.0.4")
    rig.container("shop_cache_1", "shop", "cache", ip="10.5.0.5")
    await rig.feed(ExecEvent(container_id=web.id, path="/usr/bin/httpd", sha256=SHA, argv=["httpd"]),
                   NetworkEvent(container_id=web.id, direction="out", proto="tcp", remote_ip="10.5.0.4",
                                remote_port=5432),
                   NetworkEvent(container_id=db.id, direction="in", proto="tcp", remote_ip="10.5.0.2",
                                local_port=5432, remote_port=40000))
    return web, db


async def test_seeds_used_while_learning_are_marked_and_the_rest_shown_as_never_used(rig):
    web, db = await _learned(rig)
    p = rig.profiles.for_container(web.id).profile
    assert _entry(p, "peer", "out tcp shop/db 5432").used
    assert not _entry(p, "peer", "out tcp shop/cache 6379").used
    assert not _entry(p, "listener", "tcp/8080").used
    assert _entry(rig.profiles.for_container(db.id).profile, "peer", "in tcp shop/web 5432").used
    view = (await rig.call("profile", target=web.name))["profile"]
    peers = {e["key"]: e for e in view["entries"]["peer"]}
    assert peers["out tcp shop/db 5432"]["used"] is True and "never_used" not in peers["out tcp shop/db 5432"]
    assert peers["out tcp shop/cache 6379"]["used"] is False and peers["out tcp shop/cache 6379"]["never_used"]
    assert view["never_used"] == 2  # the link to cache, the listener
    # A learned entry is used by definition.
    assert all(e["used"] for e in view["entries"]["process"])
    # The use is stored: a restart keeps it.
    await rig.restart()
    p = rig.profiles.for_container(web.id).profile
    assert _entry(p, "peer", "out tcp shop/db 5432").used and not _entry(p, "peer", "out tcp shop/cache 6379").used
    assert [e.key for e in p.never_used()] == ["tcp/8080", "out tcp shop/cache 6379"]


async def test_a_seeded_listener_and_written_prefix_are_used_when_seen(rig):
    rig.image("sha256:vol", {"Volumes": {"/data": {}}, "ExposedPorts": {"9000/tcp": {}}})
    c = rig.container("solo_app_1", "solo", "app", image_id="sha256:vol")
    p = rig.profiles.for_container(c.id).profile
    assert {e.key for e in p.never_used()} >= {"tcp/9000", "/data/"}
    await rig.feed(NetworkEvent(container_id=c.id, direction="listen", proto="tcp", local_port=9000),
                   FileEvent(container_id=c.id, op="write", path="/data/x/y.db"))
    assert _entry(p, "listener", "tcp/9000").used and _entry(p, "file", "/data/").used


async def test_export_marks_never_used_seeds_and_round_trips(rig, tmp_path):
    await _learned(rig)
    first = (await rig.call("profile.export", target="shop"))["yaml"]
    assert first.count("never_used: true") >= 2
    other = Rig(tmp_path / "other", learn_seconds=3600.0)
    await other.start()
    try:
        await other.call("profile.import", text=first, name="shop.yml")
        assert (await other.call("profile.export", target="shop"))["yaml"] == first
        p = next(p for p in other.profiles.profiles.values() if p.service == "web")
        assert [e.key for e in p.never_used()] == ["tcp/8080", "out tcp shop/cache 6379"]
    finally:
        await other.stop()
    with pytest.raises(ProtocolError) as e:  # only a seed can be never used
        await rig.call("profile.import", text=re.sub(r"( *)origin: learned", r"\1origin: learned\n\1never_used: true",
                                                     first, count=1))
    assert e.value.code == "bad_request" and "never_used" in str(e.value)


async def test_prune_removes_exactly_the_never_used_seeds_and_the_link_then_alerts(rig):
    web, db = await _learned(rig)
    cache = next(c for c in rig.containers if c.service == "cache")
    with pytest.raises(ProtocolError) as e:
        await rig.call("profile.prune", target=web.name)
    assert e.value.code == "conflict" and "still learning" in str(e.value)
    p = rig.profiles.for_container(web.id).profile
    rig.profiles.activate(p)
    dry = await rig.call("profile.prune", target=web.name, dry_run=True)
    assert dry["dry_run"] and [(r["kind"], r["key"]) for r in dry["removed"]] == [
        ("listener", "tcp/8080"), ("peer", "out tcp shop/cache 6379")]
    assert "out tcp shop/cache 6379" in p.entries["peer"]  # a dry run changes nothing
    done = await rig.call("profile.prune", target=web.name)
    assert done["removed"] == dry["removed"] and not done["dry_run"]
    assert "out tcp shop/cache 6379" not in p.entries["peer"] and "tcp/8080" not in p.entries["listener"]
    assert "out tcp shop/db 5432" in p.entries["peer"] and p.never_used() == []
    audit = [a for a in await rig.call("audit") if a["action"] == "profile.prune"]
    assert sorted(a["result"][:30] for a in audit) == ["error: profile %d of shop_web_1" % p.id, "ok", "ok"]
    assert all(a["target"] == web.name for a in audit)
    # Gone from the store too, and the link that was never used is now an incident.
    await rig.restart()
    assert "out tcp shop/cache 6379" not in rig.profiles.for_container(web.id).profile.entries["peer"]
    await rig.feed(NetworkEvent(container_id=web.id, direction="out", proto="tcp", remote_ip="10.5.0.5",
                                remote_port=6379))
    alerts = await rig.alerts_of(web, kind="network")
    assert [a["subject"] for a in alerts] == ["out tcp shop/cache 6379"], alerts
    assert (await rig.call("profile.prune", target=web.name))["removed"] == []
    assert cache.id


async def test_pruned_seeds_travel_with_the_profile_file(rig, tmp_path):
    web, _ = await _learned(rig)
    rig.profiles.activate(rig.profiles.for_container(web.id).profile)
    await rig.call("profile.prune", target=web.name)
    text = (await rig.call("profile.export", target=web.name))["yaml"]
    assert "pruned:\n  listener:\n  - tcp/8080\n  peer:\n  - out tcp shop/cache 6379\n" in text
    # Another host running the same app: after the import, its seeding does not bring them back.
    other = Rig(tmp_path / "other", learn_seconds=3600.0)
    other.compose("shop", {"web": {"expose": [{"port": 8080}], "depends_on": ["db", "cache"]},
                           "db": {"expose": [{"port": 5432}]}, "cache": {"expose": [{"port": 6379}]}})
    await other.start()
    try:
        web2 = other.container("shop_web_1", "shop", "web", ip="10.6.0.2")
        await other.call("profile.import", text=text)
        p = other.profiles.for_container(web2.id).profile
        other.container("shop_web_2", "shop", "web", ip="10.6.0.3")  # seeding again
        assert "out tcp shop/cache 6379" not in p.entries["peer"] and "tcp/8080" not in p.entries["listener"]
        assert (await other.call("profile.export", target=web2.name))["yaml"] == text
        await other.restart()
        p = other.profiles.for_container(web2.id).profile
        assert ("peer", "out tcp shop/cache 6379") in p.pruned and "out tcp shop/cache 6379" not in p.entries["peer"]
    finally:
        await other.stop()
    with pytest.raises(ProtocolError) as e:
        await rig.call("profile.import", text=text.replace("  listener:\n  - tcp/8080", "  nope:\n  - x", 1))
    assert e.value.code == "bad_request" and "pruned" in str(e.value)


async def test_relearn_watches_the_seeds_again(rig):
    web, _ = await _learned(rig)
    p = rig.profiles.for_container(web.id).profile
    rig.profiles.relearn(p)
    assert not _entry(p, "peer", "out tcp shop/db 5432").used  # to be seen again
    await rig.restart()
    p = rig.profiles.for_container(web.id).profile
    assert not _entry(p, "peer", "out tcp shop/db 5432").used


async def _denied_peer(rig, web):
    await rig.feed(NetworkEvent(container_id=web.id, direction="out", proto="tcp", remote_ip="203.0.113.9",
                                remote_port=443))
    return [a for a in await rig.alerts_of(web, kind="network") if not a["resolved"]]


async def test_carry_copies_what_was_allowed_to_the_new_digest(rig):
    web, _ = await _learned(rig)
    old = rig.profiles.for_container(web.id).profile
    rig.profiles.activate(old)
    [alert] = await _denied_peer(rig, web)
    await rig.call("allow", alert_id=alert["id"])
    # Redeployed on a new image: a new profile, learning, without the allowance.
    rig.remove(web)
    web2 = rig.container("shop_web_1b", "shop", "web", image_id="sha256:img2", ip="10.5.0.2")
    new = rig.profiles.for_container(web2.id).profile
    assert new is not old and "out tcp 203.0.113.9 443" not in new.entries["peer"]
    rig.profiles.activate(new)
    assert len(await _denied_peer(rig, web2)) == 1
    dry = await rig.call("profile.carry", target=web2.name, dry_run=True)
    assert dry["from_digest"] == "sha256:img1" and [r["key"] for r in dry["carried"]] == ["out tcp 203.0.113.9 443"]
    assert "out tcp 203.0.113.9 443" not in new.entries["peer"]
    out = await rig.call("profile.carry", **{"target": web2.name, "from": "sha256:img1"})
    assert out["carried"][0]["alert_id"] == alert["id"] and out["carried"][0]["by"]
    e = new.entries["peer"]["out tcp 203.0.113.9 443"]
    assert e.source == "allowed" and e.data["carried_from"] == "sha256:img1" and e.data["alert_id"] == alert["id"]
    before = {a["id"]: a["count"] for a in await rig.alerts_of(web2, kind="network")}
    await rig.feed(NetworkEvent(container_id=web2.id, direction="out", proto="tcp", remote_ip="203.0.113.9",
                                remote_port=443))
    assert {a["id"]: a["count"] for a in await rig.alerts_of(web2, kind="network")} == before  # no longer alerts
    view = (await rig.call("profile", target=web2.name))["profile"]
    assert any(x["data"].get("carried_from") == "sha256:img1" for x in view["entries"]["peer"])
    # Carried entries survive export -> import -> export.
    text = (await rig.call("profile.export", target=web2.name))["yaml"]
    assert "carried_from: sha256:img1" in text
    await rig.call("profile.import", text=text)
    assert (await rig.call("profile.export", target=web2.name))["yaml"] == text
    # Undoing the allowance takes it out of both profiles, carried copy included.
    undo = await rig.call("disallow", alert_id=alert["id"])
    assert sorted(undo["profiles"]) == sorted([old.id, new.id])
    assert "out tcp 203.0.113.9 443" not in new.entries["peer"] and "out tcp 203.0.113.9 443" not in old.entries["peer"]
    # Nothing left to carry; an unknown digest is one clear line.
    assert (await rig.call("profile.carry", target=web2.name))["carried"] == []
    with pytest.raises(ProtocolError) as err:
        await rig.call("profile.carry", **{"target": web2.name, "from": "sha256:nope"})
    assert err.value.code == "not_found" and "no other profile of image" in str(err.value)


async def test_carry_without_an_earlier_profile_says_so(rig):
    web, _ = await _learned(rig)
    with pytest.raises(ProtocolError) as e:
        await rig.call("profile.carry", target=web.name)
    assert e.value.code == "not_found" and "no profile of an earlier image" in str(e.value)


# -- sockets alive now count as use ------------------------------------------------------------
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0200050A:B3B0 0400050A:1538 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0200050A:1F90 0900050A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue
   0: 0000000000000000FFFF00000200050A:B3B2 0000000000000000FFFF00000500050A:18EB 01 00000000:00000000
"""


def test_socket_tables_are_read_as_listeners_and_connections_in_and_out():
    from enforcer.profiles.sockets import uses

    names = {"10.5.0.4": "shop/db", "10.5.0.5": "shop/cache", "10.5.0.9": "shop/lb"}
    found = uses({"tcp": (TCP, False), "tcp6": (TCP6, True), "udp": ("  sl local\n", False)},
                 lambda ip: names.get(ip, ip))
    assert found[0] == ("listener", ("tcp/8080",))
    keys = {k for kind, ks in found if kind == "peer" for k in ks[:1]}
    assert keys == {"out tcp shop/db 5432", "in tcp shop/lb 8080", "out tcp shop/cache 6379"}


def test_the_sockets_of_a_real_process_are_read():
    """This process's own namespace: a listener and a connection it holds show up."""
    import os
    import socket

    from enforcer.profiles.sockets import read_tables, uses

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    try:
        found = uses(read_tables(os.getpid()), lambda ip: "loopback")
        assert ("listener", (f"tcp/{port}",)) in found
        assert any(kind == "peer" and keys[0] == f"out tcp loopback {port}" for kind, keys in found)
    finally:
        client.close()
        server.close()


async def test_what_the_sockets_use_at_activation_and_at_prune_is_never_pruned(rig):
    web, _ = await _learned(rig)
    live: list = []
    rig.profiles.sockets = lambda c: list(live) if c.id == web.id else []
    p = rig.profiles.for_container(web.id).profile
    # httpd listened before the container was known: only its socket says so.
    live.append(("listener", ("tcp/8080",)))
    rig.profiles.activate(p)
    assert _entry(p, "listener", "tcp/8080").used
    # A connection pool to cache, opened at start and held: in use at prune time.
    live.append(("peer", p.peer_keys("out", "tcp", "shop/cache", 6379)))
    assert (await rig.call("profile.prune", target=web.name, dry_run=True))["removed"] == []
    assert _entry(p, "peer", "out tcp shop/cache 6379").used
