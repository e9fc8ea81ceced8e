"""Inbound refusals told by the kernel: the default-deny's `deny-in*` rules hand each
refused packet (under a rate limit) to NFLOG, and this module reads them from a netlink
socket and raises an alert per refused flow.

Why: a refused inbound connection never reaches an accept(), so no sensor sees it; the
kernel's own refusal is the only fact. The rules (ruleset.py, `policy-in4/6`) are:

    ... limit rate over LOG_RATE/second burst LOG_BURST packets  counter reject  "deny-in4-tcp-unlogged"
    ...                                     counter log group G  reject           "deny-in4-tcp"

so a flood is refused whole (fail closed: the verdict never depends on the log) and only
its first LOG_BURST packets and then LOG_RATE a second are logged; the rest are counted by
the `-unlogged` rules. The enforcer reads those counters (every UNLOGGED_POLL seconds),
shows them in `status.enforcement.refusals.unlogged` and raises one alert (folded) when
the limit was hit. While the enforcer is down nobody is bound to the group: the kernel
still refuses, nothing is logged.

The nfnetlink_log protocol (uapi linux/netfilter/nfnetlink_log.h) is spoken here with
`struct`: a config message binds the group and asks for the first COPY_RANGE bytes of
each packet (its IP and transport headers); each packet message carries attributes, of
which the payload (the packet from its IP header) and the prefix are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ..models import Container
from ..ports import AlertSink
from .ruleset import LOG_PREFIX, log_group

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

NFULA_PACKET_HDR = 1
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10

NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2

COPY_RANGE = 128  # bytes of each packet: IPv6 header + a few extension headers + ports
RCVBUF = 1 << 20
UNLOGGED_POLL = 2.0  # seconds between reads of the over-limit counters
RECENT_WINDOW = 10.0  # seconds: containers with logged refusals this recent share a limit alert

_HDR = struct.Struct("=IHHII")  # nlmsghdr
_NFGEN = struct.Struct("=BBH")  # nfgenmsg (res_id is big-endian: packed separately)
_ATTR = struct.Struct("=HH")

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
_V6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options: (len + 1) * 8 bytes


class NflogError(OSError):
    pass


@dataclass(frozen=True, slots=True)
class Refused:
    """One packet the kernel refused and logged."""

    prefix: str
    version: int
    proto: str
    src: str
    dst: str
    sport: int
    dport: int


# -- the wire format (pure) ------------------------------------------------------------------
def _attr(kind: int, payload: bytes) -> bytes:
    raw = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def config_message(group: int, attrs: list[tuple[int, bytes]], seq: int = 1) -> bytes:
    """One NFULNL_MSG_CONFIG request for `group`, asking for an ack."""
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, 0)[:2] + struct.pack(">H", group)
    body += b"".join(_attr(k, v) for k, v in attrs)
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return _HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def bind_attrs(copy_range: int = COPY_RANGE) -> list[tuple[int, bytes]]:
    return [(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])),
            (NFULA_CFG_MODE, struct.pack(">IBB", copy_range, NFULNL_COPY_PACKET, 0)),
            (NFULA_CFG_QTHRESH, struct.pack(">I", 1)),  # each packet at once (the rate is bounded by the rules)
            (NFULA_CFG_TIMEOUT, struct.pack(">I", 1)),  # hundredths of a second
            (NFULA_CFG_NLBUFSIZ, struct.pack(">I", 16384))]


def iter_messages(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, seq, body) of each netlink message in one datagram; a truncated tail is dropped."""
    out = []
    off = 0
    while off + _HDR.size <= len(data):
        length, kind, _flags, seq, _pid = _HDR.unpack_from(data, off)
        if length < _HDR.size or off + length > len(data):
            break
        out.append((kind, seq, data[off + _HDR.size:off + length]))
        off += (length + 3) & ~3
    return out


def parse_attrs(body: bytes) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    off = 0
    while off + _ATTR.size <= len(body):
        length, kind = _ATTR.unpack_from(body, off)
        if length < _ATTR.size or off + length > len(body):
            break
        attrs[kind & NLA_TYPE_MASK] = body[off + _ATTR.size:off + length]
        off += (length + 3) & ~3
    return attrs


def parse_packet(payload: bytes) -> tuple[int, str, str, str, int, int] | None:
    """(IP version, proto name, source, destination, source port, destination port) of a
    packet from its IP header; ports are 0 when absent (ICMP, a later fragment)."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        proto = payload[9]
        src, dst = (str(ipaddress.IPv4Address(payload[i:i + 4])) for i in (12, 16))
        fragment_offset = struct.unpack_from(">H", payload, 6)[0] & 0x1FFF
        l4 = ihl if ihl >= 20 and not fragment_offset else -1
    elif version == 6 and len(payload) >= 40:
        proto = payload[6]
        src, dst = (str(ipaddress.IPv6Address(payload[i:i + 16])) for i in (8, 24))
        l4 = 40
        for _ in range(8):  # a bounded walk of the extension headers
            if proto in _V6_EXTENSIONS and l4 + 2 <= len(payload):
                proto, l4 = payload[l4], l4 + (payload[l4 + 1] + 1) * 8
            elif proto == 44 and l4 + 8 <= len(payload):  # fragment: ports only in the first
                first = struct.unpack_from(">H", payload, l4 + 2)[0] & 0xFFF8 == 0
                proto, l4 = payload[l4], (l4 + 8 if first else -1)
                if l4 < 0:
                    break
            else:
                break
    else:
        return None
    sport = dport = 0
    if proto in (6, 17, 132) and 0 <= l4 and l4 + 4 <= len(payload):
        sport, dport = struct.unpack_from(">HH", payload, l4)
    return version, PROTO_NAMES.get(proto, str(proto)), src, dst, sport, dport


def parse_datagram(data: bytes) -> tuple[list[Refused], list[int]]:
    """Refused packets in one datagram, and the errno of every netlink error message (0: ack)."""
    refused: list[Refused] = []
    errors: list[int] = []
    for kind, _seq, body in iter_messages(data):
        if kind == NLMSG_ERROR:
            if len(body) >= 4:
                errors.append(-struct.unpack_from("=i", body)[0])
            continue
        if kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET or len(body) < _NFGEN.size:
            continue
        attrs = parse_attrs(body[_NFGEN.size:])
        packet = parse_packet(attrs.get(NFULA_PAYLOAD, b""))
        if packet is None:
            continue
        prefix = attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("ascii", "replace")
        refused.append(Refused(prefix, *packet))
    return refused, errors


# -- the socket -------------------------------------------------------------------------------
class NflogSocket:
    """A netlink socket bound to one NFLOG group (non-blocking once bound)."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.sock: socket.socket | None = None
        self._seq = 0

    def open(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE (root)
            sock.bind((0, 0))
            sock.settimeout(2.0)
            self.sock = sock
            self._configure(bind_attrs())
            sock.setblocking(False)
        except OSError:
            sock.close()
            self.sock = None
            raise

    def _configure(self, attrs: list[tuple[int, bytes]]) -> None:
        assert self.sock is not None
        self._seq += 1
        self.sock.send(config_message(self.group, attrs, self._seq))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            _, errors = parse_datagram(self.sock.recv(65536))
            if errors:
                if errors[0]:
                    raise NflogError(errors[0], f"binding NFLOG group {self.group}: {os.strerror(errors[0])}")
                return
        raise NflogError(errno.ETIMEDOUT, f"binding NFLOG group {self.group}: no answer")

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def read(self, limit: int = 256) -> tuple[list[Refused], int]:
        """What is queued (at most `limit` datagrams), and how many overruns were reported
        (ENOBUFS: the kernel dropped messages the socket had no room for)."""
        out: list[Refused] = []
        overruns = 0
        if self.sock is None:
            return out, overruns
        for _ in range(limit):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    overruns += 1
                    continue
                raise
            refused, _ = parse_datagram(data)
            out.extend(refused)
        return out, overruns

    def close(self) -> None:
        if self.sock is None:
            return
        with contextlib.suppress(OSError):
            self.sock.setblocking(True)
            self.sock.settimeout(0.5)
            self._configure([(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND]))])
        self.sock.close()
        self.sock = None


# -- alerts -----------------------------------------------------------------------------------
class RefusalWatch:
    """Reads the NFLOG group of one table's deny-in rules and raises an alert per refused
    inbound flow, attributed to the protected container by its address."""

    def __init__(self, table: str, inventory: Any, alerts: AlertSink | None,
                 unlogged_counters: Callable[[], Awaitable[int]] | None = None) -> None:
        self.table = table
        self.group = log_group(table)
        self.inventory = inventory
        self.alerts = alerts
        self.unlogged_counters = unlogged_counters
        self.sock = NflogSocket(self.group)
        self.available = False
        self.error = ""
        self.logged = 0  # refused packets read from the kernel
        self.alerted = 0  # alerts raised for them
        self.unattributed = 0  # refused packets whose destination is no known container
        self.overruns = 0  # ENOBUFS: messages the kernel could not queue (still refused)
        self.unlogged = 0  # refused over the log limit (counted by the kernel), since start
        self.limit_alerts = 0
        self._unlogged_base: int | None = None
        self._recent: dict[str, tuple[Container, float]] = {}  # container id -> (container, last refusal)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.sock.open)
        except OSError as e:
            self.error = f"NFLOG group {self.group}: {e.strerror or e}"
            log.warning("refusals: %s; refused inbound connections raise no alert (they are still refused)",
                        self.error)
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)
        self.available = True
        if self.unlogged_counters is not None:
            self._task = asyncio.create_task(self._poll_loop(), name="refusals-unlogged")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._loop is not None and self.available:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
        await asyncio.to_thread(self.sock.close)
        self.available = False

    def status(self) -> dict[str, Any]:
        return {"available": self.available, "group": self.group, "error": self.error, "logged": self.logged,
                "alerts": self.alerted, "unattributed": self.unattributed, "overruns": self.overruns,
                "unlogged": self.unlogged, "limit_alerts": self.limit_alerts}

    def _readable(self) -> None:
        try:
            refused, overruns = self.sock.read()
        except OSError as e:
            self.error = f"reading NFLOG: {e}"
            log.warning("refusals: %s", self.error)
            return
        if overruns:
            self.overruns += overruns
        for r in refused:
            self.logged += 1
            self.handle(r)

    def handle(self, r: Refused, now: float | None = None) -> None:
        """One refused inbound packet -> an alert on the container it was for."""
        c = self.inventory.by_ip(r.dst)
        if c is None or self.alerts is None:
            self.unattributed += 1
            return
        from ..detect import attack, rules  # the detector's severities, rule names and ATT&CK tags

        remote = self.inventory.by_ip(r.src)
        peer = f"{remote.app}/{remote.service}" if remote is not None and remote.id != c.id else r.src
        port = r.dport
        detail = {"direction": "in", "proto": r.proto, "local_ip": r.dst, "local_port": r.dport,
                  "remote_ip": r.src, "remote_port": r.sport, "peer": peer,
                  "peer_container": remote.name if remote is not None else "", "pid": 0, "comm": "",
                  "refused_by": "kernel (default-deny)"}
        what = f"{r.proto}/{port}" if port else r.proto
        subject = f"in {r.proto} {peer} {port}"
        self.alerts.raise_alert(c, "network", rules.SEVERITY["network.in"],
                                f"refused inbound {what} from {peer}", detail, subject=subject,
                                rule=rules.RULE_PROFILE, action="blocked",
                                tags=attack.techniques("network", rules.RULE_PROFILE, subject, detail))
        self.alerted += 1
        self._recent[c.id] = (c, time.monotonic() if now is None else now)
        if len(self._recent) > 1024:
            cutoff = (time.monotonic() if now is None else now) - RECENT_WINDOW
            self._recent = {k: v for k, v in self._recent.items() if v[1] >= cutoff}

    async def _poll_loop(self) -> None:
        assert self.unlogged_counters is not None
        while True:
            await asyncio.sleep(UNLOGGED_POLL)
            try:
                total = await self.unlogged_counters()
            except Exception as e:  # noqa: BLE001 - the packets are refused regardless
                self.error = f"reading the unlogged counters: {e}"
                continue
            self.note_unlogged(total)

    def note_unlogged(self, total: int, now: float | None = None) -> None:
        """The kernel's count of refusals over the log limit; a rise raises one alert
        (folded per container) on the containers whose refusals were logged just before."""
        if self._unlogged_base is None or total < self._unlogged_base:
            self._unlogged_base = total  # the first read, or the rules were rewritten (counters restart)
            return
        grown = total - self._unlogged_base
        self._unlogged_base = total
        if grown <= 0:
            return
        self.unlogged += grown
        if self.alerts is None:
            return
        now = time.monotonic() if now is None else now
        recent = [c for c, t in self._recent.values() if now - t <= RECENT_WINDOW + UNLOGGED_POLL]
        if not recent and self._recent:
            recent = [max(self._recent.values(), key=lambda v: v[1])[0]]
        from ..detect import rules

        for c in recent:
            self.alerts.raise_alert(
                c, "network", rules.SEVERITY["network.in"],
                "inbound refusals over the log limit: refused by the kernel, not alerted one by one "
                "(status: enforcement.refusals.unlogged)",
                {"unlogged": grown, "unlogged_total": self.unlogged, "refused_by": "kernel (default-deny)"},
                subject="in refused over log limit", rule=rules.RULE_PROFILE, action="blocked", fold_burst=False)
            self.limit_alerts += 1


__all__ = ["LOG_PREFIX", "NflogSocket", "Refused", "RefusalWatch", "parse_datagram", "parse_packet"]
