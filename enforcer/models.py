"""The data model shared by the enforcer, the store, the socket and the console.

One definition of each record. Everything here is plain data with `to_dict()` /
`from_dict()` so that the socket protocol (JSON) and the store (SQLite rows) agree on
field names. Nothing here imports Docker, bcc or Textual: the console imports it too.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

Mode = Literal["learn", "alert", "protect"]
MODES: tuple[str, ...] = ("learn", "alert", "protect")

AlertKind = Literal["process", "network", "file", "syscall", "threat"]
ALERT_KINDS: tuple[str, ...] = ("process", "network", "file", "syscall", "threat")

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")

AlertAction = Literal["alerted", "killed", "blocked", "frozen", "denied"]
ALERT_ACTIONS: tuple[str, ...] = ("alerted", "killed", "blocked", "frozen", "denied")
ALERT_WOULD: tuple[str, ...] = ("killed", "blocked")

ProfileState = Literal["learning", "active"]

# A threat feed's body format (the feeds layer parses them; the CLI offers them as choices).
FeedFormat = Literal["ip-list", "domain-list", "sha256-list", "md5-list", "sha1-list", "csv", "stix"]
FORMATS: tuple[str, ...] = ("ip-list", "domain-list", "sha256-list", "md5-list", "sha1-list", "csv", "stix")

# An alert output's payload format (enforcer/outputs/formats.py; the CLI offers them as choices).
OUTPUT_FORMATS: tuple[str, ...] = ("json", "falco", "ocsf")

# A lone container (no compose project label) is an app of one service, named after it.
LONE_APP_PREFIX = ""


# A block's peer as typed: here, not in the enforcer's blocks module, because the CLI checks
# it before it asks (and the console imports nothing of the enforcer but this and the protocol).
_PORT_SUFFIX = re.compile(r"^(?P<host>.+):(?P<port>\d{1,5})$")
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?::(?P<port>\d{1,5}))?$")


class BadPeer(ValueError):
    """A peer or port that cannot be used; the message is one line."""


def split_peer_port(text: str) -> tuple[str, int | None]:
    """`db:5432` -> ("db", 5432); `10.0.0.0/8:53` -> ("10.0.0.0/8", 53); `[fd00::1]:80`;
    a bare IPv6 address keeps its colons (`fd00::1` has no port)."""
    text = text.strip()
    if not text:
        raise BadPeer("name a peer: a container, an address or a CIDR")
    m = _BRACKETED.match(text)
    if m:
        return m["host"], check_port(int(m["port"])) if m["port"] else None
    if text.count(":") > 1:  # IPv6 without brackets: no port
        return text, None
    m = _PORT_SUFFIX.match(text)
    if m:
        return m["host"], check_port(int(m["port"]))
    return text, None


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise BadPeer(f"port {port} is not from 1 to 65535")
    return port


def iso_time(epoch: float | None = None) -> str:
    """UTC ISO-8601 with milliseconds and a Z, the one time format on the wire."""
    t = time.time() if epoch is None else epoch
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{int((t % 1) * 1000):03d}Z"
    )


def parse_iso_time(text: str) -> float:
    """Inverse of iso_time (also accepts Docker's nanosecond timestamps)."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Docker writes 9 fractional digits; fromisoformat takes at most 6.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        tail = ""
        for i, ch in enumerate(rest):
            if ch.isdigit():
                digits += ch
            else:
                tail = rest[i:]
                break
        text = f"{head}.{digits[:6] or '0'}{tail}"
    return datetime.fromisoformat(text).timestamp()


class Record:
    """Mixin: dataclass <-> plain dict, ignoring unknown keys so old clients keep working."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):  # type: ignore[no-untyped-def]
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class NetworkAttachment(Record):
    network: str
    ip: str = ""
    ipv6: str = ""
    mac: str = ""
    aliases: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PortBinding(Record):
    port: int
    proto: str = "tcp"
    host_ip: str = ""
    host_port: int | None = None


@dataclass(slots=True)
class Container(Record):
    id: str
    name: str
    app: str
    service: str
    image: str
    image_id: str = ""  # local image id (sha256:...), the "digest" profiles are keyed by
    image_digest: str = ""  # repo digest when the image came from a registry, else image_id
    state: str = "created"  # running | paused | exited | created | restarting | removing | dead
    pid: int = 0  # init process on the host, 0 when not running
    pids: list[int] = field(default_factory=list)
    cgroup_id: int = 0  # inode of the container's cgroup v2 directory, 0 when unknown
    cgroup_path: str = ""
    networks: list[NetworkAttachment] = field(default_factory=list)
    ports: list[PortBinding] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    compose_files: list[str] = field(default_factory=list)
    started_at: float = 0.0
    created_at: float = 0.0
    # Filled by the profiles layer; shown by the CLI and console.
    mode: str = ""
    profile_state: str = ""
    learning_left: float = 0.0
    frozen: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def addresses(self) -> list[str]:
        out: list[str] = []
        for n in self.networks:
            if n.ip:
                out.append(n.ip)
            if n.ipv6:
                out.append(n.ipv6)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Container":
        data = dict(data)
        data["networks"] = [NetworkAttachment.from_dict(n) for n in data.get("networks", [])]
        data["ports"] = [PortBinding.from_dict(p) for p in data.get("ports", [])]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class ServiceDecl(Record):
    """What a compose file declares for one service: the topology profiles are seeded from."""

    name: str
    image: str = ""
    links: list[str] = field(default_factory=list)  # target service names
    depends_on: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    ports: list[PortBinding] = field(default_factory=list)  # published
    expose: list[PortBinding] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    read_only: bool = False
    tmpfs: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)  # container-side mount points

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ServiceDecl":
        data = dict(data)
        data["ports"] = [PortBinding.from_dict(p) for p in data.get("ports", [])]
        data["expose"] = [PortBinding.from_dict(p) for p in data.get("expose", [])]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class ComposeTopology(Record):
    project: str
    files: list[str] = field(default_factory=list)
    services: dict[str, ServiceDecl] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)
    error: str = ""  # one line, when the file could not be read or parsed

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ComposeTopology":
        data = dict(data)
        data["services"] = {
            k: ServiceDecl.from_dict(v) for k, v in data.get("services", {}).items()
        }
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class App(Record):
    name: str
    services: dict[str, list[str]] = field(default_factory=dict)  # service -> container ids
    compose: ComposeTopology | None = None
    mode: str = "alert"
    lone: bool = False  # a container without a compose project label

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "App":
        data = dict(data)
        if data.get("compose"):
            data["compose"] = ComposeTopology.from_dict(data["compose"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class Alert(Record):
    """One incident: repeats of one (container, kind, subject) fold into it (count, first, last).

    Field names are the alert contract of DESIGN.md; `first_seen`, `last_seen`, `subject`
    and `rule` are additions that the contract allows (consumers ignore unknown keys).
    `would` and `tags` are the contract's dry run of protect mode and ATT&CK techniques.
    """

    id: int
    time: str  # last seen, ISO-8601 UTC
    host: str
    app: str
    service: str
    container: str
    container_id: str
    image: str
    kind: str
    severity: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)
    action: str = "alerted"
    count: int = 1
    first_seen: str = ""
    last_seen: str = ""
    subject: str = ""  # the folding key's last part, e.g. "/usr/bin/wget"
    rule: str = ""  # what fired: "profile", "research:sensitive-file", "feed:NAME", ...
    # In learn and alert modes: what protect mode would have done (killed | blocked | None).
    would: str | None = None
    tags: list[str] = field(default_factory=list)  # MITRE ATT&CK technique ids
    resolved: str = ""  # "allowed by USER at TIME" once accepted into the profile
    # The root of the process's lineage in the container ({"pid", "path", "start"}): the
    # entrypoint or a `docker exec`; what groups an intrusion into one story.
    lineage: dict[str, Any] | None = None


@dataclass(slots=True)
class AuditEntry(Record):
    id: int
    time: str
    uid: int
    user: str
    action: str  # op name: block, freeze, mode, feeds.sync ...
    target: str
    args: dict[str, Any] = field(default_factory=dict)
    result: str = "ok"  # ok | error: <one line>


@dataclass(slots=True)
class SensorStats(Record):
    name: str
    events: int = 0
    lost: int = 0
    rate: float = 0.0  # events per second over the last few seconds
    loaded: bool = False
    error: str = ""
    suppressed: int = 0  # over a per-container rate cap in the kernel (counted, not sent)
    deduped: int = 0  # repeats of an already sent (container, subject), dropped in the kernel
    lost_ring: int = 0  # of `lost`: the kernel's ring buffer was full
    lost_queue: int = 0  # of `lost`: the enforcer's event queue was full
