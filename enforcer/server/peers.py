"""Who is on the other end of the socket (SO_PEERCRED), and what they may do.

root and members of the admin group may act; members of the viewer group (the group the
socket belongs to) may only read; anyone else who somehow connects is refused.

User and group lookups go through NSS (files, but also LDAP or sssd), which can be slow or
hang. They never run on the event loop: `Identifier` runs them in at most MAX_LOOKUPS
daemon threads (a hung lookup stalls neither the enforcer nor its exit), answers within
LOOKUP_DEADLINE or refuses the peer, and keeps each answer for GROUPS_TTL seconds.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..threads import in_daemon_thread

ADMIN = "admin"
VIEWER = "viewer"
NONE = "none"

GROUPS_TTL = 5.0  # seconds a peer's role is reused: a removed member keeps it this long at most
LOOKUP_DEADLINE = 5.0  # seconds a connecting peer waits for NSS before it is refused
MAX_LOOKUPS = 4  # NSS threads at once; more peers waiting on stuck lookups are refused


@dataclass(slots=True, frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    user: str
    role: str


class LookupStalled(Exception):
    """NSS did not answer in time (or every lookup thread is stuck): the peer is refused."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def _groups_of(uid: int, gid: int) -> set[int]:
    try:
        # getgrouplist asks NSS for this one user (initgroups), not for every group there is.
        return {gid, *os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)}
    except KeyError:
        return {gid}


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def role_for(uid: int, gid: int, admin_group: str, viewer_group: str) -> str:
    """Blocking (NSS): call it off the event loop."""
    if uid == 0 or uid == os.getuid():
        return ADMIN
    groups = _groups_of(uid, gid)
    admin_gid = _gid(admin_group)
    if admin_gid is not None and admin_gid in groups:
        return ADMIN
    viewer_gid = _gid(viewer_group)
    if viewer_gid is not None and viewer_gid in groups:
        return VIEWER
    return NONE


def user_and_role(uid: int, gid: int, admin_group: str, viewer_group: str) -> tuple[str, str]:
    """Blocking (NSS): call it off the event loop."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return user, role_for(uid, gid, admin_group, viewer_group)


class Identifier:
    """Peers' roles, looked up off the loop with a deadline and cached briefly."""

    def __init__(self, admin_group: str, viewer_group: str, *, ttl: float = GROUPS_TTL,
                 deadline: float = LOOKUP_DEADLINE, max_lookups: int = MAX_LOOKUPS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.admin_group = admin_group
        self.viewer_group = viewer_group
        self.ttl = ttl
        self.deadline = deadline
        self.max_lookups = max_lookups
        self.clock = clock
        self._cache: dict[tuple[int, int], tuple[float, str, str]] = {}
        self._pending: dict[tuple[int, int], asyncio.Future[tuple[str, str]]] = {}
        self.threads_busy = 0  # lookup threads running now (a stuck one stays counted)
        self.stalled = 0  # peers refused because NSS did not answer in time

    async def identify(self, sock: socket.socket) -> Peer:
        pid, uid, gid = peer_credentials(sock)
        user, role = await self.user_and_role(uid, gid)
        return Peer(pid=pid, uid=uid, gid=gid, user=user, role=role)

    async def user_and_role(self, uid: int, gid: int) -> tuple[str, str]:
        key = (uid, gid)
        hit = self._cache.get(key)
        if hit is not None and self.clock() - hit[0] < self.ttl:
            return hit[1], hit[2]
        fut = self._pending.get(key)
        if fut is None:
            # One lookup per identity at a time: a thousand connections of one user share it.
            if self.threads_busy >= self.max_lookups:
                self.stalled += 1
                raise LookupStalled(f"{self.threads_busy} user lookups are already waiting on NSS")
            fut = asyncio.ensure_future(self._lookup(key))
            self._pending[key] = fut
            fut.add_done_callback(lambda f: self._pending.pop(key, None))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.deadline)
        except asyncio.TimeoutError:
            self.stalled += 1
            raise LookupStalled(f"user and group lookups took longer than {self.deadline:g}s") from None

    async def _lookup(self, key: tuple[int, int]) -> tuple[str, str]:
        self.threads_busy += 1
        try:
            user, role = await in_daemon_thread(user_and_role, key[0], key[1], self.admin_group,
                                                self.viewer_group, name="stockade-nss")
        finally:
            self.threads_busy -= 1
        self._cache[key] = (self.clock(), user, role)
        if len(self._cache) > 4096:  # uids are few; never let a cache grow without bound
            oldest = min(self._cache, key=lambda k: self._cache[k][0])
            self._cache.pop(oldest, None)
        return user, role

    async def gid_of(self, name: str) -> int | None:
        """A group's gid, off the loop (the socket's group at start)."""
        try:
            return await asyncio.wait_for(in_daemon_thread(_gid, name, name="stockade-nss"), self.deadline)
        except asyncio.TimeoutError:
            raise LookupStalled(f"looking up group {name} took longer than {self.deadline:g}s") from None

    def status(self) -> dict[str, Any]:
        return {"lookups_busy": self.threads_busy, "lookups_stalled": self.stalled}
