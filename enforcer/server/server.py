"""The enforcer's unix socket: JSON-lines requests, replies and subscription streams.

Components register the ops they serve. The server owns the cross-cutting rules: who
may call what (SO_PEERCRED roles), the audit record of every op that changes state,
one-line errors, and bounded per-client event queues so that a slow console can never
stall the enforcer (overflow is counted and announced, the client then resynchronises).
Requests in flight are bounded per connection and in all: at a bound the connection's
next request waits up to ADMIT_WAIT for a slot (a pipelined burst of quick ops goes
through), then is refused with code "busy" (counted in `status`); never queued without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .. import protocol
from ..protocol import ProtocolError
from .peers import ADMIN, NONE, Identifier, LookupStalled, Peer

log = logging.getLogger(__name__)

CLIENT_QUEUE = 10_000  # events buffered per subscriber before it counts as too slow
MAX_IN_FLIGHT_CLIENT = 32  # requests one connection may have running at once
MAX_IN_FLIGHT_TOTAL = 256  # requests all connections together may have running at once
ADMIT_WAIT = 1.0  # seconds a request waits for a free slot before it is refused as busy


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
    in_flight: int = 0
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SocketInUse(Exception):
    """Another enforcer answers on the socket path."""


class Server:
    def __init__(self, path: str, *, socket_group: str = "stockade", admin_group: str = "stockade-admin",
                 viewer_group: str = "stockade", auditor: Auditor | None = None,
                 max_in_flight_client: int = MAX_IN_FLIGHT_CLIENT, max_in_flight_total: int = MAX_IN_FLIGHT_TOTAL) -> None:
        self.path = path
        self.socket_group = socket_group
        self.admin_group = admin_group
        self.viewer_group = viewer_group
        self.auditor = auditor
        self.identifier = Identifier(admin_group, viewer_group)
        self.max_in_flight_client = max_in_flight_client
        self.max_in_flight_total = max_in_flight_total
        self.in_flight = 0
        self.busy_refused = 0  # requests refused with "busy"
        self._freed = asyncio.Event()  # set (and replaced) whenever a request finishes
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
            gid = await self.identifier.gid_of(self.socket_group)
            if gid is not None:  # no such group: root only
                os.chown(self.path, 0, gid)
        except (LookupStalled, PermissionError) as e:
            log.warning("server: socket %s stays root-only: %s", self.path, e)
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
            if topic in protocol.ADMIN_TOPICS and client.peer.role != ADMIN:
                continue  # subscribe refuses it; this keeps it so whatever the path
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
            peer = await self.identifier.identify(sock)
        except OSError:
            writer.close()
            return
        except LookupStalled as e:
            # Fail closed: a peer whose groups cannot be read gets no role.
            log.warning("server: refused a connection: %s", e)
            writer.write(protocol.encode({"id": None, "ok": False, "code": protocol.UNAVAILABLE,
                                          "error": f"cannot tell who you are: {e}; try again"}))
            with contextlib.suppress(ConnectionError, OSError):
                await asyncio.wait_for(writer.drain(), 5)
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
                refusal = await self._admit(client)
                if refusal:
                    # Awaited here, not in a task: a client that sends faster than it reads
                    # replies is slowed down to the pace it reads them.
                    await self._send(client, {"id": _request_id(line), "ok": False, "code": protocol.BUSY,
                                              "error": refusal})
                    continue
                client.in_flight += 1
                self.in_flight += 1
                t = asyncio.create_task(self._handle_line(client, line))
                t.add_done_callback(lambda _t, c=client: self._done(c))
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

    async def _admit(self, client: _Client) -> str:
        """Empty once a new request of this client may start; else, after ADMIT_WAIT, why not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ADMIT_WAIT
        while True:
            if client.in_flight >= self.max_in_flight_client:
                why = f"{client.in_flight} requests of this connection are still running (at most " \
                      f"{self.max_in_flight_client}); wait for their replies"
            elif self.in_flight >= self.max_in_flight_total:
                why = f"the enforcer is running {self.in_flight} requests (at most {self.max_in_flight_total}); try again"
            else:
                return ""
            left = deadline - loop.time()
            if left <= 0:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._freed.wait(), left)
        self.busy_refused += 1
        if self.busy_refused == 1 or self.busy_refused % 1000 == 0:
            log.warning("server: busy: %s (uid %d); %d refused so far", why, client.peer.uid, self.busy_refused)
        return why

    def _done(self, client: _Client) -> None:
        client.in_flight -= 1
        self.in_flight -= 1
        self._freed.set()  # wakes every waiter; they re-check the bounds
        self._freed = asyncio.Event()

    def status(self) -> dict[str, Any]:
        """The socket's part of `status`."""
        return {"subscribers": self.subscriber_count, "events_dropped": self.events_dropped,
                "requests": self.requests_served, "in_flight": self.in_flight, "busy_refused": self.busy_refused,
                "max_in_flight": {"client": self.max_in_flight_client, "total": self.max_in_flight_total},
                **self.identifier.status()}

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
        if req.peer.role != ADMIN:
            if "topics" not in req.args:  # "all": all this role may follow
                topics = [t for t in topics if t not in protocol.ADMIN_TOPICS]
            denied = [t for t in topics if t in protocol.ADMIN_TOPICS]
            if denied:
                raise OpError(f"topic {denied[0]} carries every argv of every container; "
                              f"user {req.peer.user} may only follow {', '.join(_viewer_topics())}",
                              protocol.FORBIDDEN)
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


def _viewer_topics() -> list[str]:
    return [t for t in protocol.TOPICS if t not in protocol.ADMIN_TOPICS]


def _request_id(line: bytes) -> Any:
    """The id of a request refused before it is handled, so the client can match the reply."""
    try:
        req_id = protocol.decode(line).get("id")
    except ProtocolError:
        return None
    return req_id if isinstance(req_id, (int, str)) and not isinstance(req_id, bool) else None


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
