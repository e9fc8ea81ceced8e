"""Refused inbound packets told by the kernel (enforce/refusals.py): the nfnetlink_log
wire format parsed with struct, the alert per refused flow, the over-limit counter.
The real NFLOG path is tested in tests/integration/test_protect_network.py."""

from __future__ import annotations

import ipaddress
import struct
from types import SimpleNamespace

from enforcer.enforce import refusals as F
from enforcer.enforce import ruleset as R
from enforcer.models import Container, NetworkAttachment


def _ipv4_tcp(src: str, dst: str, sport: int, dport: int) -> bytes:
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, ipaddress.IPv4Address(src).packed,
                     ipaddress.IPv4Address(dst).packed)
    return ip + struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 1024, 0, 0)


def _ipv6_udp_with_hop_by_hop(src: str, dst: str, sport: int, dport: int) -> bytes:
    ip = struct.pack(">IHBB16s16s", 6 << 28, 16, 0, 64, ipaddress.IPv6Address(src).packed,
                     ipaddress.IPv6Address(dst).packed)
    hop = bytes([17, 0]) + b"\0" * 6
    return ip + hop + struct.pack(">HHHH", sport, dport, 8, 0)


def _packet_message(payload: bytes, prefix: str = R.LOG_PREFIX, family: int = 2) -> bytes:
    body = struct.pack("=BB", family, 0) + struct.pack(">H", 1234)
    body += F._attr(F.NFULA_PACKET_HDR, struct.pack(">HBx", 0x0800, 3))
    body += F._attr(F.NFULA_PREFIX, prefix.encode() + b"\0")
    body += F._attr(F.NFULA_PAYLOAD | 0x8000 * 0, payload)
    kind = (F.NFNL_SUBSYS_ULOG << 8) | F.NFULNL_MSG_PACKET
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_config_message_binds_the_group_with_its_number_big_endian():
    msg = F.config_message(20001, F.bind_attrs(), seq=7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) and length % 4 == 0
    assert kind == (4 << 8) | 1 and flags == F.NLM_F_REQUEST | F.NLM_F_ACK and seq == 7
    assert struct.unpack_from(">H", msg, 18)[0] == 20001
    attrs = F.parse_attrs(msg[20:])
    assert attrs[F.NFULA_CFG_CMD][:1] == bytes([F.NFULNL_CFG_CMD_BIND])
    assert struct.unpack(">IBB", attrs[F.NFULA_CFG_MODE]) == (F.COPY_RANGE, F.NFULNL_COPY_PACKET, 0)


def test_packet_messages_parse_v4_and_v6_with_an_extension_header():
    data = (_packet_message(_ipv4_tcp("172.28.5.9", "172.28.5.2", 40000, 8080))
            + _packet_message(_ipv6_udp_with_hop_by_hop("fd00::9", "fd00::2", 5353, 53), family=10))
    refused, errors = F.parse_datagram(data)
    assert errors == []
    assert refused == [F.Refused(R.LOG_PREFIX, 4, "tcp", "172.28.5.9", "172.28.5.2", 40000, 8080),
                       F.Refused(R.LOG_PREFIX, 6, "udp", "fd00::9", "fd00::2", 5353, 53)]


def test_garbage_and_truncation_never_raise():
    good = _packet_message(_ipv4_tcp("10.0.0.1", "10.0.0.2", 1, 2))
    for cut in range(len(good)):
        F.parse_datagram(good[:cut])  # a truncated message is dropped, never a crash
    assert F.parse_packet(b"\x45" + b"\0" * 5) is None
    assert F.parse_packet(b"\x99" * 60) is None
    icmp = bytearray(_ipv4_tcp("10.0.0.1", "10.0.0.2", 1, 2))
    icmp[9] = 1
    assert F.parse_packet(bytes(icmp))[1:] == ("icmp", "10.0.0.1", "10.0.0.2", 0, 0)
    frag = bytearray(_ipv4_tcp("10.0.0.1", "10.0.0.2", 1, 2))
    frag[6:8] = struct.pack(">H", 10)  # a later fragment: its bytes are not a TCP header
    assert F.parse_packet(bytes(frag))[4:] == (0, 0)


def test_an_error_message_is_reported_by_errno():
    err = struct.pack("=IHHII", 36, F.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -16) + b"\0" * 16
    assert F.parse_datagram(err) == ([], [16])


class _Alerts:
    def __init__(self) -> None:
        self.raised: list[dict] = []

    def raise_alert(self, c, kind, severity, summary, detail, subject, rule, action="alerted", when=None,
                    fold_burst=True, **kw):
        self.raised.append({"container": c.name, "kind": kind, "summary": summary, "detail": detail,
                            "subject": subject, "action": action, "fold_burst": fold_burst})


def _inventory(*containers: Container):
    by = {a: c for c in containers for a in c.addresses()}
    return SimpleNamespace(by_ip=by.get)


def _c(name: str, ip: str, app: str = "shop") -> Container:
    return Container(id=f"id-{name}", name=name, app=app, service=name, image="i", state="running",
                     networks=[NetworkAttachment("n", ip=ip)])


def test_a_refused_inbound_packet_is_an_alert_on_the_protected_container_with_action_blocked():
    db, stranger = _c("db", "172.28.5.2"), _c("stranger", "172.28.5.9", app="other")
    alerts = _Alerts()
    w = F.RefusalWatch("t", _inventory(db, stranger), alerts)
    w.handle(F.Refused(R.LOG_PREFIX, 4, "tcp", "172.28.5.9", "172.28.5.2", 40000, 8080))
    w.handle(F.Refused(R.LOG_PREFIX, 4, "tcp", "192.0.2.7", "172.28.5.2", 40001, 22))
    w.handle(F.Refused(R.LOG_PREFIX, 4, "tcp", "192.0.2.7", "172.28.5.77", 40001, 22))  # no container
    a, b = alerts.raised
    assert (a["container"], a["kind"], a["action"], a["detail"]["direction"]) == ("db", "network", "blocked", "in")
    assert a["detail"]["peer"] == "other/stranger" and a["detail"]["peer_container"] == "stranger"
    assert a["subject"] == "in tcp other/stranger 8080" and a["fold_burst"]  # folds like the detector's
    assert b["detail"]["peer"] == "192.0.2.7" and b["detail"]["local_port"] == 22
    assert w.unattributed == 1 and w.alerted == 2


def test_the_over_limit_counter_is_shown_and_raises_one_alert_per_rise():
    db = _c("db", "172.28.5.2")
    alerts = _Alerts()
    w = F.RefusalWatch("t", _inventory(db), alerts)
    w.note_unlogged(0, now=100.0)  # first read: the baseline
    w.handle(F.Refused(R.LOG_PREFIX, 4, "tcp", "192.0.2.7", "172.28.5.2", 1, 80), now=100.0)
    w.note_unlogged(0, now=101.0)
    assert w.unlogged == 0 and len(alerts.raised) == 1
    w.note_unlogged(4900, now=102.0)
    assert w.unlogged == 4900 and w.status()["unlogged"] == 4900
    limit = alerts.raised[-1]
    assert limit["container"] == "db" and limit["action"] == "blocked" and not limit["fold_burst"]
    assert limit["detail"]["unlogged"] == 4900
    w.note_unlogged(10, now=103.0)  # the rules were rewritten: counting starts again
    w.note_unlogged(15, now=104.0)
    assert w.unlogged == 4905


def test_the_inbound_refusal_rules_log_within_a_limit_and_refuse_over_it():
    chains = R.policy_rules(R.log_group("stockade"))
    tail = [(c, v) for c, _, v in chains["policy-in4"] if c]
    assert [c for c, _ in tail] == ["deny-in4-tcp-unlogged", "deny-in4-tcp", "deny-in4-unlogged", "deny-in4"]
    for comment, verdict in tail:
        assert "reject" in verdict[-1]  # over the limit or not: refused
        logged = [s["log"] for s in verdict if "log" in s]
        assert bool(logged) == (not comment.endswith(R.UNLOGGED))
        if logged:
            assert logged[0]["group"] == R.log_group("stockade")
    over = [m for c, m, _ in chains["policy-in4"] if c.endswith(R.UNLOGGED)]
    assert all(m[-1]["limit"]["inv"] for m in over)
    assert not [c for c, _, v in chains["policy-out4"] if any("log" in s for s in v)]  # the sensors see outbound
    assert R.log_group("a") != R.log_group("b") and 0x4000 <= R.log_group("x") < 0x8000
