"""The enforcer's unix socket: JSON-lines requests, replies and subscription streams.

Components register the ops they serve. The server owns the cross-cutting rules: who
may call what (SO_PEERCRED roles), the audit record of every op that changes state,
one-line errors, and bounded per-client event queues so that a slow console can never
stall the enforcer (overflow is counted and announced, the client then resynchronises).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .. import protocol
from ..protocol import ProtocolError
from .peers import ADMIN, NONE, Peer, identify

log = logging.getLogger(__name__)

CLIENT_QUEUE = 10_000  # events buffered per subscriber before it counts as too slow


@dataclass(slots=True)
class Request:
    id: Any
    op: str
    args: dict[str, Any]
    peer: Peer
    client: Any = None  # the connection (for subscribe); opaque to handlers


Handler = Callable[[Request], Awaitable[Any]]
Auditor = Callable[[Peer, str, str, dict[str, Any], str], Awaitable[None]]


class OpError(ProtocolError):
    """Raised by handlers: becomes {"ok": false, "error": message, "code": code}."""


@dataclass(slots=True)
class _Op:
    handler: Handler
    mutates: bool
    target_arg: str


@dataclass(slots=True, eq=False)
class _Client:
    peer: Peer
    writer: asyncio.StreamWriter
    topics: set[str] = field(default_factory=set)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))
    dropped: int = 0
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SocketInUse(Exception):
    """Another enforcer answers on the socket path."""


class Server:
    def __init__(self, path: str, *, socket_group: str = "stockade", admin_group: str = "stockade-admin",
                 viewer_group: str = "stockade", auditor: Auditor | None = None) -> None:
        self.path = path
        self.socket_group = socket_group
        self.admin_group = admin_group
        self.viewer_group = viewer_group
        self.auditor = auditor
        self.ops: dict[str, _Op] = {}
        self.clients: set[_Client] = set()
        self._server: asyncio.base_events.Server | None = None
        self.started = time.time()
        self.requests_served = 0
        self.events_dropped = 0
        self.register("hello", self._hello)
        self.register("subscribe", self._subscribe)
        self.register("unsubscribe", self._unsubscribe)
        self.register("ping", self._ping)

    def register(self, op: str, handler: Handler, *, mutates: bool = False, target_arg: str = "target") -> None:
        """Serve `op` with `handler`. Ops that mutate need the admin role and are audited."""
        self.ops[op] = _Op(handler, mutates, target_arg)

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self._claim_path()
        old_umask = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve_client, path=self.path, limit=protocol.MAX_LINE
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        try:
            os.chown(self.path, 0, grp.getgrnam(self.socket_group).gr_gid)
        except (KeyError, PermissionError):
            pass  # no such group: root only
        self.started = time.time()

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for client in list(self.clients):
            client.writer.close()
        if self._server:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            # Only ours to remove: a refused start must not delete another enforcer's socket.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._server = None

    async def _claim_path(self) -> None:
        parent = os.path.dirname(self.path) or "."
        os.makedirs(parent, exist_ok=True)
        if not os.path.exists(self.path):
            return
        if not _is_socket(self.path):
            raise SocketInUse(f"socket path {self.path} exists and is not a socket")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 1.0)
        except (ConnectionRefusedError, FileNotFoundError, asyncio.TimeoutError, OSError):
            os.unlink(self.path)  # stale: left by an enforcer that did not stop cleanly
            return
        writer.close()
        raise SocketInUse(f"socket {self.path} is in use by a running enforcer")

    # -- events -------------------------------------------------------------------------
    def publish(self, topic: str, data: Any) -> None:
        """Send an event to every client subscribed to topic; never blocks."""
        message = {"event": topic, "data": data}
        for client in self.clients:
            if topic not in client.topics:
                continue
            queue = client.queue
            if client.dropped and queue.qsize() <= queue.maxsize - 2:
                # The notice sits exactly where the gap is, so the client knows what it missed.
                queue.put_nowait({"event": "overflow", "data": {"dropped": client.dropped}})
                client.dropped = 0
            if queue.full():
                client.dropped += 1
                self.events_dropped += 1
            else:
                queue.put_nowait(message)

    def has_subscribers(self, topic: str) -> bool:
        """Cheap check so that costly events (raw sensor events) are only built when wanted."""
        return any(topic in c.topics for c in self.clients)

    @property
    def subscriber_count(self) -> int:
        return sum(1 for c in self.clients if c.topics)

    # -- one connection -----------------------------------------------------------------
    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except Exception:  # noqa: BLE001 - asyncio would only print it; log it and drop the client
            log.exception("server: connection failed")
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            peer = identify(sock, self.admin_group, self.viewer_group)
        except OSError:
            writer.close()
            return
        client = _Client(peer=peer, writer=writer)
        if peer.role == NONE:
            log.warning("server: refused uid %d (pid %d): not root and not in group %s or %s",
                        peer.uid, peer.pid, self.viewer_group, self.admin_group)
            await self._send(client, {"id": None, "ok": False, "code": protocol.FORBIDDEN,
                                      "error": f"user {peer.user} (uid {peer.uid}) may not use Stockade: "
                                               f"not root and not in group {self.viewer_group} or {self.admin_group}"})
            writer.close()
            return
        self.clients.add(client)
        pump = asyncio.create_task(self._pump_events(client))
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError:
                    await self._send(client, {"id": None, "ok": False, "code": protocol.BAD_REQUEST,
                                              "error": f"request longer than {protocol.MAX_LINE} bytes"})
                    if not await _discard_line(reader):
                        break
                    continue
                if not line.strip():
                    continue
                t = asyncio.create_task(self._handle_line(client, line))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        except (ConnectionError, OSError):
            pass
        finally:
            self.clients.discard(client)
            pump.cancel()
            for t in tasks:
                t.cancel()
            writer.close()

    async def _handle_line(self, client: _Client, line: bytes) -> None:
        req_id: Any = None
        try:
            message = protocol.decode(line)
            req_id = message.get("id")
            if not isinstance(req_id, (int, str, type(None))) or isinstance(req_id, bool):
                req_id = None
                raise ProtocolError("id must be a number or a string", protocol.BAD_REQUEST)
            op_name = message.get("op")
            if not isinstance(op_name, str):
                raise ProtocolError("op must be a string", protocol.BAD_REQUEST)
            op = self.ops.get(op_name)
            if op is None:
                raise ProtocolError(f"unknown op {op_name[:64]!r}", protocol.UNKNOWN_OP)
            args = {k: v for k, v in message.items() if k not in ("id", "op")}
            request = Request(id=req_id, op=op_name, args=args, peer=client.peer, client=client)
            if op.mutates and client.peer.role != ADMIN:
                await self._audit(client.peer, op_name, args, op.target_arg, "refused: read-only user")
                raise ProtocolError(f"{op_name} changes state; user {client.peer.user} may only read",
                                    protocol.FORBIDDEN)
            self.requests_served += 1
            try:
                result = await op.handler(request)
            except ProtocolError as e:
                if op.mutates:
                    await self._audit(client.peer, op_name, args, op.target_arg, f"error: {e}")
                raise
            if op.mutates:
                await self._audit(client.peer, op_name, args, op.target_arg, "ok")
            reply = {"id": req_id, "ok": True, "result": result}
        except ProtocolError as e:
            reply = {"id": req_id, "ok": False, "error": _one_line(str(e)), "code": e.code}
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug in one op must not kill the connection
            log.exception("server: op failed")
            reply = {"id": req_id, "ok": False, "code": protocol.FAILED,
                     "error": f"internal error: {_one_line(str(e)) or type(e).__name__} (see the enforcer log)"}
        await self._send(client, reply)

    async def _audit(self, peer: Peer, op: str, args: dict[str, Any], target_arg: str, result: str) -> None:
        if self.auditor is None:
            return
        target = str(args.get(target_arg, ""))[:512]
        try:
            await self.auditor(peer, op, target, args, result)
        except Exception:  # noqa: BLE001 - auditing must not break the action's reply
            log.exception("server: audit failed")

    async def _pump_events(self, client: _Client) -> None:
        try:
            while True:
                await self._send(client, await client.queue.get())
        except (ConnectionError, OSError):
            pass

    async def _send(self, client: _Client, message: dict[str, Any]) -> None:
        async with client.write_lock:
            client.writer.write(protocol.encode(message))
            await client.writer.drain()

    # -- built-in ops -------------------------------------------------------------------
    async def _hello(self, req: Request) -> dict[str, Any]:
        from .. import __version__

        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "server": "stockade-enforcer",
            "version": __version__,
            "host": socket.gethostname(),
            "started": self.started,
            "uid": req.peer.uid,
            "user": req.peer.user,
            "role": req.peer.role,
            "ops": sorted(self.ops),
        }

    async def _ping(self, req: Request) -> dict[str, Any]:
        return {"time": time.time()}

    async def _subscribe(self, req: Request) -> dict[str, Any]:
        topics = req.args.get("topics", list(protocol.TOPICS))
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise OpError("topics must be a list of strings", protocol.BAD_REQUEST)
        unknown = [t for t in topics if t not in protocol.TOPICS]
        if unknown:
            raise OpError(f"unknown topic {unknown[0][:64]!r}; topics: {', '.join(protocol.TOPICS)}",
                          protocol.BAD_REQUEST)
        req.client.topics.update(topics)
        client = req.client
        return {"topics": sorted(client.topics)}

    async def _unsubscribe(self, req: Request) -> dict[str, Any]:
        client = req.client
        topics = req.args.get("topics") or list(client.topics)
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise OpError("topics must be a list of strings", protocol.BAD_REQUEST)
        client.topics.difference_update(topics)
        return {"topics": sorted(client.topics)}


async def _discard_line(reader: asyncio.StreamReader) -> bool:
    """Skip the rest of an oversize line; False if the stream ended first."""
    while True:
        try:
            await reader.readuntil(b"\n")
            return True
        except asyncio.LimitOverrunError as e:
            await reader.readexactly(e.consumed)
        except asyncio.IncompleteReadError:
            return False


def _is_socket(path: str) -> bool:
    import stat

    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _one_line(text: str) -> str:
    first = text.strip().splitlines()
    return first[0][:500] if first else ""
