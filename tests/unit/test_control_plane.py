"""The control plane's bounds, without an engine or a kernel resource: compose files read
only when they are small regular files, peer lookups bounded in time and threads, and
requests in flight bounded per connection (the real enforcer: tests/integration/test_redteam_control.py)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import pytest

from enforcer.inventory.compose import ComposeError, load_topology, read_regular
from enforcer.server import Request, Server
from enforcer.server import peers
from enforcer.server.peers import Identifier, LookupStalled


def far() -> float:
    return time.monotonic() + 5


def test_only_small_regular_files_are_read(tmp_path):
    good = tmp_path / "c.yml"
    good.write_text("services: {}\n")
    assert read_regular(str(good), 100, far()) == "services: {}\n"
    fifo = tmp_path / "f.yml"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(ComposeError, match="not a regular file \\(a FIFO\\)"):
        read_regular(str(fifo), 100, far())
    assert time.monotonic() - t0 < 1  # never waited for a writer
    with pytest.raises(ComposeError, match="a character device"):
        read_regular("/dev/zero", 100, far())
    with pytest.raises(ComposeError, match="a directory"):
        read_regular(str(tmp_path), 100, far())
    link = tmp_path / "l.yml"
    link.symlink_to(good)
    with pytest.raises(ComposeError, match="symbolic link"):
        read_regular(str(link), 100, far())
    with pytest.raises(ComposeError, match="13 bytes is more than 10"):
        read_regular(str(good), 10, far())
    with pytest.raises(ComposeError, match="took longer"):
        read_regular(str(good), 100, time.monotonic() - 1)
    with pytest.raises(ComposeError, match="cannot read"):
        read_regular(str(tmp_path / "missing.yml"), 100, far())


def test_a_hostile_dotenv_is_a_one_line_problem_and_a_missing_one_is_none(tmp_path):
    (tmp_path / "c.yml").write_text("services:\n  web:\n    image: x\n")
    assert load_topology("p", [str(tmp_path / "c.yml")], str(tmp_path)).error == ""
    os.mkfifo(tmp_path / ".env")
    topo = load_topology("p", [str(tmp_path / "c.yml")], str(tmp_path))
    assert "compose .env file" in topo.error and "FIFO" in topo.error and "\n" not in topo.error
    assert topo.services == {}


async def test_a_hung_lookup_refuses_within_the_deadline_and_holds_no_more_threads(monkeypatch):
    release = threading.Event()
    calls: list[int] = []

    def hung(uid, gid, admin_group, viewer_group):
        calls.append(uid)
        release.wait(10)
        return f"u{uid}", peers.VIEWER

    monkeypatch.setattr(peers, "user_and_role", hung)
    ident = Identifier("a", "v", deadline=0.2, max_lookups=2)
    t0 = time.monotonic()
    results = await asyncio.gather(*(ident.user_and_role(1000, 1000) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, LookupStalled) for r in results) and time.monotonic() - t0 < 1
    assert calls == [1000]  # one lookup shared by five connections of one identity
    with pytest.raises(LookupStalled):
        await ident.user_and_role(1001, 1001)
    with pytest.raises(LookupStalled, match="already waiting"):
        await ident.user_and_role(1002, 1002)  # two threads stuck: refused at once
    assert ident.status() == {"lookups_busy": 2, "lookups_stalled": 7}
    release.set()
    for _ in range(50):
        if ident.threads_busy == 0:
            break
        await asyncio.sleep(0.02)
    assert await ident.user_and_role(1000, 1000) == ("u1000", peers.VIEWER)  # the late answer is cached
    assert calls == [1000, 1001]


async def test_lookups_are_cached_briefly(monkeypatch):
    now = [100.0]
    calls: list[int] = []

    def lookup(uid, gid, admin_group, viewer_group):
        calls.append(uid)
        return "u", peers.ADMIN

    monkeypatch.setattr(peers, "user_and_role", lookup)
    ident = Identifier("a", "v", ttl=5, clock=lambda: now[0])
    for _ in range(3):
        await ident.user_and_role(7, 7)
    now[0] += 6
    await ident.user_and_role(7, 7)
    assert calls == [7, 7]


async def test_requests_in_flight_are_bounded_per_connection(tmp_path, monkeypatch):
    monkeypatch.setattr("enforcer.server.server.ADMIT_WAIT", 0.2)
    server = Server(str(tmp_path / "s.sock"), max_in_flight_client=3, max_in_flight_total=100)
    gate = asyncio.Event()

    async def stuck(req: Request):
        await gate.wait()
        return "done"

    server.register("stuck", stuck)
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(server.path)
        writer.write(b"".join(json.dumps({"id": i, "op": "stuck"}).encode() + b"\n" for i in range(5)))
        await writer.drain()
        busy = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(2)]
        assert [(b["id"], b["code"]) for b in busy] == [(3, "busy"), (4, "busy")]
        assert "at most 3" in busy[0]["error"]
        assert server.in_flight == 3 and server.busy_refused == 2
        assert server.status()["in_flight"] == 3
        gate.set()
        done = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(3)]
        assert sorted(d["id"] for d in done) == [0, 1, 2] and all(d["ok"] for d in done)
        assert server.in_flight == 0
        writer.close()
    finally:
        await server.stop()
