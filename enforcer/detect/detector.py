"""The detector: sensor event x profile x feeds -> alert.

It drains the event queue in batches and decides each event synchronously, with
dictionary and set lookups only: no database, no await per event. Per event:

1. research rules, in every mode (learning too): feed hits (exec and written-file
   sha256, peer address, DNS name), sensitive files, dangerous syscalls;
2. the profile: while the container learns (profile learning, or mode `learn`) what is
   seen is added; otherwise a miss is an alert;
3. protect mode: the alert goes to the responder's `respond(container, event, alert)`
   in a task of its own (the batch never waits for it), and the incident's action
   becomes what it answered ("killed", "blocked"). An exec the kernel already killed is
   raised with action "killed".

A changed binary: a write to a learned exec path (or to the binary it resolves to) takes
that path out of the kernel's exec allow-list, so its next exec comes here and its sha256
is compared with the pinned one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import time
from collections import Counter, OrderedDict, deque
from typing import TYPE_CHECKING, Any

from ..models import Alert, Container
from ..ports import AlertSink, ContainerIndex, FeedMatcher, ProfileLookup, ProtectResponse
from ..profiles.book import Attachment
from ..profiles.model import (LOOPBACK, exec_identity, file_entry, listener_entry, peer_entry, process_entry,
                              syscall_entry)
from ..profiles.paths import generalise, is_noise, normalise
from ..sensors.hashing import OVER_BUDGET, QUEUE_FULL, STALLED
from ..sensors.events import (DnsEvent, ExecEvent, FileClosedEvent, FileEvent, ForkEvent, InodeEvent,
                              NetworkEvent, RewriteGuardFullEvent, SensorEvent, SyscallEvent)
from . import attack, rules
from .lineage import Lineage
from .alerts import BURST_SUBJECT

if TYPE_CHECKING:
    from ..feeds.models import FeedHit

log = logging.getLogger(__name__)

MAX_BATCH = 2000
DEFER_SECONDS = 2.0  # how long an unresolved private peer waits for the inventory
MAX_RUNS = 10_000  # program runs whose new syscalls are folded together (the oldest forgotten)
MAX_DEFERRED = 10_000  # beyond this (a flood to unknown addresses) decide at once: memory stays bounded
# An alert whose process the lineage tracker does not know yet (an inode-watch event can
# arrive before the exec event of its reader) waits this long for that exec or fork event,
# which fills its lineage in; at most this many wait (the oldest give up first).
LINEAGE_WAIT = 10.0
MAX_LINEAGE_WAITING = 10_000
WRITE_OPS = frozenset({"write", "create", "rename", "unlink", "chmod", "mkdir", "link", "symlink", "replace"})
LINK_OPS = frozenset({"link", "symlink"})  # their first path is reached, not written


class Detector:
    def __init__(self, events: asyncio.Queue[Any], inventory: ContainerIndex, profiles: ProfileLookup,
                 alerts: AlertSink, feeds: FeedMatcher | None = None,
                 responder: ProtectResponse | None = None) -> None:
        self.events = events
        self.inventory = inventory
        self.profiles = profiles
        self.alerts = alerts
        self.feeds = feeds
        self.responder = responder  # None: nothing can be stopped (alerts only)
        self.lineage = Lineage()
        # (container id, pid) -> (give up at (monotonic), alert ids waiting for its lineage)
        self._lineage_waiting: OrderedDict[tuple[str, int], tuple[float, list[int]]] = OrderedDict()
        self.lineage_late = 0  # alerts whose lineage was filled in when their process became known
        self._run_syscalls: dict[tuple[str, int], dict[str, int]] = {}  # (container, pid) -> name -> nr
        self._task: asyncio.Task[None] | None = None
        self._deferred_task: asyncio.Task[None] | None = None
        self._responses: set[asyncio.Task[None]] = set()
        self._responding: set[tuple[int, str]] = set()  # incidents handed to enforcement once (or being)
        self.counts: Counter[str] = Counter()
        self.unattributed = 0  # events of containers the inventory does not know
        self.runtime_execs = 0  # `runc init` entering a container for docker exec
        self.runtime_syscalls = 0  # syscalls of runc init, not the app's
        self.deferred = 0  # network events decided late, once the inventory knew the peer
        self._deferred: deque[tuple[float, NetworkEvent]] = deque()
        self._deferred_wake = asyncio.Event()
        self.errors = 0
        self.last_error = ""

    # -- component ------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="detector")
        self._deferred_task = asyncio.create_task(self._run_deferred(), name="detector-deferred")

    async def stop(self) -> None:
        for task in (self._task, self._deferred_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for t in list(self._responses):
            t.cancel()

    def status(self) -> dict[str, Any]:
        return {"detector": {"events": sum(self.counts.values()), "by_type": dict(self.counts),
                             "unattributed": self.unattributed, "alerts_raised": self.alerts.raised,
                             "runtime_execs": self.runtime_execs, "runtime_syscalls": self.runtime_syscalls,
                             "deferred": self.deferred, "lineage_late": self.lineage_late,
                             "queued": self.events.qsize(), "errors": self.errors, "error": self.last_error}}

    async def _run(self) -> None:
        while True:
            batch = [await self.events.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.events.get_nowait())
                except asyncio.QueueEmpty:
                    break
            # (The raw `sensor` topic is published by the hub, where events are made.)
            for ev in batch:
                try:
                    self.handle(ev)
                except Exception as e:  # noqa: BLE001 - one bad event must not stop detection
                    self.errors += 1
                    if str(e) != self.last_error:
                        log.exception("detector: failed on %s", type(ev).__name__)
                    self.last_error = str(e)[:200]
            await asyncio.sleep(0)  # let the socket serve between batches

    async def _run_deferred(self) -> None:
        while True:
            if not self._deferred:
                self._deferred_wake.clear()
                await self._deferred_wake.wait()
                continue
            due, ev = self._deferred[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._deferred.popleft()
            self.deferred += 1
            att = self.profiles.for_container(ev.container_id)
            if att is not None:
                try:
                    self._network(att, ev, final=True)
                except Exception as e:  # noqa: BLE001
                    self.errors += 1
                    self.last_error = str(e)[:200]
                    log.exception("detector: failed on a deferred network event")

    # -- one event ------------------------------------------------------------------------
    def handle(self, ev: SensorEvent) -> None:
        self.counts[type(ev).__name__] += 1
        att = self.profiles.for_container(ev.container_id) if ev.container_id else None
        if att is None:
            self.unattributed += 1
            return
        self.lineage.observe(ev, att.container.pid)
        if self._lineage_waiting and isinstance(ev, (ExecEvent, ForkEvent)):
            self._fill_lineage(ev)
        if isinstance(ev, ExecEvent):
            self._exec(att, ev)
        elif isinstance(ev, NetworkEvent):
            self._network(att, ev)
        elif isinstance(ev, FileEvent):
            self._file(att, ev)
        elif isinstance(ev, FileClosedEvent):
            self._file_closed(att, ev)
        elif isinstance(ev, SyscallEvent):
            self._syscall(att, ev)
        elif isinstance(ev, DnsEvent):
            self._dns(att, ev)
        elif isinstance(ev, RewriteGuardFullEvent):
            self._alert(att, ev, "file", rules.SEVERITY["guard.full"],
                        "rewrite guard full: a file this container wrote could not be marked, so the kernel now "
                        "holds every exec of it (alert mode: each is checked; protect: each is killed) until it "
                        "restarts", {"marks_per_container": rules.REWRITE_MARKS_PER_CONTAINER},
                        subject="rewrite guard full", rule=rules.RULE_GUARD_FULL)
        # Fork and exit only build the process tree: nothing to decide.

    def _alert(self, att: Attachment, ev: SensorEvent, kind: str, severity: str, summary: str,
               detail: dict[str, Any], subject: str, rule: str, action: str = "alerted",
               refresh: bool = False) -> Alert:
        # The dry run of protect: what the responder would have done, had the mode been protect.
        would = None if att.mode == "protect" else _would_stop(ev)
        lineage = self.lineage.root_of(att.container.id, ev.pid)
        alert = self.alerts.raise_alert(att.container, kind, severity, summary, detail, subject, rule,
                                        action=action, when=ev.time or None, would=would,
                                        tags=attack.techniques(kind, rule, subject, detail),
                                        lineage=lineage, refresh=refresh)
        if lineage is None and alert.lineage is None and ev.pid > 0:
            self._await_lineage(att.container.id, ev.pid, alert.id)
        responder = self.responder
        # Keyed by subject too: the subjects folded into one burst incident each need a response.
        once = (alert.id, subject)
        answered = alert.action != "alerted" and alert.subject != BURST_SUBJECT
        if (att.mode == "protect" and att.profile.state == "active" and action == "alerted" and not answered
                and responder is not None and once not in self._responding):
            if len(self._responding) > 50_000:
                self._responding.clear()
            self._responding.add(once)
            task = asyncio.create_task(self._respond(responder, att.container, ev, alert))
            self._responses.add(task)
            task.add_done_callback(self._responses.discard)
        return alert

    # -- lineage known late ------------------------------------------------------------------
    def _await_lineage(self, container_id: str, pid: int, alert_id: int) -> None:
        """The alert's process is not known to the tracker yet: its exec (or the fork that
        made it) is still on its way. Keyed by container and pid, so a pid only ever names a
        process of the container the alert was charged to (it never leads outside it)."""
        now = time.monotonic()
        waiting = self._lineage_waiting
        while waiting and next(iter(waiting.values()))[0] < now:
            waiting.popitem(last=False)  # given up: the event was lost, or never comes
        key = (container_id, pid)
        entry = waiting.get(key)
        if entry is None:
            waiting[key] = (now + LINEAGE_WAIT, [alert_id])
            while len(waiting) > MAX_LINEAGE_WAITING:
                waiting.popitem(last=False)
        elif alert_id not in entry[1] and len(entry[1]) < 64:
            entry[1].append(alert_id)

    def _fill_lineage(self, ev: ExecEvent | ForkEvent) -> None:
        key = (ev.container_id, ev.child_pid if isinstance(ev, ForkEvent) else ev.pid)
        entry = self._lineage_waiting.get(key)
        if entry is None:
            return
        root = self.lineage.root_of(*key)
        if root is None:
            return  # a fork of a parent not known either: its exec will say
        del self._lineage_waiting[key]
        give_up, alert_ids = entry
        if time.monotonic() > give_up:
            return
        for alert_id in alert_ids:
            if self.alerts.set_lineage(alert_id, root):
                self.lineage_late += 1

    async def _respond(self, responder: ProtectResponse, c: Container, ev: SensorEvent, alert: Alert) -> None:
        try:
            action = await responder.respond(c, ev, alert)
        except Exception as e:  # noqa: BLE001 - the alert stands; say that the response failed
            log.warning("detector: protect response to alert %d failed: %s", alert.id, e)
            return
        if action:
            self.alerts.set_action(alert.id, action)

    def _threat(self, att: Attachment, ev: SensorEvent, hit: FeedHit, what: str, extra: dict[str, Any]) -> None:
        detail = {"feed": hit.feed, "indicator": hit.indicator, "type": hit.type, "matched": hit.matched,
                  "description": hit.description, "what": what, **extra}
        alert = self._alert(att, ev, "threat", rules.SEVERITY["threat"],
                            f"{what} {hit.matched} is on feed {hit.feed} ({hit.indicator})", detail,
                            subject=f"{hit.feed}:{hit.indicator}", rule=rules.rule_feed(hit.feed))
        if self.feeds is not None:
            try:
                self.feeds.record_hit(hit, att.container.name, att.container.id, alert.id)
            except Exception as e:  # noqa: BLE001 - the alert is what matters
                log.debug("detector: record_hit failed: %s", e)

    def _feed(self, match: str, value: str) -> FeedHit | None:
        if self.feeds is None or not value:
            return None
        if match == "ip":
            return self.feeds.match_ip(value)
        if match == "domain":
            return self.feeds.match_domain(value)
        return self.feeds.match_hash(value)

    # -- process ----------------------------------------------------------------------------
    def _exec(self, att: Attachment, ev: ExecEvent) -> None:
        if ev.path == "/proc/self/exe" and ev.argv[:2] == ["runc", "init"]:
            # `docker exec` enters through runc re-executing itself; what it then runs is
            # checked as usual. (A process re-executing itself gains nothing it did not have.)
            self.runtime_execs += 1
            return
        p = att.profile
        # Keyed by applet when the binary is multi-call by content, or when the profile (and
        # so the kernel) already keys this path by applet: both sides ask the same question.
        multicall = ev.multicall or ev.path in p.multicall_paths
        path = exec_identity(ev.path, ev.argv, multicall)
        exe = ev.path if multicall and not ev.path.startswith("/proc/") else ""
        detail = {"path": ev.path, "sha256": ev.sha256, "binary": ev.binary, "pid": ev.pid, "ppid": ev.ppid,
                  "uid": ev.uid, "argv": ev.argv, "argv_truncated": ev.argv_truncated, "killed": ev.killed}
        if ev.rewritten:
            detail["rewritten"] = True  # the kernel held it: its binary was opened for writing in a container
        if ev.other_file:
            detail["other_file"] = True  # the kernel held it: not the file found at the path when allowed
        if path != ev.path:
            detail["applet"] = path
        if exe:
            detail["multicall"] = True  # keyed by applet (what `allow` must key the entry by too)
        # Not hashed (skipped, stalled, queue full): never "known", and always said.
        unhashed = "" if ev.sha256 else (ev.hash_error or "not hashed")
        if unhashed:
            detail["hash_error"], detail["hash_reason"] = unhashed, ev.hash_reason
        hit = self._feed("hash", ev.sha256)
        if hit is not None:
            self._threat(att, ev, hit, "program", detail)
        verdict = p.process_verdict(path, ev.sha256)
        action = "killed" if ev.killed else "alerted"
        if verdict == "known":
            if ev.sha256:
                self.profiles.clear_suspect(p, path)
            if ev.killed:  # e.g. a path held back for a hash check, in protect mode
                why = (": its binary was rewritten in a container (same content as learned)" if ev.rewritten else
                       ": another file than the one allowed at that path (same content as learned)"
                       if ev.other_file else "")
                self._alert(att, ev, "process", rules.SEVERITY["process.unknown"], f"killed process {path}{why}",
                            detail, subject=path, rule=rules.RULE_PROFILE, action=action)
            return
        suspect = path in p.suspect_paths
        if att.learning or (verdict == "pin" and not suspect):
            # Learning trusts what runs; a seeded path is pinned to the first hash seen.
            # Unhashed, it is learned unpinned (pinned at its first hashed run).
            self.profiles.record(p, process_entry(path, ev.sha256, binary=ev.binary, exe=exe))
            if ev.sha256:
                self.profiles.clear_suspect(p, path)
            else:
                self._alert(att, ev, "process", rules.SEVERITY["unhashed"], f"binary not hashed: {unhashed}: {path}",
                            detail, subject=f"unhashed {path}", rule=rules.RULE_UNHASHED)
            return
        if verdict == "unverified":
            # A learned path whose binary cannot be hashed is treated as a changed binary:
            # an attacker who can stall or skip the hash must not pass as the learned one.
            self.profiles.mark_suspect(p, [path])
            detail["learned_sha256"] = p.pinned_sha(path)
            self._alert(att, ev, "process", rules.SEVERITY["process.unverified"],
                        f"binary could not be verified at learned path {path}: {unhashed}",
                        detail, subject=path, rule=rules.RULE_PROFILE, action=action)
            return
        if verdict in ("changed", "pin"):
            self.profiles.mark_suspect(p, [path])  # every later exec of it is checked too
            learned = p.pinned_sha(path)
            detail["learned_sha256"] = learned
            was = f"learned {learned[:12]}" if learned else "rewritten before its first run"
            self._alert(att, ev, "process", rules.SEVERITY["process.changed"],
                        f"binary changed at learned path {path}: sha256 {ev.sha256[:12]}, {was}",
                        detail, subject=path, rule=rules.RULE_PROFILE, action=action)
        else:
            what = "killed" if ev.killed else "unexpected"
            why = f" (binary not hashed: {unhashed})" if unhashed else ""
            self._alert(att, ev, "process", rules.SEVERITY["process.unknown"],
                        f"{what} process {path}{why}", detail, subject=path, rule=rules.RULE_PROFILE,
                        action=action)

    # -- network ------------------------------------------------------------------------------
    def _peer(self, att: Attachment, ev: NetworkEvent) -> tuple[str, Container | None]:
        ip = _plain_ip(ev.remote_ip)
        remote = self.inventory.containers.get(ev.remote_container_id) if ev.remote_container_id else None
        if remote is None and ip:
            remote = self.inventory.by_ip(ip)
        if remote is not None:
            if remote.id == att.container.id:
                return LOOPBACK, remote
            return f"{remote.app}/{remote.service}", remote
        if ip and _is_loopback(ip):
            return LOOPBACK, None
        return ip or "?", None

    def _network(self, att: Attachment, ev: NetworkEvent, final: bool = False) -> None:
        p = att.profile
        if ev.direction == "listen":
            if not ev.local_port:
                return
            if (ev.proto, ev.local_port) in p.listeners:
                if p.unused and att.learning:
                    self.profiles.note_use(p, "listener", (f"{ev.proto}/{ev.local_port}",))
                return
            if att.learning:
                self.profiles.record(p, listener_entry(ev.proto, ev.local_port))
                return
            self._alert(att, ev, "network", rules.SEVERITY["network.listener"],
                        f"new listening port {ev.proto}/{ev.local_port}",
                        {"direction": "listen", "proto": ev.proto, "local_ip": ev.local_ip,
                         "local_port": ev.local_port, "pid": ev.pid, "comm": ev.comm},
                        subject=f"listen {ev.proto}/{ev.local_port}", rule=rules.RULE_PROFILE)
            return
        peer, remote = self._peer(att, ev)
        port = ev.local_port if ev.direction == "in" else ev.remote_port
        detail = {"direction": ev.direction, "proto": ev.proto, "local_ip": ev.local_ip,
                  "local_port": ev.local_port, "remote_ip": ev.remote_ip, "remote_port": ev.remote_port,
                  "peer": peer, "peer_container": remote.name if remote else "", "pid": ev.pid, "comm": ev.comm}
        ip = _plain_ip(ev.remote_ip)
        if not final:
            hit = self._feed("ip", ip)
            if hit is not None:
                self._threat(att, ev, hit, "peer address", detail)
            if remote is None and _may_be_a_container(peer) and len(self._deferred) < MAX_DEFERRED:
                # A container that has just started can talk before the inventory has its
                # address: decide a little later, when it is known, rather than learn or
                # alert on a bare IP that is really a replica.
                self._deferred.append((time.monotonic() + DEFER_SECONDS, ev))
                self._deferred_wake.set()
                return
        if p.allows_peer(ev.direction, ev.proto, peer, port, ip if remote is None else ""):
            if p.unused and att.learning:  # a seeded link or port seen in use (once per flow)
                flow = (ev.direction, ev.proto, peer, port)
                if p.first_use_question(flow):
                    self.profiles.note_use(p, "peer", p.peer_keys(*flow))
            return
        if att.learning:
            self.profiles.record(p, peer_entry(ev.direction, ev.proto, peer, port))
            return
        if ev.direction == "in":
            severity, summary = rules.SEVERITY["network.in"], f"unexpected inbound {ev.proto}/{port} from {peer}"
        else:
            external = remote is None and peer != LOOPBACK
            severity = rules.SEVERITY["network.out.external" if external else "network.out.container"]
            summary = f"unexpected connection to {peer} {ev.proto}/{port}"
        self._alert(att, ev, "network", severity, summary, detail,
                    subject=f"{ev.direction} {ev.proto} {peer} {port}", rule=rules.RULE_PROFILE)

    def _dns(self, att: Attachment, ev: DnsEvent) -> None:
        hit = self._feed("domain", ev.name)
        if hit is not None:
            self._threat(att, ev, hit, "DNS name", {"name": ev.name, "qtype": ev.qtype,
                                                     "server_ip": ev.server_ip, "pid": ev.pid, "comm": ev.comm})

    # -- files ---------------------------------------------------------------------------------
    def _file(self, att: Attachment, ev: FileEvent) -> None:
        path = normalise(ev.path)
        detail = {"op": ev.op, "path": ev.path, "pid": ev.pid, "comm": ev.comm, "uid": ev.uid}
        if ev.new_path:
            detail["new_path"] = ev.new_path
        action = "alerted"
        if isinstance(ev, InodeEvent):  # seen by inode (fanotify): the kernel's facts
            if ev.lost:
                self._alert(att, ev, "file", rules.SEVERITY["file.sensitive.write"],
                            f"file watch lost {ev.lost} events: sensitive-file access may be unseen",
                            {"lost": ev.lost}, subject="inode watch lost events", rule=rules.RULE_SENSITIVE)
                return
            detail.update(opened_as=ev.opened_as, dev=ev.dev, ino=ev.ino)
            action = "denied" if ev.denied else action
        if ev.op not in WRITE_OPS:
            if ev.sensitive or rules.is_sensitive(path):
                self._alert(att, ev, "file", rules.SEVERITY["file.sensitive.read"],
                            f"read of sensitive file {path}", detail, subject=f"read {path}",
                            rule=rules.RULE_SENSITIVE, action=action)
            return
        targets = [path] + ([normalise(ev.new_path)] if ev.new_path else [])
        sensitive = [rules.is_sensitive_write(t) for t in targets]
        if ev.sensitive and not any(sensitive):
            sensitive = [True] * len(targets)  # the kernel's flag: the names do not say which
        p = att.profile
        for target, flagged in zip(targets, sensitive):
            if is_noise(target):
                continue
            if flagged:
                self._alert(att, ev, "file", rules.SEVERITY["file.sensitive.write"],
                            f"{ev.op} of sensitive file {target}", detail, subject=f"write {target}",
                            rule=rules.RULE_SENSITIVE, action=action)
                continue
            if ev.op in LINK_OPS and target == path:
                continue
            changed = self.profiles.paths_for_written(p, target)
            if changed:
                self.profiles.mark_suspect(p, changed)
            if p.allows_write(target):
                if p.unused and att.learning and p.first_use_question(target):  # a seeded volume written
                    self.profiles.note_use(p, "file", p.file_keys(target))
                continue
            key = generalise(target)
            if not key:
                continue  # "/" itself (mkdir -p walks it)
            if att.learning:
                self.profiles.record(p, file_entry(key))
                continue
            system = target.startswith(rules.SYSTEM_WRITE_DIRS)
            self._alert(att, ev, "file", rules.SEVERITY["file.write.system" if system else "file.write"],
                        f"{ev.op} outside learned paths: {target}", {**detail, "prefix": key},
                        subject=f"write {key}", rule=rules.RULE_PROFILE)

    def _file_closed(self, att: Attachment, ev: FileClosedEvent) -> None:
        hit = self._feed("hash", ev.sha256)
        if hit is not None:
            self._threat(att, ev, hit, "written file", {"path": ev.path, "size": ev.size, "sha256": ev.sha256,
                                                         "pid": ev.pid, "comm": ev.comm})
        p = att.profile
        path = normalise(ev.path)
        if ev.sha256 and path in p.processes and ev.sha256 not in p.processes[path]:
            self.profiles.mark_suspect(p, [path])
        if not ev.sha256 and ev.hash_reason:
            if path in p.processes:  # a learned binary rewritten, and not verifiable
                self.profiles.mark_suspect(p, [path])
            # A stalled read, a full queue or a spent budget is someone working the hasher:
            # said. A device, a FIFO or a big data file is ordinary (counted in status, not
            # alerted): the write is judged by the file rule, a learned binary by its next exec.
            if ev.hash_reason in (STALLED, QUEUE_FULL, OVER_BUDGET):
                self._alert(att, ev, "file", rules.SEVERITY["unhashed"],
                            f"written file not hashed: {ev.hash_error}: {ev.path}",
                            {"path": ev.path, "size": ev.size, "pid": ev.pid, "comm": ev.comm,
                             "hash_error": ev.hash_error, "hash_reason": ev.hash_reason},
                            subject=f"unhashed {ev.hash_reason}", rule=rules.RULE_UNHASHED)

    # -- syscalls ----------------------------------------------------------------------------------
    def _syscall(self, att: Attachment, ev: SyscallEvent) -> None:
        name = ev.name or rules.X86_64_NAMES.get(ev.nr, "")
        detail = {"nr": ev.nr, "name": name, "ret": ev.ret, "pid": ev.pid, "comm": ev.comm, "uid": ev.uid,
                  "killed": ev.killed, **ev.args}
        dangerous = ev.dangerous or name in rules.DANGEROUS_SYSCALLS
        runtime = ev.comm.startswith(rules.RUNTIME_COMM_PREFIX)
        if runtime:
            # runc entering for `docker exec`: its Go runtime's syscalls are not the app's
            # (not learned, not novel); of the dangerous ones only what it always does passes.
            self.runtime_syscalls += 1
            if not dangerous or name in rules.RUNTIME_SYSCALLS:
                return
        if dangerous:
            if ev.killed:
                outcome = " (killed at entry)"
            else:
                outcome = f" (failed: {errno.errorcode.get(-ev.ret, -ev.ret)})" if ev.ret < 0 else ""
            self._alert(att, ev, "syscall", rules.syscall_severity(name),
                        f"dangerous syscall {name or ev.nr}{outcome}", detail, subject=name or f"#{ev.nr}",
                        rule=rules.RULE_DANGEROUS, action="killed" if ev.killed else "alerted")
        p = att.profile
        if runtime or p.allows_syscall(ev.nr, name):
            return
        if att.learning:
            self.profiles.record(p, syscall_entry(ev.nr, name))
            return
        if not dangerous:
            # One incident per program run, listing every syscall it made outside the set:
            # a shell that ran `cat` and `ln` is one finding, not one per syscall name.
            run = (att.container.id, ev.pid)
            names = self._run_syscalls.pop(run, {})
            names[name or f"#{ev.nr}"] = ev.nr
            self._run_syscalls[run] = names
            while len(self._run_syscalls) > MAX_RUNS:
                self._run_syscalls.pop(next(iter(self._run_syscalls)))
            listed = ", ".join(names)
            detail = {**detail, "syscalls": [{"name": n, "nr": nr} for n, nr in names.items()]}
            self._alert(att, ev, "syscall", rules.SEVERITY["syscall.new"],
                        f"syscalls outside the learned set by {ev.comm or '?'} (pid {ev.pid}): {listed}"[:500],
                        detail, subject=f"run {ev.pid}" if ev.pid else (name or f"#{ev.nr}"),
                        rule=rules.RULE_PROFILE, refresh=True)


def _would_stop(ev: SensorEvent) -> str | None:
    """What protect mode's responder does with an alert about this event: it kills an
    exec and blocks a connection (or listener); nothing else is stopped."""
    if isinstance(ev, ExecEvent):
        return "killed"
    if isinstance(ev, NetworkEvent):
        return "blocked"
    return None


def _may_be_a_container(peer: str) -> bool:
    """An unresolved private address: possibly a container the inventory does not know yet."""
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(addr in net for net in _CONTAINER_RANGES if net.version == addr.version)


# Where container networks get their addresses (Docker's default pools are RFC 1918).
_CONTAINER_RANGES = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


def _plain_ip(ip: str) -> str:
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
