"""The live inventory: apps (compose projects) > services > containers.

Built from a full listing at start and kept current from the Docker event stream: a
container that starts, stops, restarts or is removed is re-inspected at once and every
listener is told. Lookups the sensors need per event (by cgroup id, by IP address) are
dictionary reads.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

from ..models import App, ComposeTopology, Container, NetworkAttachment, PortBinding, parse_iso_time
from .cgroups import cgroup_for_pid, cgroup_pids
from ..threads import in_daemon_thread
from .compose import READ_DEADLINE, load_topology
from .docker_source import DockerSource, EngineDown

log = logging.getLogger(__name__)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
# Compose files are named by labels: read off the loop, each project under a deadline, by
# at most COMPOSE_READERS threads (a read stuck in the kernel, e.g. on FUSE, keeps one).
COMPOSE_DEADLINE = READ_DEADLINE + 1.0
COMPOSE_READERS = 4


@dataclass(slots=True)
class InventoryChange:
    change: str  # added | updated | removed
    container: Container
    previous: Container | None = None


Listener = Callable[[InventoryChange], Any]


class Inventory:
    def __init__(self, docker_source: DockerSource) -> None:
        self.docker = docker_source
        self.containers: dict[str, Container] = {}
        self.topologies: dict[str, ComposeTopology] = {}
        self._by_cgroup: dict[int, str] = {}
        self._by_ip: dict[str, str] = {}
        self._image_digests: dict[str, str] = {}
        self._image_configs: dict[str, dict[str, Any]] = {}
        self._listeners: list[Listener] = []
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._compose_readers = 0
        self.synced = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.docker.start_events(loop, self._events.put_nowait)
        self._task = asyncio.create_task(self._consume(), name="inventory")

    async def stop(self) -> None:
        self.docker.stop()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for t in list(self._refreshing.values()):
            t.cancel()

    def subscribe(self, listener: Listener) -> None:
        """Call listener(change) for every change; coroutines are scheduled as tasks."""
        self._listeners.append(listener)

    # -- lookups ------------------------------------------------------------------------
    def by_cgroup(self, cgroup_id: int) -> Container | None:
        cid = self._by_cgroup.get(cgroup_id)
        return self.containers.get(cid) if cid else None

    def by_ip(self, ip: str) -> Container | None:
        cid = self._by_ip.get(ip)
        return self.containers.get(cid) if cid else None

    def resolve(self, ref: str) -> Container | None:
        """A container by exact id, name, or unambiguous id prefix (>= 4 characters)."""
        if ref in self.containers:
            return self.containers[ref]
        for c in self.containers.values():
            if c.name == ref:
                return c
        if len(ref) >= 4:
            matches = [c for c in self.containers.values() if c.id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
        return None

    def image_config(self, image_id: str) -> dict[str, Any]:
        """The image's Config (Entrypoint, Cmd, ExposedPorts, User, ...), cached."""
        return self._image_configs.get(image_id, {})

    def apps(self) -> dict[str, App]:
        apps: dict[str, App] = {}
        for c in sorted(self.containers.values(), key=lambda c: c.name):
            app = apps.get(c.app)
            if app is None:
                app = apps[c.app] = App(
                    name=c.app,
                    compose=self.topologies.get(c.app),
                    lone=PROJECT_LABEL not in c.labels,
                )
            app.services.setdefault(c.service, []).append(c.id)
        # Declared services with no container yet still belong to the app.
        for name, app in apps.items():
            topo = self.topologies.get(name)
            if topo:
                for svc in topo.services:
                    app.services.setdefault(svc, [])
        return apps

    def live_pids(self, c: Container) -> list[int]:
        return cgroup_pids(c.cgroup_path) if c.cgroup_path else []

    # -- keeping current ----------------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            ev = await self._events.get()
            try:
                marker = ev.get("_stockade")
                if marker == "connected":
                    await self.resync()
                elif marker == "disconnected":
                    log.warning("inventory: Docker engine unreachable; keeping the last known state")
                else:
                    self._on_docker_event(ev)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad event must not stop the inventory
                log.exception("inventory: failed to handle event %r", ev.get("Action"))

    def _on_docker_event(self, ev: dict[str, Any]) -> None:
        action = str(ev.get("Action") or ev.get("status") or "")
        if ev.get("Type") == "network":
            cid = (ev.get("Actor") or {}).get("Attributes", {}).get("container", "")
        else:
            cid = (ev.get("Actor") or {}).get("ID") or ev.get("id") or ""
        if not cid:
            return
        if action == "destroy":
            self._remove(cid)
            return
        self._schedule_refresh(cid)

    def _schedule_refresh(self, cid: str) -> None:
        # Coalesce bursts (create, start, connect...) into one inspect per container,
        # and keep the order: a refresh after a refresh.
        prev = self._refreshing.get(cid)

        async def run() -> None:
            if prev is not None and not prev.done():
                try:
                    await prev
                except Exception:  # noqa: BLE001
                    pass
            await self.refresh(cid)

        task = asyncio.create_task(run(), name=f"refresh-{cid[:12]}")
        self._refreshing[cid] = task
        task.add_done_callback(lambda t: self._refreshing.pop(cid, None) if self._refreshing.get(cid) is t else None)

    async def resync(self) -> None:
        """Full listing: add what is new, refresh what is known, drop what has gone."""
        try:
            ids = await self.docker.container_ids()
        except EngineDown as e:
            log.warning("inventory: cannot list containers: %s", e)
            return
        for cid in ids:
            await self.refresh(cid)
        for cid in list(self.containers):
            if cid not in ids:
                self._remove(cid)
        self.synced.set()

    async def refresh(self, cid: str) -> Container | None:
        try:
            info = await self.docker.inspect_container(cid)
        except EngineDown:
            return self.containers.get(cid)
        if info is None:
            self._remove(cid)
            return None
        c = await self._from_inspect(info)
        previous = self.containers.get(c.id)
        if previous is not None:
            self._unindex(previous)
        self.containers[c.id] = c
        self._index(c)
        if previous is None:
            self._notify(InventoryChange("added", c))
        elif _changed(previous, c):
            self._notify(InventoryChange("updated", c, previous))
        return c

    def _remove(self, cid: str) -> None:
        c = self.containers.pop(cid, None)
        if c is None:
            return
        self._unindex(c)
        c.state = "removed"
        self._notify(InventoryChange("removed", c))

    def _index(self, c: Container) -> None:
        if c.cgroup_id:
            self._by_cgroup[c.cgroup_id] = c.id
        for ip in c.addresses():
            self._by_ip[ip] = c.id

    def _unindex(self, c: Container) -> None:
        if self._by_cgroup.get(c.cgroup_id) == c.id:
            del self._by_cgroup[c.cgroup_id]
        for ip in c.addresses():
            if self._by_ip.get(ip) == c.id:
                del self._by_ip[ip]

    def _notify(self, change: InventoryChange) -> None:
        for listener in self._listeners:
            try:
                result = listener(change)
                if asyncio.iscoroutine(result):
                    asyncio.create_task(result)
            except Exception:  # noqa: BLE001
                log.exception("inventory: listener failed")

    async def _from_inspect(self, info: dict[str, Any]) -> Container:
        cfg = info.get("Config") or {}
        labels = {str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()}
        name = str(info.get("Name") or "").lstrip("/") or info["Id"][:12]
        state = info.get("State") or {}
        status = str(state.get("Status") or "unknown")
        pid = int(state.get("Pid") or 0)
        project = labels.get(PROJECT_LABEL)
        app = project or name
        service = labels.get(SERVICE_LABEL) or name
        image_id = str(info.get("Image") or "")
        c = Container(
            id=info["Id"], name=name, app=app, service=service,
            image=str(cfg.get("Image") or image_id), image_id=image_id,
            image_digest=await self._image_digest(image_id),
            state=status, pid=pid, labels=labels,
        )
        try:
            c.started_at = parse_iso_time(state.get("StartedAt") or "") if state.get("Running") else 0.0
            c.created_at = parse_iso_time(info.get("Created") or "")
        except ValueError:
            pass
        if pid and status in ("running", "paused"):
            cg = cgroup_for_pid(pid)
            if cg:
                c.cgroup_id, c.cgroup_path = cg.cgroup_id, cg.path
                c.pids = cgroup_pids(cg.path)
        nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
        for net_name, n in sorted(nets.items()):
            n = n or {}
            c.networks.append(NetworkAttachment(
                network=net_name, ip=n.get("IPAddress") or "",
                ipv6=n.get("GlobalIPv6Address") or "", mac=n.get("MacAddress") or "",
                aliases=[str(a) for a in (n.get("Aliases") or [])],
            ))
        for key, bindings in sorted(((info.get("NetworkSettings") or {}).get("Ports") or {}).items()):
            port_s, _, proto = key.partition("/")
            try:
                port = int(port_s)
            except ValueError:
                continue
            if not bindings:
                c.ports.append(PortBinding(port=port, proto=proto or "tcp"))
            for b in bindings or []:
                hp = b.get("HostPort")
                c.ports.append(PortBinding(port=port, proto=proto or "tcp", host_ip=b.get("HostIp") or "",
                                           host_port=int(hp) if hp else None))
        if project:
            files = [f for f in labels.get(CONFIG_FILES_LABEL, "").split(",") if f]
            c.compose_files = files
            topo = self.topologies.get(project)
            if topo is None or topo.files != files or status == "created":
                self.topologies[project] = await self._load_topology(project, files,
                                                                     labels.get(WORKING_DIR_LABEL, ""))
                if self.topologies[project].error:
                    log.warning("inventory: app %s: %s", project, self.topologies[project].error)
        return c

    async def _load_topology(self, project: str, files: list[str], working_dir: str) -> ComposeTopology:
        if self._compose_readers >= COMPOSE_READERS:
            return ComposeTopology(project=project, files=list(files),
                                   error=f"not read: {self._compose_readers} compose reads are stuck")
        self._compose_readers += 1
        reading = asyncio.ensure_future(in_daemon_thread(load_topology, project, files, working_dir,
                                                         name="stockade-compose"))
        # The count drops when the thread really ends, not when we stop waiting for it.
        reading.add_done_callback(lambda _f: setattr(self, "_compose_readers", self._compose_readers - 1))
        try:
            return await asyncio.wait_for(asyncio.shield(reading), COMPOSE_DEADLINE)
        except asyncio.TimeoutError:
            return ComposeTopology(project=project, files=list(files),
                                   error=f"reading the compose files took longer than {COMPOSE_DEADLINE:g}s")

    async def _image_digest(self, image_id: str) -> str:
        if not image_id:
            return ""
        if image_id not in self._image_digests:
            try:
                img = await self.docker.inspect_image(image_id)
            except EngineDown:
                img = None
            digests = (img or {}).get("RepoDigests") or []
            # Locally built images have no repo digest; their content-addressed id is one.
            self._image_digests[image_id] = str(digests[0].split("@", 1)[-1]) if digests else image_id
            self._image_configs[image_id] = (img or {}).get("Config") or {}
        return self._image_digests[image_id]


def _changed(a: Container, b: Container) -> bool:
    da, db = a.to_dict(), b.to_dict()
    for volatile in ("pids", "mode", "profile_state", "learning_left", "frozen"):
        da.pop(volatile, None)
        db.pop(volatile, None)
    return da != db

