"""The alert book: every layer raises alerts here (the `AlertSink` port).

Folding: repeats of one (container id, kind, subject) within FOLD_WINDOW of the previous
one are the same incident (count, first_seen, last_seen grow); after a quiet hour the
next one opens a new incident. The fold index is rebuilt from the database at start, so
a restarted enforcer keeps counting into the same incidents.

Bursts: a container that keeps opening new incidents of one kind (thousands of distinct
programs or ports a second) would otherwise turn each into an incident of its own. After
BURST_NEW new incidents of one (container, kind) within BURST_WINDOW, further new subjects
fold into one burst incident of that kind (subject "burst"): its count grows, its detail
keeps the latest alert and a sample of the subjects, its severity is the highest seen.
Repeats of a subject that already has its own incident still fold there.

Nothing here waits for the database: incident ids are allocated in memory (from the
largest id stored or reserved; blocks of ID_BLOCK are reserved ahead through the same
write-behind queue, so a crash never hands out an id twice), new incidents are written
behind at once, and a growing count is
written and published at most every UPDATE_INTERVAL per incident (a loop can never turn
into a flood of writes or socket events). The newest incidents are also kept in memory,
so a query answered while writes are still queued sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict, deque
from dataclasses import replace
from typing import Any, Callable, Sequence

from ..models import ALERT_ACTIONS, ALERT_KINDS, ALERT_WOULD, SEVERITIES, Alert, App, Container, iso_time
from ..ports import Publish
from ..store.alerts import AlertQuery, AlertsRepo, StoredIncident

log = logging.getLogger(__name__)

FOLD_WINDOW = 3600.0  # seconds of quiet after which a repeat opens a new incident
UPDATE_INTERVAL = 0.25  # seconds: how often a growing count is stored and published
RECENT_KEEP = 20_000  # incidents kept in memory (newest): queries overlay them on the DB
ID_BLOCK = 100  # incident ids reserved at a time (a crash skips at most this many)
BURST_NEW = 20  # new incidents of one (container, kind) within BURST_WINDOW before a burst
BURST_WINDOW = 60.0
BURST_SUBJECT = "burst"
BURST_SAMPLE = 20  # distinct subjects kept in a burst incident's detail

_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def fold_key(container_id: str, kind: str, subject: str) -> str:
    return f"{container_id}\x1f{kind}\x1f{subject}"


class AlertBook:
    def __init__(self, repo: AlertsRepo, publish: Publish, host: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.repo = repo
        self.publish = publish
        self.host = host
        self.clock = clock
        self._next_id = 1
        self._reserved = 0
        self._open: dict[str, StoredIncident] = {}  # fold key -> incident within the window
        self._recent: OrderedDict[int, StoredIncident] = OrderedDict()
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.by_container: Counter[str] = Counter()
        self.by_app: Counter[str] = Counter()
        self.by_severity: Counter[str] = Counter()
        self.raised = 0
        self.opened = 0  # incidents opened since start
        self.burst_folded = 0  # alerts folded into a burst incident (subjects with no incident of their own)
        self._births: dict[tuple[str, str], deque[float]] = {}  # (container id, kind) -> recent new incidents

    # -- component ------------------------------------------------------------------------
    async def start(self) -> None:
        self._next_id = await self.repo.max_id() + 1
        self._reserved = self._next_id - 1  # ids up to here are reserved in the database
        for inc in await self.repo.recent_folds(self.clock() - FOLD_WINDOW):
            self._open[inc.fold_key] = inc
        for cid, app, severity, n in await self.repo.counts():
            self.by_container[cid] += n
            self.by_app[app] += n
            self.by_severity[severity] += n
        for inc in reversed(await self.repo.query(AlertQuery(limit=RECENT_KEEP))):
            self._remember(inc)
        self._task = asyncio.create_task(self._update_loop(), name="alert-updates")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._write_dirty()  # the store's final flush commits them
        # A clean stop hands back the unused ids, so ids continue without a gap.
        self.repo.release_ids(self._next_id - 1)

    def describe_container(self, c: Container) -> dict[str, Any]:
        return {"alerts": self.by_container.get(c.id, 0)}

    def describe_app(self, app: App) -> dict[str, Any]:
        return {"alerts": self.by_app.get(app.name, 0)}

    def status(self) -> dict[str, Any]:
        return {"alerts": {s: self.by_severity.get(s, 0) for s in SEVERITIES},
                "alert_folding": {"raised": self.raised, "incidents_opened": self.opened,
                                  "burst_folded": self.burst_folded}}

    # -- raising ----------------------------------------------------------------------------
    def raise_alert(self, container: Container, kind: str, severity: str, summary: str,
                    detail: dict[str, Any], subject: str, rule: str, action: str = "alerted",
                    when: float | None = None, fold_burst: bool = True, *, would: str | None = None,
                    tags: Sequence[str] = (), lineage: dict[str, Any] | None = None,
                    refresh: bool = False) -> Alert:
        """Record an anomaly: a new incident, or one more occurrence of an open one.
        refresh=True: a repeat's summary and detail replace the incident's (an incident that
        lists what it folded, e.g. every new syscall of one program run).
        `would`: what protect mode would have done (learn and alert modes); `tags`: ATT&CK ids;
        `lineage`: the root of the process's lineage in the container (kept from the first).
        fold_burst=False: never folded into a burst (what the enforcer says of itself)."""
        if kind not in ALERT_KINDS or severity not in SEVERITIES or action not in ALERT_ACTIONS:
            raise ValueError(f"bad alert: kind={kind!r} severity={severity!r} action={action!r}")
        if would is not None and would not in ALERT_WOULD:
            raise ValueError(f"bad alert: would={would!r}")
        now = when if when is not None else self.clock()
        key = fold_key(container.id, kind, subject)
        inc = self._open.get(key)
        self.raised += 1
        if inc is not None and now - inc.last_seen <= FOLD_WINDOW:
            if refresh:
                inc.alert.summary, inc.alert.detail = summary, detail
            if lineage and inc.alert.lineage is None:
                inc.alert.lineage = lineage  # raised first with its process unknown yet
            return self._fold(inc, severity, action, now, would, tags)
        if fold_burst and subject != BURST_SUBJECT and self._bursting(container.id, kind, now):
            return self._fold_burst(container, kind, severity, summary, detail, subject, rule, action, now,
                                    would, tags)
        return self._open_incident(container, kind, severity, summary, detail, subject, rule, action, now, key,
                                   would, tags, lineage)

    def _open_incident(self, container: Container, kind: str, severity: str, summary: str,
                       detail: dict[str, Any], subject: str, rule: str, action: str, now: float,
                       key: str, would: str | None = None, tags: Sequence[str] = (),
                       lineage: dict[str, Any] | None = None) -> Alert:
        stamp = iso_time(now)
        alert = Alert(
            id=self._next_id, time=stamp, host=self.host, app=container.app,
            service=container.service, container=container.name, container_id=container.id,
            image=container.image, kind=kind, severity=severity, summary=summary, detail=detail,
            action=action, count=1, first_seen=stamp, last_seen=stamp, subject=subject, rule=rule,
            would=would, tags=sorted(set(tags)), lineage=lineage,
        )
        if alert.id > self._reserved:
            self._reserved = alert.id + ID_BLOCK - 1
            self.repo.reserve_ids(self._reserved)
        self._next_id += 1
        self.opened += 1
        inc = StoredIncident(alert, key, now, now)
        self._open[key] = inc
        self._remember(inc)
        self.by_container[container.id] += 1
        self.by_app[container.app] += 1
        self.by_severity[severity] += 1
        self.repo.insert(inc)
        self.publish("alert", alert.to_dict())
        return alert

    def _bursting(self, container_id: str, kind: str, now: float) -> bool:
        """Count a new incident of (container, kind); True once they come too fast."""
        births = self._births.get((container_id, kind))
        if births is None:
            if len(self._births) > 4 * RECENT_KEEP:  # containers come and go: forget quiet ones
                self._births = {k: v for k, v in self._births.items() if v and now - v[-1] <= BURST_WINDOW}
            births = self._births[(container_id, kind)] = deque(maxlen=BURST_NEW)
        if len(births) == BURST_NEW and now - births[0] <= BURST_WINDOW:
            return True
        births.append(now)
        return False

    def _fold_burst(self, container: Container, kind: str, severity: str, summary: str,
                    detail: dict[str, Any], subject: str, rule: str, action: str, now: float,
                    would: str | None, tags: Sequence[str]) -> Alert:
        self.burst_folded += 1
        key = fold_key(container.id, kind, BURST_SUBJECT)
        inc = self._open.get(key)
        if inc is None or now - inc.last_seen > FOLD_WINDOW:
            text = (f"burst of {kind} alerts: more than {BURST_NEW} new in {BURST_WINDOW:g} s, folded here "
                    f"(latest: {summary})")
            burst_detail = {"burst": True, "latest": summary, "latest_detail": detail, "latest_rule": rule,
                            "sample": [subject]}
            return self._open_incident(container, kind, severity, text, burst_detail, BURST_SUBJECT,
                                       "burst", action, now, key, would, tags)
        d = inc.alert.detail
        d["latest"], d["latest_detail"], d["latest_rule"] = summary, detail, rule
        sample = d.setdefault("sample", [])
        if subject not in sample:
            sample.append(subject)
            del sample[:-BURST_SAMPLE]
        return self._fold(inc, severity, action, now, would, tags)

    def _fold(self, inc: StoredIncident, severity: str, action: str, now: float,
              would: str | None = None, tags: Sequence[str] = ()) -> Alert:
        a = inc.alert
        a.count += 1
        inc.last_seen = max(inc.last_seen, now)
        a.time = a.last_seen = iso_time(inc.last_seen)
        if _SEVERITY_RANK[severity] > _SEVERITY_RANK[a.severity]:
            self.by_severity[a.severity] -= 1
            self.by_severity[severity] += 1
            a.severity = severity
        if action != "alerted":
            a.action = action
        if would is not None:
            a.would = would
        if not set(tags) <= set(a.tags):
            a.tags = sorted(set(a.tags) | set(tags))
        self._remember(inc)
        self._mark_dirty(a.id)
        return a

    def set_action(self, alert_id: int, action: str) -> Alert | None:
        """Say what was done about an incident (killed, blocked, frozen)."""
        if action not in ALERT_ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        inc = self._recent.get(alert_id)
        if inc is None:
            return None
        inc.alert.action = action
        self._mark_dirty(alert_id)
        return inc.alert

    def set_lineage(self, alert_id: int, lineage: dict[str, Any]) -> bool:
        """Fill in the lineage of an incident raised before its process was known (an event
        of the inode watch can reach the detector before the exec event of its process).
        Only an incident without one: the first lineage stands. True if it was filled."""
        inc = self._recent.get(alert_id)
        if inc is None or inc.alert.lineage is not None or not lineage:
            return False
        inc.alert.lineage = lineage
        self._mark_dirty(alert_id)
        return True

    async def resolve(self, alert_id: int, note: str) -> Alert | None:
        """Mark an incident resolved (e.g. "allowed by alice at ..."); None if there is none."""
        inc = self._recent.get(alert_id) or await self.repo.get(alert_id)
        if inc is None:
            return None
        inc.alert.resolved = note  # "" reopens it
        self._remember(inc)
        self._mark_dirty(alert_id)
        return inc.alert

    def get(self, alert_id: int) -> Alert | None:
        inc = self._recent.get(alert_id)
        return replace(inc.alert) if inc else None

    # -- write-behind of growing incidents ----------------------------------------------
    def _remember(self, inc: StoredIncident) -> None:
        self._recent[inc.alert.id] = inc
        self._recent.move_to_end(inc.alert.id)
        while len(self._recent) > RECENT_KEEP:
            old_id, old = self._recent.popitem(last=False)
            if old_id in self._dirty:  # never forget an unwritten change
                self._dirty.discard(old_id)
                self.repo.update(old)

    def _mark_dirty(self, alert_id: int) -> None:
        if not self._dirty:
            self._wake.set()
        self._dirty.add(alert_id)

    async def _update_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(UPDATE_INTERVAL)
            self._write_dirty()

    def _write_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for alert_id in sorted(dirty):
            inc = self._recent.get(alert_id)
            if inc is None:
                continue
            self.repo.update(inc)
            self.publish("alert", inc.alert.to_dict())
        # Incidents quiet for longer than the window no longer fold: let them go.
        if len(self._open) > 4 * RECENT_KEEP:
            horizon = self.clock() - FOLD_WINDOW
            self._open = {k: v for k, v in self._open.items() if v.last_seen >= horizon}

    # -- queries --------------------------------------------------------------------------
    async def query(self, q: AlertQuery) -> list[Alert]:
        stored = {inc.alert.id: inc.alert for inc in await self.repo.query(q)}
        # What is in memory is at least as new as what is stored (writes may be queued).
        for inc in self._recent.values():
            if matches(inc.alert, q):
                stored[inc.alert.id] = inc.alert
        return [replace(stored[i]) for i in sorted(stored, reverse=True)[: q.limit]]

    async def find(self, alert_id: int) -> Alert | None:
        """One incident by id: from memory (newest state), else from the store."""
        alert = self.get(alert_id)
        if alert is None:
            inc = await self.repo.get(alert_id)
            alert = inc.alert if inc else None
        return alert


def matches(a: Alert, q: AlertQuery) -> bool:
    if a.id <= q.since or (q.kind and a.kind != q.kind) or (q.app and a.app != q.app):
        return False
    if q.min_severity and _SEVERITY_RANK[a.severity] < _SEVERITY_RANK[q.min_severity]:
        return False
    if q.container and not (a.container == q.container or a.container_id == q.container
                            or (len(q.container) >= 4 and a.container_id.startswith(q.container))):
        return False
    return True
