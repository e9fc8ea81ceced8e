"""The console's side of the conversation with the enforcer (no Textual here).

One long-running loop: connect, say hello, subscribe, load every list, then fold events
into `ConsoleState` until the connection drops; then say so and try again every second.
The state survives a reconnect, so views keep their place while the enforcer restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Callable, Protocol

from enforcer import protocol
from enforcer.protocol import ProtocolError

from .client import Unreachable
from .state import ConsoleState

log = logging.getLogger(__name__)

TOPICS = ["inventory", "alert", "feed", "audit"]
INCIDENTS_LOADED = 10_000
AUDIT_LOADED = 500
FEED_HITS_LOADED = 200


class ClientLike(Protocol):
    """What the console needs of `console.client.EnforcerClient` (tests pass a fake)."""

    path: str
    hello: dict[str, Any]

    async def connect(self, timeout: float = 3.0) -> dict[str, Any]: ...
    async def call(self, op: str, timeout: float | None = 30.0, **args: Any) -> Any: ...
    async def subscribe(self, topics: list[str]) -> list[str]: ...
    def events(self) -> Any: ...
    async def close(self) -> None: ...


class EnforcerSession:
    def __init__(self, client: ClientLike, state: ConsoleState, on_change: Callable[[], None],
                 retry_seconds: float = 1.0, status_interval: float = 2.0,
                 max_retry_seconds: float | None = None) -> None:
        self.client = client
        self.state = state
        self.on_change = on_change
        self.retry_seconds = retry_seconds
        # None: retry every retry_seconds; else back off, doubling up to this (a fleet's hosts).
        self.max_retry_seconds = max_retry_seconds
        self.status_interval = status_interval
        self._connected = asyncio.Event()
        self._apps_reload: asyncio.Task[None] | None = None
        self._reload_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def run(self) -> None:
        """Connect, serve, reconnect: forever (the app cancels it on exit)."""
        while True:
            try:
                await self._serve_one_connection()
            except asyncio.CancelledError:
                raise
            except Unreachable as e:
                self.state.set_connection("down", str(e))
            except ProtocolError as e:
                self.state.set_connection("down", str(e))
            except Exception as e:  # noqa: BLE001 - a bug must not end the retry loop
                log.exception("console session failed")
                self.state.set_connection("down", f"console error: {type(e).__name__}: {e}")
            finally:
                self._connected.clear()
            delay = self.retry_delay()
            self.state.connection.retry_delay = delay
            self.on_change()
            await asyncio.sleep(delay)

    def retry_delay(self) -> float:
        """Seconds before the next attempt: fixed, or doubling per failed attempt up to the cap."""
        if self.max_retry_seconds is None:
            return self.retry_seconds
        attempts = max(1, self.state.connection.attempts)
        return min(self.max_retry_seconds, self.retry_seconds * 2 ** min(attempts - 1, 16))

    async def _serve_one_connection(self) -> None:
        self.state.set_connection("connecting", f"connecting to {self.client.path}")
        self.on_change()
        hello = await self.client.connect()
        self.state.set_hello(hello)
        await self._subscribe()
        await self.reload()
        self.state.set_connection("connected", f"enforcer on {hello.get('host', '?')}")
        self._connected.set()
        self.on_change()
        poller = asyncio.create_task(self._poll_status(), name="console-status-poll")
        try:
            async for event in self.client.events():
                if event.get("event") == "disconnected":
                    break
                self.state.apply_event(event)
                topic = event.get("event")
                if topic == "overflow" and (self._reload_task is None or self._reload_task.done()):
                    # We missed events: the lists are the truth again.
                    self._reload_task = asyncio.create_task(self.reload())
                elif topic == "inventory" and (self._apps_reload is None or self._apps_reload.done()):
                    # A container came or went: its app's services may have changed too.
                    self._apps_reload = asyncio.create_task(self._reload_apps_soon())
                self.on_change()
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
        self.state.set_connection("down", f"lost the enforcer at {self.client.path}; reconnecting")

    async def _subscribe(self) -> None:
        try:
            await self.client.subscribe(TOPICS)
        except ProtocolError as e:
            if e.code != protocol.BAD_REQUEST:
                raise
            for topic in TOPICS:  # an older enforcer without one of the topics: take what it has
                with contextlib.suppress(ProtocolError):
                    await self.client.subscribe([topic])

    async def reload(self) -> None:
        """Load every list the views show, concurrently; one failure does not stop the rest."""
        s = self.state
        await asyncio.gather(
            self._load("status", s.set_status),
            self._load("containers", s.set_containers),
            self._load("apps", s.set_apps),
            self._load("alerts", s.set_incidents, limit=INCIDENTS_LOADED),
            self._load("feeds", s.set_feeds),
            self._load("feeds.hits", s.set_feed_hits, limit=FEED_HITS_LOADED),
            self._load("audit", s.set_audit, limit=AUDIT_LOADED),
        )
        self.on_change()

    async def reload_one(self, op: str) -> None:
        setters: dict[str, Callable[[Any], None]] = {"containers": self.state.set_containers, "apps": self.state.set_apps,
                   "feeds": self.state.set_feeds, "feeds.hits": self.state.set_feed_hits,
                   "status": self.state.set_status}
        if op in setters:
            await self._load(op, setters[op])
            self.on_change()

    async def _load(self, op: str, setter: Callable[[Any], None], **args: Any) -> None:
        try:
            try:
                result = await self.client.call(op, **args)
            except ProtocolError as e:
                if e.code != protocol.BAD_REQUEST or "limit" not in args:
                    raise
                # An enforcer with a smaller maximum: take its default page instead.
                result = await self.client.call(op, **{k: v for k, v in args.items() if k != "limit"})
        except ProtocolError as e:
            if isinstance(e, Unreachable):
                raise
            self.state.errors[op] = str(e)
            return
        self.state.errors.pop(op, None)
        setter(result if result is not None else [])

    async def _reload_apps_soon(self) -> None:
        await asyncio.sleep(0.5)  # one reload for a burst of inventory changes
        try:
            await self.reload_one("apps")
        except ProtocolError:
            pass

    async def _poll_status(self) -> None:
        while True:
            await asyncio.sleep(self.status_interval)
            try:
                self.state.set_status(await self.client.call("status", timeout=5.0))
            except ProtocolError:
                continue
            if any(c.get("profile_state") == "learning" for c in self.state.containers.values()):
                self.state.dirty.add("containers")  # the learning time left counts down
            self.on_change()

    async def call(self, op: str, **args: Any) -> Any:
        """An action or a one-off query (profile, container...): errors reach the caller."""
        return await self.client.call(op, **args)
