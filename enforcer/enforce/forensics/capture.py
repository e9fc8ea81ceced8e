"""Gathering the evidence of one container, and `Forensics`, which writes it as a bundle.

`Forensics` is given exactly what it reads, not the daemon: the Docker calls
(`DockerCalls`), the folder for bundles, and three callables for what other layers know
of the container (its incidents, the audit entries about it, its profile). The daemon's
wiring binds those from its layers with `incidents_of`, `audit_of` and `profile_of`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Protocol

from ...inventory.cgroups import cgroup_pids
from ...models import Alert, AuditEntry, Container
from ...ports import DockerCalls
from ...store.alerts import AlertQuery
from ..processes import ProcessInfo, attach_socket_owners, process_info, read_sockets
from .bundle import BundleResult, ForensicsError, bundle_name, open_default, open_for_peer, write_bundle
from .safe_reads import gather_changes, gather_changes_archived

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 2000


# -- ports ----------------------------------------------------------------------------------------
class ProfileViews(Protocol):
    """What `profile_of` reads of the profile book (profiles.book.ProfileBook)."""

    @property
    def attached(self) -> Mapping[str, Any]: ...

    def profile_view(self, att: Any) -> dict[str, Any]: ...


Incidents = Callable[[Container], Awaitable[list[dict[str, Any]]]]
AuditEntries = Callable[[Container], Awaitable[list[dict[str, Any]]]]
ProfileView = Callable[[Container], dict[str, Any] | None]


@dataclass(slots=True)
class Evidence:
    """Everything gathered, before it is written."""

    container: Container
    inspect: dict[str, Any] = field(default_factory=dict)
    processes: list[ProcessInfo] = field(default_factory=list)
    sockets: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)  # member name, content
    alerts: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    logs: bytes = b""
    freezer_state: str = ""
    notes: list[str] = field(default_factory=list)


# -- reading the container ----------------------------------------------------------------------
def gather_processes(c: Container) -> tuple[list[ProcessInfo], list[dict[str, Any]]]:
    hashes: dict[tuple[int, int], str] = {}
    pids = cgroup_pids(c.cgroup_path) if c.cgroup_path else []
    infos = [process_info(pid, hashes) for pid in pids]
    sockets: list[dict[str, Any]] = []
    seen_ns: set[str] = set()
    for p in infos:
        if p.error or not p.netns or p.netns in seen_ns:
            continue
        seen_ns.add(p.netns)
        for s in read_sockets(p.pid):
            s["netns"] = p.netns
            sockets.append(s)
    attach_socket_owners(sockets, infos)
    return infos, sockets


# -- what other layers know of it (bound by the wiring) -------------------------------------------
async def incidents_of(query: Callable[[AlertQuery], Awaitable[list[Alert]]], c: Container) -> list[dict[str, Any]]:
    """The container's recent incidents, through `query` (AlertBook.query); a failure
    is logged and gives none."""
    try:
        return [a.to_dict() for a in await query(AlertQuery(container=c.id, limit=1000))]
    except Exception as e:  # noqa: BLE001
        log.warning("forensics: alerts of %s: %s", c.name, e)
        return []


async def audit_of(recent: Callable[..., Awaitable[list[AuditEntry]]], c: Container) -> list[dict[str, Any]]:
    """The audit entries whose target is the container (name, id, or an id prefix of 4+)."""
    entries = await recent(limit=10_000)
    names = {c.name, c.id, c.short_id}
    return [e.to_dict() for e in entries if e.target in names or (len(e.target) >= 4 and c.id.startswith(e.target))]


def profile_of(profiles: ProfileViews | None, c: Container) -> dict[str, Any] | None:
    """The profile attached to the container, as listings show it (None if none)."""
    if profiles is None:
        return None
    att = profiles.attached.get(c.id)
    if att is None:
        return None
    try:
        return profiles.profile_view(att)
    except Exception as e:  # noqa: BLE001
        log.debug("forensics: profile of %s: %s", c.name, e)
        return None


class Forensics:
    """Gathers the evidence of one container and writes the bundle (enforcer side)."""

    def __init__(self, docker: DockerCalls, bundle_dir: str, incidents: Incidents, audit_entries: AuditEntries,
                 profile_view: ProfileView) -> None:
        self.docker = docker
        self.bundle_dir = bundle_dir
        self.incidents = incidents
        self.audit_entries = audit_entries
        self.profile_view = profile_view

    async def capture(self, c: Container, *, out: str | None, uid: int, gid: int, groups: Callable[[], set[int]],
                      freezer_state: str, blocks: list[dict[str, Any]]) -> BundleResult:
        ev = Evidence(container=c, freezer_state=freezer_state, blocks=blocks)
        docker = self.docker
        try:
            ev.inspect = await docker.inspect_container(c.id) or {}
        except Exception as e:  # noqa: BLE001 - the engine may be down; the rest still helps
            ev.notes.append(f"docker inspect failed: {e}")
        if c.state in ("running", "paused"):
            ev.processes, ev.sockets = await asyncio.to_thread(gather_processes, c)
        else:
            ev.notes.append(f"container is {c.state}: no processes or sockets")
        try:
            diff = await docker.call(lambda api: api.diff(c.id)) or []
        except Exception as e:  # noqa: BLE001
            diff = []
            ev.notes.append(f"docker diff failed: {e}")
        if c.state in ("running", "paused") and c.pid:
            ev.changes, ev.files, skipped = await asyncio.to_thread(gather_changes, c, diff)
        else:
            ev.changes, ev.files, skipped = await docker.call(lambda api: gather_changes_archived(api, c, diff))
        if skipped:
            ev.notes.append(f"{skipped} changed files listed with their hash but not archived (caps)")
        try:
            ev.logs = await docker.call(lambda api: api.logs(c.id, stdout=True, stderr=True, timestamps=True,
                                                              tail=LOG_TAIL_LINES))
        except Exception as e:  # noqa: BLE001
            ev.notes.append(f"docker logs failed: {e}")
        ev.alerts = await self.incidents(c)
        ev.audit = await self.audit_entries(c)
        ev.profile = self.profile_view(c)
        name = bundle_name(c)
        if out:
            fd, path = await asyncio.to_thread(open_for_peer, out, uid, gid, groups)
        else:
            try:
                fd, path = await asyncio.to_thread(open_default, self.bundle_dir, name)
            except OSError as e:
                raise ForensicsError(f"cannot create the bundle in {self.bundle_dir}: {e.strerror}") from None
        try:
            result = await asyncio.to_thread(write_bundle, fd, name, ev, path)
        except OSError as e:
            raise ForensicsError(f"writing {path} failed: {e.strerror or e}") from None
        result.files_skipped = skipped
        return result
