"""A profile: what one service of one app, on one image digest, is allowed to do.

Entries are kept twice: as records (key, data, source, first seen) for display and
storage, and as the lookup structures the detector asks per event (sets and dicts, each
check well under a microsecond). Both are changed only through `Profile.add`, so they
never disagree.

Entry keys are canonical text, unique per kind:
  process   "/bin/wget sha256:<hex>"   ("sha256:*" for a seeded path not yet pinned;
                                        "/proc/self/exe:wget ..." for a busybox applet,
                                        "/bin/sh:nc ..." for a multi-call binary's applet)
  listener  "tcp/8080"
  peer      "out tcp blog/db 3306"     (direction, proto, peer, port or "*")
  file      "/var/log/nginx/" (a prefix, ends in "/") or "/etc/hostname" (one file)
  syscall   "openat"                   (or "#NR" when the name is unknown)
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass, field
from typing import Any

PROFILE_KINDS: tuple[str, ...] = ("process", "listener", "peer", "file", "syscall")

ANY = "*"  # wildcard peer or port
MAX_USE_ASKED = 4096  # flows and paths remembered as asked about (then forgotten at once)
LOOPBACK = "loopback"  # the container talking to itself


@dataclass(slots=True)
class Entry:
    kind: str
    key: str
    data: dict[str, Any]
    source: str = "learned"  # seed | learned | allowed (by a person: data has "by", "alert_id")
    first_seen: float = 0.0
    # Seen in use while the profile learned. Only a seed can be unused: it is declared (compose
    # file, image config), not observed; "seeded, never used" is what `profile prune` removes.
    used: bool = True

    @property
    def never_used(self) -> bool:
        return self.source == "seed" and not self.used

    def to_dict(self) -> dict[str, Any]:
        out = {"key": self.key, "data": self.data, "source": self.source, "first_seen": self.first_seen,
               "used": self.used}
        if self.never_used:
            out["never_used"] = True
        return out


# -- entry constructors: one canonical key per thing -------------------------------------
_SELF_EXE = re.compile(r"^/proc/(self|thread-self|\d+)/exe$")
APPLET_LEN = 48  # bytes of argv[0] the kernel reads for the applet (with its NUL): bpf/process.c


def applet_of(argv: list[str]) -> str:
    """The applet a multi-call binary runs as: basename(argv[0]), exactly as the kernel
    computes it; "" when argv[0] names none both sides can agree on: empty, ending in '/',
    or APPLET_LEN - 1 bytes or longer (the kernel reads no more, and the basename the
    binary uses may lie past that)."""
    if not argv or not argv[0]:
        return ""
    raw = argv[0].encode("utf-8", "surrogateescape")
    if len(raw) >= APPLET_LEN - 1:
        return ""
    return raw.rsplit(b"/", 1)[-1].decode("utf-8", "surrogateescape")


def exec_identity(path: str, argv: list[str], multicall: bool = False) -> str:
    """The name a program is profiled under: the path as executed, except where argv[0]
    decides what runs. A multi-call binary (busybox, toybox: `multicall`, classified by its
    content) run as another applet than its own name is keyed "PATH:APPLET": `/bin/sh` run as
    `nc` is "/bin/sh:nc", run as `sh` it stays "/bin/sh" (and allows only sh); an argv[0]
    that names no applet is "PATH:" (fails closed). A process re-executing its own image
    (busybox sh runs applets as /proc/self/exe) is "/proc/self/exe:wget". The kernel keys
    its allow-list the same way (bpf/process.c)."""
    if _SELF_EXE.match(path):
        applet = applet_of(argv)
        return "/proc/self/exe" if applet == "exe" else f"/proc/self/exe:{applet}"
    if multicall:
        applet = applet_of(argv)
        own = path.encode("utf-8", "surrogateescape")[:255].rsplit(b"/", 1)[-1].decode("utf-8", "surrogateescape")
        return path if applet == own else f"{path}:{applet}"
    return path


def process_entry(path: str, sha256: str, source: str = "learned", now: float | None = None,
                  binary: str = "", exe: str = "") -> Entry:
    """`path` is the exec identity; `exe`, when set, the multi-call binary's path as executed
    (the identity is "EXE:APPLET"), which the kernel must then key by applet."""
    key = f"{path} sha256:{sha256 or ANY}"
    data: dict[str, Any] = {"path": path, "sha256": sha256}
    if binary and binary != path:
        data["binary"] = binary  # what the path resolved to (e.g. /bin/busybox for /bin/wget)
    if exe:
        data["multicall"] = exe
    return Entry("process", key, data, source, now or time.time())


def listener_entry(proto: str, port: int, source: str = "learned", now: float | None = None) -> Entry:
    return Entry("listener", f"{proto}/{port}", {"proto": proto, "port": port}, source, now or time.time())


def peer_entry(direction: str, proto: str, peer: str, port: int | str, source: str = "learned",
               now: float | None = None) -> Entry:
    return Entry("peer", f"{direction} {proto} {peer} {port}",
                 {"direction": direction, "proto": proto, "peer": peer, "port": port}, source, now or time.time())


def file_entry(path: str, source: str = "learned", now: float | None = None) -> Entry:
    """A prefix when `path` ends in "/", else one exact file."""
    data = {"prefix": path} if path.endswith("/") else {"path": path}
    return Entry("file", path, data, source, now or time.time())


def syscall_entry(nr: int, name: str, source: str = "learned", now: float | None = None) -> Entry:
    return Entry("syscall", name or f"#{nr}", {"nr": nr, "name": name}, source, now or time.time())


@dataclass(slots=True)
class Profile:
    id: int
    app: str
    service: str
    image_digest: str
    state: str = "learning"  # learning | active
    created: float = 0.0
    learn_until: float = 0.0
    activated: float | None = None
    # Why what was learned may be incomplete (events lost, start-up unseen, ...): said out
    # loud so an operator knows before moving to protect. Empty: complete.
    gaps: list[str] = field(default_factory=list)
    last_change: float = 0.0  # when learning last added an entry (stability is measured from it)
    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in PROFILE_KINDS})
    # -- lookups for the detector ---------------------------------------------------------
    processes: dict[str, set[str]] = field(default_factory=dict)  # path -> sha256s ("" = not pinned)
    binaries: set[str] = field(default_factory=set)  # resolved binaries of learned paths
    multicall_paths: set[str] = field(default_factory=set)  # exec paths keyed by applet
    listeners: set[tuple[str, int]] = field(default_factory=set)
    peers: set[tuple[str, str, str, int | str]] = field(default_factory=set)  # (dir, proto, peer, port)
    peer_networks: list[tuple[str, str, Any, int | str]] = field(default_factory=list)  # CIDR peers
    file_prefixes: set[str] = field(default_factory=set)  # "dir/" prefixes and exact paths
    syscalls: set[int] = field(default_factory=set)
    syscall_names: set[str] = field(default_factory=set)
    # Paths whose binary was written to since it was pinned: kept out of the kernel's exec
    # allow-list so that the next exec is checked again (sha256) in user space.
    suspect_paths: set[str] = field(default_factory=set)
    # (kind, key) of the seeds not seen in use yet: the detector looks here only while it is
    # not empty (a learning profile whose declared links have all been used costs nothing).
    unused: set[tuple[str, str]] = field(default_factory=set)
    # (kind, key) of the seeds a person pruned: seeding (every start of a container of the
    # profile) does not bring them back.
    pruned: set[tuple[str, str]] = field(default_factory=set)
    # What the detector already asked about use (a flow, a written path): asked once, not per
    # event. Forgotten whenever an unused seed appears; bounded.
    use_asked: set[Any] = field(default_factory=set)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.app, self.service, self.image_digest)

    # -- changing -------------------------------------------------------------------------
    def add(self, entry: Entry) -> bool:
        """Add an entry; True if it is new (the caller stores it). A seed upgrades a learned one."""
        if entry.source == "seed" and self.pruned and (entry.kind, entry.key) in self.pruned:
            return False
        table = self.entries[entry.kind]
        existing = table.get(entry.key)
        if existing is not None:
            if entry.source == "seed" and existing.source != "seed":
                existing.source = "seed"  # stays used: it was learned, so it was seen
                return True
            return False
        table[entry.key] = entry
        self._index(entry)
        return True

    def remove(self, kind: str, key: str) -> Entry | None:
        """Take one entry out (an allowance withdrawn); the lookups are rebuilt."""
        entry = self.entries.get(kind, {}).pop(key, None)
        if entry is not None:
            suspects = set(self.suspect_paths)
            self.replace_entries([e for table in self.entries.values() for e in table.values()])
            self.suspect_paths.update(suspects)
        return entry

    def replace_entries(self, entries: list[Entry]) -> None:
        """Every entry replaced by these (an imported profile)."""
        self.entries = {k: {} for k in PROFILE_KINDS}
        self._clear_indexes()
        for e in entries:
            self.add(e)

    def _clear_indexes(self) -> None:
        self.processes.clear()
        self.binaries.clear()
        self.multicall_paths.clear()
        self.listeners.clear()
        self.peers.clear()
        self.peer_networks.clear()
        self.file_prefixes.clear()
        self.syscalls.clear()
        self.syscall_names.clear()
        self.suspect_paths.clear()
        self.unused.clear()

    def clear_learned(self) -> None:
        """Forget what was learned; keep the seed and what a person allowed (relearn)."""
        seeds = [e for kind in self.entries.values() for e in kind.values() if e.source != "learned"]
        self.entries = {k: {} for k in PROFILE_KINDS}
        self._clear_indexes()
        for e in seeds:
            self.add(e)

    def first_use_question(self, what: Any) -> bool:
        """True the first time `what` (a hashable: a flow, a path) is asked about, while seeds
        are unused: the detector then looks up the seed keys it may use."""
        asked = self.use_asked
        if what in asked:
            return False
        if len(asked) >= MAX_USE_ASKED:
            asked.clear()
        asked.add(what)
        return True

    def mark_used(self, kind: str, key: str) -> Entry | None:
        """A seed seen in use: the entry when it was unused until now, else None."""
        if (kind, key) not in self.unused:
            return None
        self.unused.discard((kind, key))
        entry = self.entries[kind].get(key)
        if entry is not None:
            entry.used = True
        return entry

    def forget_use(self) -> list[Entry]:
        """Every seed unused again (a relearn observes afresh); the seeds changed."""
        out = []
        self.use_asked.clear()
        for table in self.entries.values():
            for e in table.values():
                if e.source == "seed" and e.used:
                    e.used = False
                    self.unused.add((e.kind, e.key))
                    out.append(e)
        return out

    def never_used(self) -> list[Entry]:
        """The seeds never seen in use, in a stable order (kind, then key)."""
        return [e for kind in PROFILE_KINDS for _, e in sorted(self.entries[kind].items()) if e.never_used]

    # Keys of the entries that can allow one event (the detector's questions, answered by key).
    @staticmethod
    def peer_keys(direction: str, proto: str, peer: str, port: int | str) -> tuple[str, ...]:
        return (f"{direction} {proto} {peer} {port}", f"{direction} {proto} {peer} {ANY}",
                f"{direction} {proto} {ANY} {port}")

    @staticmethod
    def file_keys(path: str) -> list[str]:
        out = [path]
        end = len(path)
        while True:
            end = path.rfind("/", 0, end)
            if end <= 0:
                return out
            out.append(path[: end + 1])

    def _index(self, e: Entry) -> None:
        if e.source == "seed" and not e.used:
            self.unused.add((e.kind, e.key))
            self.use_asked.clear()  # what was asked before may use this one
        d = e.data
        if e.kind == "process":
            self.processes.setdefault(d["path"], set()).add(d.get("sha256") or "")
            if d.get("binary"):
                self.binaries.add(d["binary"])
            if d.get("multicall"):
                self.multicall_paths.add(d["multicall"])
        elif e.kind == "listener":
            self.listeners.add((d["proto"], int(d["port"])))
        elif e.kind == "peer":
            peer = str(d["peer"])
            port = d["port"] if d["port"] == ANY else int(d["port"])
            self.peers.add((d["direction"], d["proto"], peer, port))
            if "/" in peer and peer != ANY:  # a CIDR (an "app/service" peer does not parse)
                try:
                    self.peer_networks.append((d["direction"], d["proto"],
                                               ipaddress.ip_network(peer, strict=False), port))
                except ValueError:
                    pass
        elif e.kind == "file":
            self.file_prefixes.add(e.key)
        elif e.kind == "syscall":
            if d.get("nr", -1) >= 0:
                self.syscalls.add(int(d["nr"]))
            if d.get("name"):
                self.syscall_names.add(d["name"])

    # -- questions the detector asks --------------------------------------------------------
    def process_verdict(self, path: str, sha256: str) -> str:
        """"known", "pin" (known path, first hash seen), "changed" (other hash),
        "unverified" (known path, but the binary could not be hashed: an empty sha256 is
        never taken for the learned binary) or "unknown"."""
        shas = self.processes.get(path)
        if shas is None:
            return "unknown"
        if not sha256:
            return "unverified"
        if sha256 in shas:
            return "known"
        if shas <= {""}:
            return "pin"
        return "changed"

    def pinned_sha(self, path: str) -> str:
        return next((s for s in sorted(self.processes.get(path, ())) if s), "")

    def allows_peer(self, direction: str, proto: str, peer: str, port: int, ip: str = "") -> bool:
        peers = self.peers
        # An inbound "*" (a published port) is any peer but a container ("app/service"):
        # containers reach it only when named (linked or learned), as the kernel policy says.
        any_peer = not (direction == "in" and "/" in peer)
        if ((direction, proto, peer, port) in peers or (direction, proto, peer, ANY) in peers
                or (any_peer and (direction, proto, ANY, port) in peers)):
            return True
        if ip and self.peer_networks:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            for d, p, net, prt in self.peer_networks:
                if d == direction and p == proto and (prt == ANY or prt == port) and addr in net:
                    return True
        return False

    def allows_write(self, path: str) -> bool:
        prefixes = self.file_prefixes
        if path in prefixes:
            return True
        # Walk the parents: /a/b/c -> "/a/b/", "/a/" (a handful of set lookups; "/" is never one).
        end = len(path)
        while True:
            end = path.rfind("/", 0, end)
            if end <= 0:
                return False
            if path[: end + 1] in prefixes:
                return True

    def allows_syscall(self, nr: int, name: str) -> bool:
        return nr in self.syscalls if nr >= 0 else name in self.syscall_names

    # -- what goes into the kernel ----------------------------------------------------------
    def kernel_exec_paths(self, self_exec_by_applet: bool = False) -> set[str]:
        """Paths the kernel may let run without asking: every known path not written to since.

        Seeded paths not pinned yet are included: protect mode must never kill a program
        the image declares; their hash is pinned at the first exec user space sees.
        Self-execs ("/proc/self/exe:wget") only when the kernel keys them by applet too
        (`self_exec_by_applet`); a kernel that sees only "/proc/self/exe" would otherwise
        let every applet through at once.
        """
        return {p for p in self.processes if p not in self.suspect_paths
                and (self_exec_by_applet or not p.startswith("/proc/"))}

    def kernel_multicall_paths(self) -> set[str]:
        """Exec paths the kernel must key by applet ("/bin/sh" of "/bin/sh:sh")."""
        return set(self.multicall_paths)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "app": self.app, "service": self.service,
                "image_digest": self.image_digest, "state": self.state, "complete": self.complete}

    @property
    def complete(self) -> bool:
        return not self.gaps

    def add_gap(self, reason: str) -> bool:
        """Record a reason the profile may be incomplete (once); True if it is new."""
        if reason in self.gaps:
            return False
        self.gaps.append(reason)
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(), "created": self.created, "learn_until": self.learn_until,
            "activated": self.activated, "complete": self.complete, "gaps": list(self.gaps),
            "entries": {k: [e.to_dict() for e in sorted(v.values(), key=lambda e: e.key)]
                        for k, v in self.entries.items()},
        }
