"""What a container's sockets use right now, read from its network namespace
(/proc/PID/net/tcp, tcp6, udp, udp6 of its first process, a pid Docker gave us).

The detector sees a listener or a connection when it is made; one made before the inventory
knew the container (at its start) is never seen: a server's listening socket, a connection
pool opened at start and held. Before a seed is called "never used" (when the profile
becomes active, and again at prune) the sockets alive now count as use too, so that prune
never removes what the container is using.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable, Iterator

from .model import LOOPBACK, Profile

MAX_BYTES = 4 << 20  # of each table read (a busy proxy can hold very many sockets)
TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"
UDP_UNCONNECTED = "07"

Use = tuple[str, tuple[str, ...]]  # (entry kind, keys any of which the socket uses)


def _address(text: str, v6: bool) -> tuple[str, int]:
    """ "0100007F:1F90" -> ("127.0.0.1", 8080); the kernel prints each 32-bit word in host
    (little-endian) order."""
    hex_ip, _, hex_port = text.partition(":")
    raw = bytes.fromhex(hex_ip)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, raw)
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, int(hex_port, 16)


def parse_table(text: str, v6: bool) -> Iterator[tuple[str, str, int, str, int]]:
    """(state, local ip, local port, remote ip, remote port) per socket of one table."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        try:
            lip, lport = _address(fields[1], v6)
            rip, rport = _address(fields[2], v6)
        except (ValueError, OSError):
            continue
        yield fields[3], lip, lport, rip, rport


def uses(tables: dict[str, tuple[str, bool]], peer_of: Callable[[str], str]) -> list[Use]:
    """The profile keys the sockets of these tables ({proto: (text, v6)}, proto "tcp" or
    "udp", one entry per table file) use: listeners, and connections in or out."""
    listening: set[tuple[str, int]] = set()
    connections: list[tuple[str, int, str, int]] = []
    for name, (text, v6) in tables.items():
        proto = "udp" if name.startswith("udp") else "tcp"
        for state, _lip, lport, rip, rport in parse_table(text, v6):
            if (proto == "tcp" and state == TCP_LISTEN) or (proto == "udp" and state == UDP_UNCONNECTED
                                                            and rport == 0):
                listening.add((proto, lport))
            elif (proto == "tcp" and state == TCP_ESTABLISHED) or (proto == "udp" and rport):
                connections.append((proto, lport, rip, rport))
    out: list[Use] = [("listener", (f"{proto}/{port}",)) for proto, port in sorted(listening)]
    for proto, lport, rip, rport in connections:
        peer = peer_of(rip)
        if (proto, lport) in listening:
            out.append(("peer", Profile.peer_keys("in", proto, peer, lport)))
        else:
            out.append(("peer", Profile.peer_keys("out", proto, peer, rport)))
    return out


def read_tables(pid: int) -> dict[str, tuple[str, bool]]:
    out: dict[str, tuple[str, bool]] = {}
    for name in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/{int(pid)}/net/{name}", encoding="ascii", errors="replace") as f:
                out[name] = (f.read(MAX_BYTES), name.endswith("6"))
        except OSError:
            continue
    return out


def live_uses(container: Any, by_ip: Callable[[str], Any]) -> list[Use]:
    """What `container`'s sockets use now ([] when it has no process)."""
    if not getattr(container, "pid", 0):
        return []

    def peer_of(ip: str) -> str:
        remote = by_ip(ip)
        if remote is not None:
            return LOOPBACK if remote.id == container.id else f"{remote.app}/{remote.service}"
        try:
            if ipaddress.ip_address(ip).is_loopback:
                return LOOPBACK
        except ValueError:
            pass
        return ip

    return uses(read_tables(container.pid), peer_of)
