"""The one client of the enforcer's socket, used by the CLI and the console alike.

Requests are multiplexed on one connection by id; events from `subscribe` arrive on
`events()`. When the connection drops, pending calls fail with `Unreachable` and the
event stream yields a `disconnected` event, so a caller can reconnect and resubscribe.
Where the enforcer is (a local socket, or a remote one over SSH) is console.transport's
business; this module is about the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any, AsyncIterator

from enforcer import protocol
from enforcer.protocol import ProtocolError

from . import transport
from .transport import DEFAULT_SOCKET, Target, TargetError, TransportError, default_socket_path, parse_target

__all__ = ["DEFAULT_SOCKET", "DISCONNECTED", "EnforcerClient", "Target", "TargetError", "Unreachable",
           "call_once", "default_socket_path", "parse_target"]


class Unreachable(ProtocolError):
    """The enforcer is not there (or went away); the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, protocol.UNAVAILABLE)


DISCONNECTED = {"event": "disconnected", "data": {}}


class EnforcerClient:
    def __init__(self, target: str | Target | None = None) -> None:
        """`target`: a socket path, `unix:///path` or `ssh://[user@]host[:port][/socket]`
        (None: $STOCKADE_SOCKET or the default socket). A bad target raises TargetError."""
        self.target: Target = target if isinstance(target, Target) else parse_target(target)
        # The socket path for a local target, the ssh:// URL for a remote one: what messages name.
        self.path: str = self.target.display
        self.hello: dict[str, Any] = {}
        self._stream: transport.Stream | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._read_task: asyncio.Task[None] | None = None
        self._refusal: ProtocolError | None = None  # the server's connection-level refusal, if any

    @property
    def host_label(self) -> str:
        """`user@host:port` for an ssh target, `local` for a unix socket."""
        return self.target.label

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    @property
    def read_only(self) -> bool:
        return self.hello.get("role") != "admin"

    async def connect(self, timeout: float | None = None) -> dict[str, Any]:
        """Connect and say hello; returns the server's hello (protocol version, role...).
        `timeout` covers both (default 3 s for a socket, 15 s over ssh)."""
        await self.close()
        if timeout is None:
            timeout = transport.SSH_CONNECT_TIMEOUT if self.target.is_ssh else transport.UNIX_CONNECT_TIMEOUT
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            self._stream = await transport.open_stream(self.target, timeout, protocol.MAX_LINE * 16)
        except TransportError as e:
            raise Unreachable(str(e)) from None
        self._reader, self._writer = self._stream.reader, self._stream.writer
        self._refusal = None
        self._read_task = asyncio.create_task(self._read_loop(), name="enforcer-client-read")
        remaining = max(0.1, timeout - (loop.time() - started))
        timed_out: float | None = None
        try:
            try:
                self.hello = await asyncio.wait_for(self.call("hello", timeout=None), remaining)
            except asyncio.TimeoutError:
                timed_out = timeout
                raise Unreachable(f"cannot reach the enforcer at {self.path}: no answer within {timeout:g} s") from None
        except asyncio.CancelledError:
            await asyncio.shield(self.close())  # no ssh child outlives a cancelled connect
            raise
        except ProtocolError as e:
            if e.code != protocol.UNAVAILABLE or self._stream is None:
                await self.close()
                raise
            # The transport failed before the enforcer answered: ask it why (ssh's stderr).
            why = await self._stream.explain(timed_out)
            await self.close()
            self._drop_events()  # this attempt's `disconnected` must not end the next stream
            if why is None:
                raise
            raise Unreachable(why) from None
        if self.hello.get("protocol") != protocol.PROTOCOL_VERSION:
            version = self.hello.get("protocol")
            await self.close()
            raise ProtocolError(
                f"the enforcer speaks protocol {version}, this client {protocol.PROTOCOL_VERSION}; "
                "upgrade whichever is older", protocol.UNAVAILABLE)
        return self.hello

    async def close(self) -> None:
        if self._read_task:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
            self._read_task = None
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()
        elif self._writer:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._writer = self._reader = None
        self._fail_pending("connection closed")

    def _drop_events(self) -> None:
        while not self._events.empty():
            self._events.get_nowait()

    async def call(self, op: str, timeout: float | None = 30.0, **args: Any) -> Any:
        """Send a request and wait for its reply; raises ProtocolError on ok=false."""
        if not self.connected or self._writer is None:
            raise Unreachable(f"cannot reach the enforcer at {self.path}: not connected")
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            self._writer.write(protocol.encode({"id": req_id, "op": op, **args}))
            await self._writer.drain()
        except (ConnectionError, OSError) as e:
            self._pending.pop(req_id, None)
            # The server may have refused the connection (forbidden) and closed it before this
            # write: its refusal, still to be read, says more than the broken pipe does.
            if self._read_task is not None:
                await asyncio.wait({self._read_task}, timeout=2)
            if self._refusal is not None:
                raise self._refusal from None
            raise Unreachable(f"cannot reach the enforcer at {self.path}: {e.strerror or e}") from None
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise ProtocolError(f"the enforcer did not answer {op} within {timeout:g} s", protocol.UNAVAILABLE) from None
        finally:
            self._pending.pop(req_id, None)
        if not reply.get("ok"):
            raise ProtocolError(str(reply.get("error") or "request failed"), str(reply.get("code") or protocol.FAILED))
        return reply.get("result")

    async def subscribe(self, topics: list[str]) -> list[str]:
        result = await self.call("subscribe", topics=topics)
        return list(result.get("topics", []))

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Events in arrival order; a `disconnected` event ends the stream."""
        while True:
            event = await self._events.get()
            yield event
            if event.get("event") == "disconnected":
                return

    def next_event_nowait(self) -> dict[str, Any] | None:
        try:
            return self._events.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def _read_loop(self) -> None:
        assert self._reader
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                try:
                    message = protocol.decode(line)
                except ProtocolError:
                    continue
                if "event" in message:
                    self._events.put_nowait(message)
                    continue
                fut = self._pending.get(message.get("id"))  # type: ignore[arg-type]
                if fut is not None and not fut.done():
                    fut.set_result(message)
                elif message.get("id") is None and not message.get("ok", True):
                    # A connection-level refusal (forbidden, oversize): fail everything waiting.
                    self._refusal = ProtocolError(str(message.get("error")), str(message.get("code") or protocol.FAILED))
                    self._fail_pending(str(message.get("error")), str(message.get("code") or protocol.FAILED))
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            if self._writer:
                self._writer.close()
            self._fail_pending("the enforcer closed the connection")
            self._events.put_nowait(DISCONNECTED)

    def _fail_pending(self, reason: str, code: str = protocol.UNAVAILABLE) -> None:
        for fut in self._pending.values():
            if not fut.done():
                exc: ProtocolError = Unreachable(f"{reason} ({self.path})") if code == protocol.UNAVAILABLE \
                    else ProtocolError(reason, code)
                fut.set_exception(exc)
        self._pending.clear()


async def call_once(path: str | None, op: str, **args: Any) -> Any:
    """Connect, make one call, disconnect: what most CLI commands need."""
    client = EnforcerClient(path)
    await client.connect()
    try:
        return await client.call(op, **args)
    finally:
        await client.close()
