"""The socket server on a real unix socket: framing, errors, roles, audit, slow subscribers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from console.client import EnforcerClient, Unreachable
from enforcer.protocol import ProtocolError
from enforcer.server import OpError, Request, Server, SocketInUse


async def start_server(tmp_path, **kwargs) -> Server:
    audited: list[tuple] = []

    async def auditor(peer, op, target, args, result):
        audited.append((peer.uid, op, target, result))

    server = Server(str(tmp_path / "s.sock"), auditor=auditor, **kwargs)
    server.audited = audited  # type: ignore[attr-defined]

    async def echo(req: Request):
        return {"args": req.args}

    async def change(req: Request):
        if req.args.get("target") == "missing":
            raise OpError("no container 'missing' on this host", "not_found")
        return {"changed": req.args.get("target")}

    async def crash(req: Request):
        raise ZeroDivisionError("boom")

    server.register("echo", echo)
    server.register("change", change, mutates=True)
    server.register("crash", crash)
    await server.start()
    return server


async def raw_exchange(path: str, payload: bytes, expect: int = 1) -> list[dict]:
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
    writer.write(payload)
    await writer.drain()
    out = []
    for _ in range(expect):
        line = await asyncio.wait_for(reader.readline(), 5)
        if not line:
            break
        out.append(json.loads(line))
    writer.close()
    return out


async def test_socket_is_0660(tmp_path):
    server = await start_server(tmp_path)
    assert oct(os.stat(server.path).st_mode & 0o777) == "0o660"
    await server.stop()
    assert not os.path.exists(server.path)


async def test_bad_requests_get_one_line_errors_and_the_connection_survives(tmp_path):
    server = await start_server(tmp_path)
    lines = b"".join([
        b"not json\n",
        b"[1, 2]\n",
        b'{"id": 1}\n',
        b'{"id": 2, "op": "nope"}\n',
        b'{"id": {"x": 1}, "op": "echo"}\n',
        b'{"id": 3, "op": "crash"}\n',
        b'{"id": 4, "op": "echo", "x": "\\u001b[31m"}\n',
    ])
    replies = await raw_exchange(server.path, lines, expect=7)
    by_id = {r["id"]: r for r in replies if r["id"] is not None}
    anonymous = [r for r in replies if r["id"] is None]
    assert {r["code"] for r in anonymous} == {"bad_request"} and len(anonymous) == 3
    assert by_id[1]["code"] == "bad_request" and "op" in by_id[1]["error"]
    assert by_id[2]["code"] == "unknown_op"
    assert by_id[3]["code"] == "failed" and "boom" in by_id[3]["error"]
    assert by_id[4]["ok"] and by_id[4]["result"]["args"]["x"] == "\x1b[31m"
    for r in replies:
        assert "\n" not in r.get("error", "")
    await server.stop()


async def test_oversize_request_is_refused(tmp_path):
    server = await start_server(tmp_path)
    reader, writer = await asyncio.open_unix_connection(server.path)
    writer.write(b'{"id": 1, "op": "echo", "x": "' + b"a" * (2 << 20) + b'"}\n')
    try:
        await writer.drain()
    except ConnectionResetError:
        pass  # the server stops reading once the line is too long
    reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert reply["code"] == "bad_request" and "longer than" in reply["error"]
    # The connection survives: the rest of that line is skipped, the next request served.
    writer.write(b'{"id": 2, "op": "echo"}\n')
    reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert reply["id"] == 2 and reply["ok"]
    writer.close()
    await server.stop()


async def test_replies_are_matched_by_id_and_mutations_are_audited(tmp_path):
    server = await start_server(tmp_path)
    client = EnforcerClient(server.path)
    hello = await client.connect()
    assert hello["protocol"] == 1 and hello["role"] == "admin"
    results = await asyncio.gather(*(client.call("echo", n=i) for i in range(50)))
    assert [r["args"]["n"] for r in results] == list(range(50))
    assert await client.call("change", target="web") == {"changed": "web"}
    with pytest.raises(ProtocolError) as err:
        await client.call("change", target="missing")
    assert err.value.code == "not_found"
    assert server.audited == [(0, "change", "web", "ok"), (0, "change", "missing", "error: no container 'missing' on this host")]
    await client.close()
    await server.stop()


async def test_subscribers_get_events_and_a_slow_one_gets_an_overflow_notice(tmp_path, monkeypatch):
    monkeypatch.setattr("enforcer.server.server.CLIENT_QUEUE", 10)
    server = await start_server(tmp_path)
    client = EnforcerClient(server.path)
    await client.connect()
    assert await client.subscribe(["alert"]) == ["alert"]
    server.publish("inventory", {"ignored": True})
    for i in range(500):  # no await: the pump cannot run, the queue (10) overflows
        server.publish("alert", {"n": i})
    events = []
    async for ev in client.events():
        events.append(ev)
        if ev["event"] == "alert" and ev["data"]["n"] >= 9:
            break
    kinds = [e["event"] for e in events]
    assert "inventory" not in kinds
    assert server.events_dropped == 490
    # Later publishes arrive after an overflow notice that counts the gap.
    server.publish("alert", {"n": 1000})
    ev = await asyncio.wait_for(client._events.get(), 2)
    assert ev == {"event": "overflow", "data": {"dropped": 490}}
    ev = await asyncio.wait_for(client._events.get(), 2)
    assert ev["data"] == {"n": 1000}
    await client.close()
    await server.stop()


async def test_a_second_enforcer_on_the_same_socket_is_refused(tmp_path):
    server = await start_server(tmp_path)
    with pytest.raises(SocketInUse, match="in use by a running enforcer"):
        await Server(server.path).start()
    await server.stop()


async def test_a_stale_socket_file_is_reclaimed(tmp_path):
    path = str(tmp_path / "s.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the file stays, nobody listens
    server = Server(path)
    await server.start()
    client = EnforcerClient(path)
    await client.connect()
    await client.close()
    await server.stop()


async def test_a_path_that_is_not_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.sock"
    path.write_text("precious")
    with pytest.raises(SocketInUse, match="not a socket"):
        await Server(str(path)).start()
    assert path.read_text() == "precious"


async def test_unreachable_enforcer_is_one_clear_line(tmp_path):
    client = EnforcerClient(str(tmp_path / "none.sock"))
    with pytest.raises(Unreachable, match="cannot reach the enforcer at .*none.sock"):
        await client.connect()


async def test_a_user_outside_the_groups_is_refused():
    # pytest's tmp_path is 0700 under root: use a folder that user nobody can traverse.
    tmp_path = Path(tempfile.mkdtemp(prefix="stockade-test-"))
    os.chmod(tmp_path, 0o755)
    server = await start_server(tmp_path)
    os.chmod(server.path, 0o666)  # let nobody connect, so that the role check is what refuses
    code = (
        "import asyncio, os, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "from console.client import EnforcerClient\n"
        "from enforcer.protocol import ProtocolError\n"
        "async def main():\n"
        "    c = EnforcerClient(sys.argv[1])\n"
        "    try:\n"
        "        await c.connect()\n"
        "    except ProtocolError as e:\n"
        "        print(e.code, e)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, server.path,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert out.decode().startswith("forbidden"), err.decode()
    assert "may not use Stockade" in out.decode()
    await server.stop()
    shutil.rmtree(tmp_path)
