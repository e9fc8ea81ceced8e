"""The Docker engine as an asyncio source: blocking SDK calls run on threads, and the event
stream runs on a thread of its own that hands events to the loop thread-safely.

If the engine is down at start or goes away later, the stream thread retries every second
and, once the engine answers again, announces it so the inventory can resynchronise.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable

import docker
import docker.errors
import requests.exceptions

log = logging.getLogger(__name__)

# Container events that change what the inventory shows. exec_* and attach are frequent
# and change nothing here; the sensors see execs.
CONTAINER_EVENTS = [
    "create", "start", "restart", "die", "stop", "pause", "unpause", "destroy", "rename",
    "update", "oom",
]
NETWORK_EVENTS = ["connect", "disconnect"]

# Errors that mean "the engine is not there" rather than "this container is not".
ENGINE_DOWN = (
    requests.exceptions.ConnectionError,
    docker.errors.DockerException,
    ConnectionError,
    OSError,
)

CONNECTED = {"_stockade": "connected"}
DISCONNECTED = {"_stockade": "disconnected"}


class DockerSource:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: Any = None
        self.connected = False
        self.last_error = ""

    # -- blocking helpers, always called through asyncio.to_thread ---------------------
    def _get_client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                # version="auto": Debian's engine speaks API 1.41, older than the SDK default.
                self._client = docker.DockerClient(base_url=self.url, version="auto", timeout=30)
            return self._client

    def _drop_client(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
            self._client = None

    def _call(self, fn: Callable[[docker.APIClient], Any]) -> Any:
        try:
            return fn(self._get_client().api)
        except docker.errors.NotFound:
            raise
        except ENGINE_DOWN as e:
            self._drop_client()
            self.connected = False
            self.last_error = _one_line(e)
            raise EngineDown(self.last_error) from None

    async def ping(self) -> bool:
        try:
            await asyncio.to_thread(self._call, lambda api: api.ping())
            self.connected = True
            return True
        except EngineDown:
            return False

    async def container_ids(self) -> list[str]:
        rows = await asyncio.to_thread(self._call, lambda api: api.containers(all=True, quiet=True))
        return [r["Id"] for r in rows]

    async def inspect_container(self, cid: str) -> dict[str, Any] | None:
        try:
            return await asyncio.to_thread(self._call, lambda api: api.inspect_container(cid))
        except docker.errors.NotFound:
            return None

    async def inspect_image(self, image_id: str) -> dict[str, Any] | None:
        try:
            return await asyncio.to_thread(self._call, lambda api: api.inspect_image(image_id))
        except docker.errors.NotFound:
            return None

    async def call(self, fn: Callable[[docker.APIClient], Any]) -> Any:
        """Any other API call, off the loop (used by enforcement and forensics)."""
        return await asyncio.to_thread(self._call, fn)

    # -- the event stream ---------------------------------------------------------------
    def start_events(self, loop: asyncio.AbstractEventLoop, sink: Callable[[dict[str, Any]], None]) -> None:
        def deliver(ev: dict[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(sink, ev)
            except RuntimeError:  # loop closed while shutting down
                self._stop.set()

        def run() -> None:
            was_connected = False
            while not self._stop.is_set():
                try:
                    client = self._get_client()
                    client.api.ping()
                    since = time.time()
                    self._stream = client.api.events(
                        decode=True,
                        filters={"type": ["container", "network"],
                                 "event": CONTAINER_EVENTS + NETWORK_EVENTS},
                    )
                    self.connected = True
                    was_connected = True
                    deliver({**CONNECTED, "since": since})
                    for ev in self._stream:
                        if self._stop.is_set():
                            break
                        deliver(ev)
                    # The stream ended: the engine stopped or restarted.
                    raise ConnectionError("Docker event stream closed")
                except Exception as e:  # noqa: BLE001 - any failure means reconnect
                    if self._stop.is_set():
                        break
                    self.connected = False
                    self.last_error = _one_line(e)
                    self._drop_client()
                    if was_connected:
                        log.warning("docker: engine went away (%s); reconnecting", self.last_error)
                        deliver(DISCONNECTED)
                        was_connected = False
                    self._stop.wait(1.0)

        self._thread = threading.Thread(target=run, name="docker-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass
        self._drop_client()


class EngineDown(Exception):
    """The Docker engine does not answer; the message is one line."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
