"""The profile book: every profile in memory, which container uses
which, the modes, learning deadlines, and what the kernel is told.

Life of a profile: created (and seeded) when the first container of its (app, service,
image digest) appears; `learning` until its deadline (set once, at creation or relearn,
so a restart keeps it) has passed AND the profile has been stable (no new entry) for a
window, or until a later hard limit (then with a gap saying it was still changing); then
`active`, in the container's mode. Everything is decided in memory; the database is
written behind and read only at start.

Completeness: what may have been missed while a profile learned is recorded as a gap
(events lost by the sensors, sensors not loaded, a container that started before the
enforcer so its start-up was unseen, learning interrupted by a restart, still changing
when learning had to end). A profile with gaps still goes active; the console and
`stockade profile` say so, and the mode dialog warns before protect.

Modes: the per-container override (`container_modes`, by name) wins over the app's mode
(the `apps` row once a person chose it, else `[apps.NAME] mode` from the config, else
`settings.default_mode`). What the kernel is told per cgroup is `learn` while the profile
learns, else that mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..config import Settings
from ..inventory import Inventory, InventoryChange
from ..models import MODES, App, Container
from ..ports import ContainerChanged, Publish
from ..store.inventory import InventoryRepo
from ..store.profiles import EntryRow, ProfileRow, ProfilesRepo
from .kernel import KernelHooks, NullKernelHooks
from .model import ANY, Entry, Profile, syscall_entry
from .seed import SeedInput, command_argv, seed_entries

if TYPE_CHECKING:
    from .export import ProfileDocument

log = logging.getLogger(__name__)

PRUNED = "pruned"  # the source of a stored seed a person pruned (a tombstone, not an entry)
KERNEL_PUSH_DELAY = 0.05  # seconds: allow-list changes within this are pushed together
MAX_STABLE_WINDOW = 300.0  # the automatic stability window is a quarter of learning, at most this
HARD_LIMIT_WINDOWS = 4.0  # learning ends anyway this many stability windows after its deadline


@dataclass(slots=True)
class SensorHealth:
    """What the sensors say about their own coverage (given by the root; None: no sensors)."""

    events_lost: Callable[[], int]  # total events lost so far (ring buffers, queue)
    not_loaded: Callable[[], str]  # "" when loaded, else why not (or "loading")


@dataclass(slots=True)
class Attachment:
    """A running container and the profile it is checked against."""

    container: Container
    profile: Profile
    mode: str  # effective mode: learn | alert | protect

    @property
    def learning(self) -> bool:
        """Record what is seen (learning profile, or learn mode); only research rules alert."""
        return self.profile.state == "learning" or self.mode == "learn"

    @property
    def kernel_mode(self) -> str:
        return "learn" if self.profile.state == "learning" else self.mode


class ProfileBook:
    def __init__(self, settings: Settings, repo: ProfilesRepo, modes: InventoryRepo, inventory: Inventory,
                 publish: Publish, changed: ContainerChanged, hooks: KernelHooks | None = None,
                 clock: Callable[[], float] = time.time, sensors: SensorHealth | None = None,
                 started: float | None = None,
                 sockets: Callable[[Container], list[tuple[str, tuple[str, ...]]]] | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.modes = modes  # the apps' and containers' chosen modes, as stored
        self.inventory = inventory
        self.publish = publish
        self.changed = changed
        self.hooks: KernelHooks = hooks or NullKernelHooks()
        self.clock = clock
        self.sensors = sensors
        # What a container's sockets use right now (profiles/sockets.py; None: not looked at).
        self.sockets = sockets
        self.started = started if started is not None else clock()  # when this enforcer started
        self._lost_seen = 0  # the sensors' loss count at the last check
        self.profiles: dict[int, Profile] = {}
        self.by_key: dict[tuple[str, str, str], Profile] = {}
        self.attached: dict[str, Attachment] = {}  # container id -> attachment
        self.app_rows: dict[str, dict[str, Any]] = {}
        self.container_modes: dict[str, str] = {}
        self._next_id = 1
        self._dirty: set[int] = set()
        self._push_wake = asyncio.Event()
        self._deadline_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._policy_listeners: list[Callable[[], None]] = []

    # -- component ------------------------------------------------------------------------
    async def start(self) -> None:
        self._next_id = await self.repo.max_id() + 1
        for row in await self.repo.load_all():
            p = Profile(id=row.id, app=row.app, service=row.service, image_digest=row.image_digest,
                        state=row.state, created=row.created, learn_until=row.learn_until,
                        activated=row.activated, gaps=list(row.gaps), last_change=row.last_change)
            for e in row.entries:
                if e.source == PRUNED:
                    p.pruned.add((e.kind, e.key))
                    continue
                p.add(Entry(e.kind, e.key, e.data, e.source, e.first_seen, e.used))
            self.profiles[p.id] = p
            self.by_key[p.key] = p
            if p.state == "learning":
                self._gap(p, "learning was interrupted by an enforcer restart (what ran meanwhile was not seen)")
        if self.sensors is not None:
            self._lost_seen = self.sensors.events_lost()
        await self.reload_modes()
        self.inventory.subscribe(self._on_inventory_change)
        for c in list(self.inventory.containers.values()):
            self.attach(c)
        self._tasks = [asyncio.create_task(self._deadline_loop(), name="profile-deadlines"),
                       asyncio.create_task(self._push_loop(), name="profile-kernel-push")]
        log.info("profiles: %d loaded (%d learning)", len(self.profiles),
                 sum(1 for p in self.profiles.values() if p.state == "learning"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def reload_modes(self) -> None:
        self.app_rows = await self.modes.app_settings()
        self.container_modes = await self.modes.container_modes()

    # -- modes ------------------------------------------------------------------------------
    def _app_config(self, app: str) -> dict[str, Any]:
        cfg = self.settings.apps.get(app) if isinstance(self.settings.apps, dict) else None
        return cfg if isinstance(cfg, dict) else {}

    def app_mode(self, app: str) -> str:
        row = self.app_rows.get(app)
        if row and row.get("mode_set") and row.get("mode") in MODES:
            return str(row["mode"])
        mode = self._app_config(app).get("mode")
        return mode if mode in MODES else self.settings.default_mode

    def container_mode(self, c: Container) -> str:
        return self.container_modes.get(c.name) or self.app_mode(c.app)

    def learn_seconds(self, app: str) -> float:
        row = self.app_rows.get(app)
        if row and row.get("learn_seconds") is not None:
            return float(row["learn_seconds"])
        configured = self._app_config(app).get("learn_seconds")
        if isinstance(configured, (int, float)) and configured >= 0:
            return float(configured)
        return float(self.settings.learn_seconds)

    def refresh_modes(self) -> list[Container]:
        """Re-evaluate every attachment's mode; returns the containers whose mode changed."""
        changed = []
        for att in self.attached.values():
            mode = self.container_mode(att.container)
            if mode != att.mode:
                att.mode = mode
                if att.profile.state == "active":
                    self._push_lists(att.profile)  # lists first: protect may widen them
                self._push_policy(att)
                changed.append(att.container)
        if changed:
            self._policy_changed()
        return changed

    # -- containers and profiles --------------------------------------------------------------
    def for_container(self, container_id: str) -> Attachment | None:
        """The hot-path lookup, a dict read. Every container the inventory knows is
        attached when it is announced (and those present at start), so a miss is a
        container that is gone or not yet known."""
        return self.attached.get(container_id)

    def _on_inventory_change(self, change: InventoryChange) -> None:
        if change.change == "removed":
            self.attached.pop(change.container.id, None)
        else:
            self.attach(change.container)
        self._policy_changed()

    # -- the network policy of protect mode (the NetworkPolicySource port) ------------------
    def network_policies(self) -> dict[str, list[tuple[str, str, str, int | str]]]:
        """Per container in protect mode with an active profile: the flows its peers allow."""
        out: dict[str, list[tuple[str, str, str, int | str]]] = {}
        for att in self.attached.values():
            if att.mode == "protect" and att.profile.state == "active" and att.container.state in ("running", "paused"):
                out[att.container.name] = sorted(att.profile.peers, key=str)
        return out

    def on_policy_change(self, callback: Callable[[], None]) -> None:
        self._policy_listeners.append(callback)

    def _policy_changed(self) -> None:
        for cb in self._policy_listeners:
            cb()

    def attach(self, c: Container) -> Attachment | None:
        if c.state in ("removed", "dead", "removing"):
            return None
        profile = self.by_key.get(profile_key(c)) or self._create(c)
        self._seed(profile, c)
        previous = self.attached.get(c.id)
        if previous is None and profile.state == "learning" and c.started_at and c.started_at < self.started:
            self._gap(profile, "a container started before the enforcer: its start-up was not seen")
        att = Attachment(c, profile, self.container_mode(c))
        self.attached[c.id] = att
        if c.cgroup_id and (previous is None or previous.container.cgroup_id != c.cgroup_id
                            or previous.profile is not profile):
            if profile.state == "active":
                self._push_lists(profile)
            self._push_policy(att)
        return att

    def _create(self, c: Container) -> Profile:
        now = self.clock()
        p = Profile(id=self._next_id, app=c.app, service=c.service, image_digest=profile_key(c)[2],
                    state="learning", created=now, learn_until=now + self.learn_seconds(c.app))
        self._next_id += 1
        self.profiles[p.id] = p
        self.by_key[p.key] = p
        self.repo.insert_profile(ProfileRow(p.id, p.app, p.service, p.image_digest, p.state,
                                            p.created, p.learn_until, p.activated))
        self._deadline_wake.set()
        log.info("profiles: new profile %d for %s/%s (%s), learning for %gs", p.id, p.app, p.service,
                 p.image_digest[:19], p.learn_until - now)
        self.publish("profile", p.summary())
        return p

    def _seed(self, profile: Profile, c: Container) -> None:
        inv = self.inventory
        entries = seed_entries(SeedInput(
            container=c, image_config=inv.image_config(c.image_id),
            topology=inv.topologies.get(c.app),
            service_image_config=lambda service: self._service_image_config(c.app, service),
        ))
        for e in entries:
            self.record(profile, e)

    def _service_image_config(self, app: str, service: str) -> dict[str, Any]:
        inv = self.inventory
        for other in inv.containers.values():
            if other.app == app and other.service == service:
                return inv.image_config(other.image_id)
        return {}

    def record(self, profile: Profile, entry: Entry) -> bool:
        """Add an entry to a profile (memory now, database behind); True if it is new."""
        if entry.source == "seed" and profile.state != "learning":
            entry.used = True  # seeded after learning ended: its use was never watched, never claimed unused
        if not profile.add(entry):
            if entry.source != "seed":
                self.note_use(profile, entry.kind, (entry.key,))  # seen: a seed of the same key is used
            return False
        if profile.state == "learning" and entry.source == "learned":
            profile.last_change = self.clock()
        self.repo.add_entry(profile.id, _row(entry))
        if profile.state == "active" and entry.kind in ("process", "syscall"):
            self.mark_dirty(profile)
        if profile.state == "active" and entry.kind == "peer":
            self._policy_changed()
        return True

    def note_use(self, profile: Profile, kind: str, keys: tuple[str, ...] | list[str]) -> None:
        """Something the profile allows by one of `keys` was seen: a seed among them that was
        never used until now is marked used (in memory, and in the database once)."""
        if not profile.unused:
            return
        for key in keys:
            if profile.mark_used(kind, key) is not None:
                self.repo.set_used(profile.id, kind, key)

    def note_live_use(self, profile: Profile) -> None:
        """What the profile's containers' sockets use now counts as use: a listener or a
        connection made before the inventory knew the container was never an event."""
        if self.sockets is None or not profile.unused:
            return
        for att in self.attachments_of(profile):
            try:
                found = self.sockets(att.container)
            except Exception as e:  # noqa: BLE001 - a container gone meanwhile: nothing in use
                log.debug("profiles: sockets of %s not read: %s", att.container.name, e)
                continue
            for kind, keys in found:
                self.note_use(profile, kind, keys)

    def prune(self, profile: Profile, dry_run: bool = False) -> list[Entry]:
        """Take the seeded, never used entries out of the profile (the kernel's allow-lists and
        the network policy follow); the entries removed, or with `dry_run` that would be.
        What the containers' sockets use right now is never removed."""
        self.note_live_use(profile)
        found = profile.never_used()
        if dry_run or not found:
            return found
        self._remove(profile, found, pruned=True)
        log.info("profiles: profile %d (%s/%s) pruned of %d seeded, never used entries", profile.id,
                 profile.app, profile.service, len(found))
        return found

    def carry(self, source: Profile, target: Profile, dry_run: bool = False) -> list[Entry]:
        """Copy what a person allowed in `source` (an earlier image digest's profile of the
        same service) into `target`: the entries `target` lacks, origin kept, each saying
        where it was carried from. The copies, or with `dry_run` what they would be."""
        out = []
        for kind in source.entries:
            for key, e in sorted(source.entries[kind].items()):
                if e.source != "allowed" or key in target.entries[kind]:
                    continue
                data = {**e.data, "carried_from": source.image_digest}
                out.append(Entry(e.kind, e.key, data, e.source, self.clock()))
        if not dry_run:
            for e in out:
                self.allow(target, e)
            if out:
                log.info("profiles: profile %d (%s/%s) got %d allowed entries carried from %s", target.id,
                         target.app, target.service, len(out), source.image_digest[:19])
        return out

    def _remove(self, profile: Profile, entries: list[Entry], pruned: bool = False) -> None:
        """Entries out of a profile, memory and database; then the kernel's lists and, when a
        peer went, the network policy (protect mode drops what is no longer allowed).
        `pruned`: seeds, remembered as pruned so that seeding does not bring them back."""
        for e in entries:
            profile.remove(e.kind, e.key)
            if pruned:
                profile.pruned.add((e.kind, e.key))
                self.repo.mark_pruned(profile.id, e.kind, e.key)
            else:
                self.repo.remove_entry(profile.id, e.kind, e.key)
        if entries:
            self.mark_dirty(profile)
            if any(e.kind == "peer" for e in entries):
                self._policy_changed()
            self.publish("profile", profile.summary())

    def allow(self, profile: Profile, entry: Entry) -> bool:
        """A person accepted an incident into the profile: add the entry (in the kernel too)
        and clear a suspect mark on its path; True if it was new."""
        added = self.record(profile, entry)
        if entry.kind == "process":
            self.clear_suspect(profile, entry.data["path"])
        if entry.kind in ("process", "syscall"):
            self.mark_dirty(profile)  # learning or not: the kernel's lists follow the profile
        return added

    def withdraw(self, profile: Profile, alert_id: int) -> list[Entry]:
        """Take out the entries that allowing incident `alert_id` added (none: [])."""
        found = [e for table in profile.entries.values() for e in table.values()
                 if e.source == "allowed" and e.data.get("alert_id") == alert_id]
        self._remove(profile, found)  # the kernel's lists and the network policy lose them too
        return found

    def import_document(self, doc: "ProfileDocument") -> Profile:
        """Install a profile from a file (profiles as code): its entries replace what this host
        had for that (app, service, digest), and it is active at once, with no learning."""
        p = self.by_key.get(doc.key)
        now = self.clock()
        if p is None:
            p = Profile(id=self._next_id, app=doc.app, service=doc.service, image_digest=doc.image_digest,
                        state="active", created=now, learn_until=now, activated=now)
            self._next_id += 1
            self.profiles[p.id] = p
            self.by_key[p.key] = p
            self.repo.insert_profile(ProfileRow(p.id, p.app, p.service, p.image_digest, p.state, p.created,
                                                p.learn_until, p.activated))
        p.replace_entries(doc.entries)
        # The file says what the profile is, tombstones included (an entry it also lists wins).
        p.pruned = {(kind, key) for kind, key in doc.pruned if key not in p.entries[kind]}
        self.repo.replace_entries(p.id, [_row(e) for kind in p.entries.values() for e in kind.values()])
        for kind, key in sorted(p.pruned):
            self.repo.add_tombstone(p.id, kind, key, now)
        p.state, p.activated, p.learn_until, p.gaps = "active", now, min(p.learn_until, now), list(doc.gaps)
        p.last_change = now
        self._save_state(p)
        log.info("profiles: profile %d (%s/%s) imported: %d entries, active", p.id, p.app, p.service,
                 sum(len(v) for v in p.entries.values()))
        self._push_lists(p)
        self._after_state_change(p)
        return p

    # -- binaries that changed under a learned path -------------------------------------------
    def paths_for_written(self, profile: Profile, path: str) -> list[str]:
        """Learned exec paths a write to `path` may have changed (the path, or its binary)."""
        out = [path] if path in profile.processes else []
        if path in profile.binaries:
            out += [e.data["path"] for e in profile.entries["process"].values()
                    if e.data.get("binary") == path and e.data["path"] != path]
        return out

    def mark_suspect(self, profile: Profile, paths: list[str]) -> None:
        new = [p for p in paths if p not in profile.suspect_paths]
        if new:
            profile.suspect_paths.update(new)
            self.mark_dirty(profile)

    def clear_suspect(self, profile: Profile, path: str) -> None:
        if path in profile.suspect_paths:
            profile.suspect_paths.discard(path)
            self.mark_dirty(profile)

    # -- state changes ----------------------------------------------------------------------
    def activate(self, profile: Profile) -> None:
        if profile.state == "active":
            return
        # What the kernel saw used while learning counts too (a lost novelty event included).
        for att in self.attachments_of(profile):
            if att.container.cgroup_id:
                for nr in sorted(self.hooks.used_syscalls(att.container.cgroup_id) - profile.syscalls):
                    if not dangerous_nr(nr):
                        self.record(profile, syscall_entry(nr, syscall_name(nr)))
        self.note_live_use(profile)  # listeners and connections older than the watch count too
        profile.state = "active"
        profile.activated = self.clock()
        self._save_state(profile)
        # Lists first, then the mode: a protect policy must never meet an empty allow-list.
        self._push_lists(profile)
        self._after_state_change(profile)
        log.info("profiles: profile %d (%s/%s) is active: %s", profile.id, profile.app, profile.service,
                 ", ".join(f"{len(v)} {k}" for k, v in profile.entries.items()))

    def relearn(self, profile: Profile) -> None:
        now = self.clock()
        profile.clear_learned()
        profile.forget_use()  # the seeds are watched for use again
        profile.state = "learning"
        profile.activated = None
        profile.learn_until = now + self.learn_seconds(profile.app)
        profile.gaps = []
        profile.last_change = now
        self.repo.clear_learned(profile.id)
        if any(a.container.started_at and a.container.started_at < now for a in self.attachments_of(profile)):
            profile.add_gap("relearned while its containers ran: their start-up was not seen")
        self._save_state(profile)
        for att in self.attachments_of(profile):
            self._seed(profile, att.container)
            if att.container.cgroup_id:
                self.hooks.forget_novelty(att.container.cgroup_id)
        self._push_lists(profile)
        self._after_state_change(profile)
        self._deadline_wake.set()

    def _after_state_change(self, profile: Profile) -> None:
        self.publish("profile", profile.summary())
        self._policy_changed()
        for att in self.attachments_of(profile):
            self._push_policy(att)
            self.changed(att.container)

    def attachments_of(self, profile: Profile) -> list[Attachment]:
        return [a for a in self.attached.values() if a.profile is profile]

    # -- the end of learning, and what it may have missed -----------------------------------
    def stable_window(self, app: str) -> float:
        configured = float(self.settings.learn_stable_seconds)
        return configured if configured >= 0 else min(MAX_STABLE_WINDOW, self.learn_seconds(app) / 4)

    def learning_status(self, p: Profile) -> tuple[float, str]:
        """(seconds stable so far, why it is still learning; '' when it may end)."""
        now = self.clock()
        stable_for = max(0.0, now - max(p.last_change, p.created))
        if p.state != "learning":
            return stable_for, ""
        if now < p.learn_until:
            return stable_for, f"minimum learning time: {p.learn_until - now:.0f} s left"
        window = self.stable_window(p.app)
        if stable_for < window:
            return stable_for, f"not stable yet: last new entry {stable_for:.0f} s ago, needs {window:g} s"
        return stable_for, ""

    def _gap(self, p: Profile, reason: str) -> None:
        if p.add_gap(reason):
            log.info("profiles: profile %d (%s/%s) may be incomplete: %s", p.id, p.app, p.service, reason)
            self._save_state(p)
            self.publish("profile", p.summary())

    def _save_state(self, p: Profile) -> None:
        self.repo.save_state(p.id, p.state, p.learn_until, p.activated, p.gaps, p.last_change)

    def _check_coverage(self, learning: list[Profile]) -> None:
        """Sensor losses and a sensor not loaded make every learning profile incomplete."""
        if self.sensors is None or not learning:
            return
        lost = self.sensors.events_lost()
        if lost > self._lost_seen:
            for p in learning:
                self._gap(p, "sensor events were lost while it learned (see stockade status)")
        self._lost_seen = lost
        why = self.sensors.not_loaded()
        if why and why != "loading":
            for p in learning:
                self._gap(p, f"the sensors were not loaded while it learned: {why[:200]}")

    async def _deadline_loop(self) -> None:
        while True:
            now = self.clock()
            upcoming = []
            learning = [p for p in self.profiles.values() if p.state == "learning"]
            self._check_coverage(learning)
            for p in learning:
                if p.learn_until > now:
                    upcoming.append(p.learn_until)
                    continue
                stable_for, why = self.learning_status(p)
                window = self.stable_window(p.app)
                if not why:
                    self.activate(p)
                elif now >= p.learn_until + HARD_LIMIT_WINDOWS * window:
                    p.add_gap(f"still changing when learning had to end (last new entry {stable_for:.0f} s before)")
                    self.activate(p)
                else:
                    upcoming.append(now + min(window - stable_for, 1.0))
            wait = min(min(upcoming) - now, 5.0) if upcoming else 5.0
            self._deadline_wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._deadline_wake.wait(), max(wait, 0.01))

    # -- the kernel ---------------------------------------------------------------------------
    def mark_dirty(self, profile: Profile) -> None:
        self._dirty.add(profile.id)
        self._push_wake.set()

    async def _push_loop(self) -> None:
        while True:
            await self._push_wake.wait()
            await asyncio.sleep(KERNEL_PUSH_DELAY)
            self._push_wake.clear()
            dirty, self._dirty = self._dirty, set()
            for pid in dirty:
                p = self.profiles.get(pid)
                if p is not None:
                    self._push_lists(p)

    def _push_lists(self, p: Profile) -> None:
        by_applet = self.hooks.self_exec_by_applet
        paths = p.kernel_exec_paths(by_applet)
        if (not by_applet and any(x.startswith("/proc/self/exe") for x in p.processes)
                and any(a.mode == "protect" for a in self.attachments_of(p))):
            # A kernel that keys self-execs by path alone would kill every busybox applet
            # the app's own shell runs: in protect mode let them all run (user space still
            # checks what reaches it) rather than break the app.
            paths.add("/proc/self/exe")
        self.hooks.set_multicall_paths(p.id, p.kernel_multicall_paths())  # before the paths: see kernel.py
        self.hooks.set_exec_allowlist(p.id, paths)
        self.hooks.set_syscall_allowlist(p.id, p.syscalls)

    def _push_policy(self, att: Attachment) -> None:
        if att.container.cgroup_id:
            self.hooks.set_policy(att.container.cgroup_id, att.profile.id, att.kernel_mode)

    # -- what listings show ----------------------------------------------------------------------
    def describe_container(self, c: Container) -> dict[str, Any]:
        att = self.attached.get(c.id)
        if att is None:
            return {"mode": self.container_mode(c)}
        p = att.profile
        left = max(0.0, p.learn_until - self.clock()) if p.state == "learning" else 0.0
        stable_for, why = self.learning_status(p)
        return {"mode": att.mode, "profile_state": p.state, "learning_left": left, "profile_complete": p.complete,
                "profile_gaps": list(p.gaps), "stable_for": round(stable_for, 1), "learning_reason": why}

    def describe_app(self, app: App) -> dict[str, Any]:
        return {"mode": self.app_mode(app.name), "edges": self.edges(app.name)}

    def edges(self, app: str) -> list[dict[str, Any]]:
        """Allowed service-to-service connections of an app (outbound peer entries)."""
        seen: dict[tuple[str, str, str, Any], str] = {}
        prefix = f"{app}/"
        for p in self.profiles.values():
            if p.app != app:
                continue
            for e in p.entries["peer"].values():
                d = e.data
                if d["direction"] == "out" and str(d["peer"]).startswith(prefix):
                    k = (p.service, str(d["peer"])[len(prefix):], d["proto"], d["port"])
                    if seen.get(k) != "seed":
                        seen[k] = e.source
        return [{"from": f, "to": t, "proto": proto, "port": port, "source": src}
                for (f, t, proto, port), src in sorted(seen.items(), key=lambda kv: str(kv[0]))]

    def profile_view(self, att: Attachment) -> dict[str, Any]:
        p = att.profile
        cfg = self.inventory.image_config(att.container.image_id)
        topo = self.inventory.topologies.get(att.container.app)
        decl = topo.services.get(att.container.service) if topo else None
        stable_for, why = self.learning_status(p)
        out = p.to_dict()
        out.update({
            "mode": att.mode,
            "learning_left": max(0.0, p.learn_until - self.clock()) if p.state == "learning" else 0.0,
            "image": {"user": cfg.get("User") or "", "working_dir": cfg.get("WorkingDir") or "",
                      "command": command_argv(cfg, decl)},
            "suspect_paths": sorted(p.suspect_paths),
            "stable_for": round(stable_for, 1), "learning_reason": why,
            # Seeds not seen in use while it learned (so far, while learning): profile prune.
            "never_used": len(p.never_used()),
            "pruned": sorted(f"{kind} {key}" for kind, key in p.pruned),
        })
        return out


def _row(e: Entry) -> EntryRow:
    return EntryRow(e.kind, e.key, e.data, e.source, e.first_seen, e.used)


def dangerous_nr(nr: int) -> bool:
    """A dangerous (or qualified) syscall number. Those are learned only from their events,
    which the detector decides with the caller's name: the kernel's bitmap also holds what
    the container runtime did in the container's cgroup (runc creates its namespaces there),
    and that must not become the app's (a profile that "learned" clone:newns lets it pass)."""
    try:
        from ..sensors import layout as L
    except Exception:  # noqa: BLE001 - no sensors package: nothing comes from a bitmap either
        return False
    return nr >= L.NR_SYSCALLS or nr in L.DANGEROUS_SYSCALL_NRS


def syscall_name(nr: int) -> str:
    """The name the syscall sensor gives a number (one table, so entry keys agree)."""
    try:
        from ..sensors.decode import SYSCALL_NAMES
    except Exception:  # noqa: BLE001 - no sensors package: a number is still an entry
        return ""
    return SYSCALL_NAMES.get(nr, f"syscall_{nr}")


def profile_key(c: Container) -> tuple[str, str, str]:
    return (c.app, c.service, c.image_digest or c.image_id or c.image)


__all__ = ["ANY", "Attachment", "ProfileBook", "profile_key"]
