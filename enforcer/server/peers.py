"""Who is on the other end of the socket (SO_PEERCRED), and what they may do.

root and members of the admin group may act; members of the viewer group (the group the
socket belongs to) may only read; anyone else who somehow connects is refused.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass

ADMIN = "admin"
VIEWER = "viewer"
NONE = "none"


@dataclass(slots=True, frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    user: str
    role: str


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def _groups_of(uid: int, gid: int) -> set[int]:
    groups = {gid}
    try:
        name = pwd.getpwuid(uid).pw_name
        groups.update(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)
    except KeyError:
        pass
    return groups


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def role_for(uid: int, gid: int, admin_group: str, viewer_group: str) -> str:
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


def identify(sock: socket.socket, admin_group: str, viewer_group: str) -> Peer:
    pid, uid, gid = peer_credentials(sock)
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return Peer(pid=pid, uid=uid, gid=gid, user=user, role=role_for(uid, gid, admin_group, viewer_group))
