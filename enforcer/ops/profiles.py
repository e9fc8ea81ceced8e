"""Ops of the profiles: profile, mode (and its preview), relearn, allow, profiles as code
(profile.export, profile.import, profile.diff), and the upkeep of a profile: profile.prune
(seeded, never used entries out) and profile.carry (what was allowed by hand, over to a new
image digest's profile) (docs/protocol.md)."""

from __future__ import annotations

import time
from typing import Any, Callable

from ..detect.alerts import AlertBook
from ..inventory import Inventory
from ..models import MODES, Alert, Container, iso_time
from ..profiles import allow
from ..profiles import export as profile_file
from ..profiles.book import ProfileBook, profile_key
from ..profiles.model import Profile
from ..store.alerts import AlertQuery
from ..server import OpError, Request, Server
from . import args

ContainerView = Callable[[Container], dict[str, Any]]


PREVIEW_WINDOW = 24 * 3600.0
PREVIEW_LIMIT = 10_000


def register(server: Server, book: ProfileBook, inventory: Inventory, view: ContainerView,
             alerts: AlertBook) -> None:
    async def op_profile(req: Request) -> dict[str, Any]:
        c = args.container(inventory, req.args.get("target"))
        att = book.for_container(c.id)
        if att is None:
            raise OpError(f"container {c.name} has no profile ({c.state})", args.CONFLICT)
        return {"container": view(c), "profile": book.profile_view(att)}

    async def op_mode(req: Request) -> dict[str, Any]:
        target = args.target(req.args)
        mode = args.choice(req.args, "mode", MODES)
        if req.args.get("scope") not in (None, "app", "container"):
            raise args.bad("scope must be app or container")
        scope = req.args.get("scope") or ("app" if _app_exists(book, inventory, target) else "container")
        if args.boolean(req.args, "preview", False):
            if mode != "protect":
                raise args.bad("only a change to protect can be previewed")
            window = args.number(req.args, "window", PREVIEW_WINDOW, 60, 90 * 86400)
            name = target if scope == "app" else args.container(inventory, target).name
            return {"target": name, "scope": scope, "mode": mode, "preview": True, "window": window,
                    "would_stop": await _would_stop(alerts, scope, name, window)}
        if scope == "app":
            await book.modes.set_app_mode(target, mode)
            name = target
        else:
            c = args.container(inventory, target)
            await book.modes.set_container_mode(c.name, mode)
            name = c.name
        await book.reload_modes()
        for c in book.refresh_modes():
            book.changed(c)
        return {"target": name, "scope": scope, "mode": mode}

    async def op_relearn(req: Request) -> dict[str, Any]:
        target = args.target(req.args)
        profiles: list[Profile]
        if _app_exists(book, inventory, target):
            profiles = [p for p in book.profiles.values() if p.app == target]
        else:
            c = args.container(inventory, target)
            att = book.for_container(c.id)
            if att is None:
                raise OpError(f"container {c.name} has no profile ({c.state})", args.CONFLICT)
            profiles = [att.profile]
        for p in profiles:
            book.relearn(p)
        return {"profiles": sorted(p.id for p in profiles)}

    async def op_allow(req: Request) -> dict[str, Any]:
        alert_id = args.whole(req.args, "alert_id", digits=True)
        alert = await alerts.find(alert_id)
        if alert is None:
            raise OpError(f"no alert {alert_id}", args.NOT_FOUND)
        if alert.resolved:
            raise OpError(f"incident {alert_id} is already resolved: {alert.resolved}", args.CONFLICT)
        profile = _profile_of(book, inventory, alert)
        if profile is None:
            raise OpError(f"no profile of {alert.app}/{alert.service} to add to", args.CONFLICT)
        try:
            entries = allow.entries_for(alert, by=req.peer.user)
        except allow.NotAllowable as e:
            raise OpError(str(e), args.CONFLICT) from None
        if args.boolean(req.args, "dry_run", False):  # what the confirmation shows
            return {"alert_id": alert_id, "profile": profile.id, "app": profile.app, "service": profile.service,
                    "allowed": allow.describe_all(entries), "dry_run": True}
        added = [book.allow(profile, e) for e in entries]
        note = f"allowed by {req.peer.user} at {iso_time()}"
        await alerts.resolve(alert_id, note)
        return {"alert_id": alert_id, "profile": profile.id, "app": profile.app, "service": profile.service,
                "allowed": allow.describe_all(entries),
                "entries": [{"kind": e.kind, **e.to_dict()} for e in entries], "new": any(added), "resolved": note}

    async def op_disallow(req: Request) -> dict[str, Any]:
        """Withdraw what `allow` added for an incident; the incident is open again."""
        alert_id = args.whole(req.args, "alert_id", digits=True)
        alert = await alerts.find(alert_id)
        if alert is None:
            raise OpError(f"no alert {alert_id}", args.NOT_FOUND)
        candidates = [p for p in book.profiles.values() if p.app == alert.app and p.service == alert.service]
        # Every profile holding it: the one it was allowed into, and those it was carried to.
        done = [(p, w) for p in candidates if (w := book.withdraw(p, alert_id))]
        if not done:
            raise OpError(f"incident {alert_id} was not allowed into a profile", args.NOT_FOUND)
        await alerts.resolve(alert_id, "")
        return {"alert_id": alert_id, "profile": done[0][0].id, "profiles": [p.id for p, _ in done],
                "withdrawn": allow.describe_all(done[0][1])}

    async def op_export(req: Request) -> dict[str, Any]:
        profiles = _profiles_named(book, inventory, args.target(req.args, "a container or an app"))
        return {"yaml": profile_file.dump(profiles), "profiles": sorted(p.id for p in profiles)}

    async def op_import(req: Request) -> dict[str, Any]:
        text = args.text(req.args, "text", limit=1 << 20)
        try:
            docs = profile_file.parse(text)
        except profile_file.ProfileFileError as e:
            raise args.bad(f"the profile file does not validate: {e}") from None
        imported = [book.import_document(doc) for doc in docs]  # all validated: none half applied
        return {"imported": [{"id": p.id, "app": p.app, "service": p.service, "image_digest": p.image_digest,
                              "entries": sum(len(v) for v in p.entries.values()),
                              "containers": sorted(a.container.name for a in book.attachments_of(p))}
                             for p in imported]}

    async def op_diff(req: Request) -> dict[str, Any]:
        c = args.container(inventory, req.args.get("target"))
        att = book.for_container(c.id)
        if att is None:
            raise OpError(f"container {c.name} has no profile ({c.state})", args.CONFLICT)
        mine = [e for kind in att.profile.entries.values() for e in kind.values()]
        if req.args.get("text"):
            try:
                docs = profile_file.parse(args.text(req.args, "text", limit=1 << 20))
            except profile_file.ProfileFileError as e:
                raise args.bad(f"the profile file does not validate: {e}") from None
            doc = next((d for d in docs if d.key == att.profile.key), None) or \
                next((d for d in docs if (d.app, d.service) == (c.app, c.service)), docs[0])
            other, against = doc.entries, f"file: {doc.app}/{doc.service} {doc.image_digest[:19]}"
        elif req.args.get("other"):
            o = args.container(inventory, req.args.get("other"))
            o_att = book.for_container(o.id)
            if o_att is None:
                raise OpError(f"container {o.name} has no profile ({o.state})", args.CONFLICT)
            other = [e for kind in o_att.profile.entries.values() for e in kind.values()]
            against = f"container {o.name}"
        else:  # drift on deploy: against the previous image digest's profile of the service
            older = [p for p in book.profiles.values() if p.app == c.app and p.service == c.service
                     and p is not att.profile and p.created <= att.profile.created]
            if not older:
                raise OpError(f"{c.app}/{c.service} has no profile of an earlier image to compare with",
                              args.NOT_FOUND)
            prev = max(older, key=lambda p: p.created)
            other = [e for kind in prev.entries.values() for e in kind.values()]
            against = f"profile {prev.id} ({prev.image_digest[:19]})"
        # What this container's profile has that the other lacks is "added".
        return {"container": c.name, "profile": att.profile.id, "against": against,
                **profile_file.diff(other, mine)}

    def attachment(target: Any) -> tuple[Container, Any]:
        c = args.container(inventory, target)
        att = book.for_container(c.id)
        if att is None:
            raise OpError(f"container {c.name} has no profile ({c.state})", args.CONFLICT)
        return c, att

    def listing(entries: list[Any]) -> list[dict[str, Any]]:
        return [{"kind": e.kind, "key": e.key, "source": e.source, "what": allow.describe(e)} for e in entries]

    async def op_prune(req: Request) -> dict[str, Any]:
        """Remove the seeded entries never seen in use while the profile learned."""
        c, att = attachment(req.args.get("target"))
        p = att.profile
        dry_run = args.boolean(req.args, "dry_run", False)
        if p.state == "learning" and not dry_run:
            raise OpError(f"profile {p.id} of {c.name} is still learning: what is unused is not known yet "
                          "(prune once it is active)", args.CONFLICT)
        removed = book.prune(p, dry_run=dry_run)
        return {"container": c.name, "profile": p.id, "app": p.app, "service": p.service, "state": p.state,
                "dry_run": dry_run, "removed": listing(removed)}

    async def op_carry(req: Request) -> dict[str, Any]:
        """Copy the entries allowed by hand in an earlier image digest's profile of the
        container's service into its current profile."""
        c, att = attachment(req.args.get("target"))
        p = att.profile
        older = [o for o in book.profiles.values() if o.app == p.app and o.service == p.service and o is not p]
        wanted = req.args.get("from")
        if wanted is not None:
            digest = args.text(req.args, "from", limit=256)
            matches = [o for o in older if o.image_digest == digest or
                       (len(digest) >= 4 and (o.image_digest.startswith(digest)
                                              or o.image_digest.split(":", 1)[-1].startswith(digest)))]
            if not matches:
                raise OpError(f"{p.app}/{p.service} has no other profile of image {digest[:80]}", args.NOT_FOUND)
            if len(matches) > 1:
                raise args.bad(f"{digest[:80]} names {len(matches)} profiles of {p.app}/{p.service}: give more digits")
            source = matches[0]
        else:
            earlier = [o for o in older if o.created <= p.created]
            if not earlier:
                raise OpError(f"{p.app}/{p.service} has no profile of an earlier image to carry from",
                              args.NOT_FOUND)
            source = max(earlier, key=lambda o: (o.created, o.id))
        dry_run = args.boolean(req.args, "dry_run", False)
        carried = book.carry(source, p, dry_run=dry_run)
        return {"container": c.name, "profile": p.id, "app": p.app, "service": p.service,
                "from_profile": source.id, "from_digest": source.image_digest, "dry_run": dry_run,
                "carried": [{**row, "by": e.data.get("by", ""), "alert_id": e.data.get("alert_id")}
                            for row, e in zip(listing(carried), carried)]}

    server.register("profile", op_profile)
    server.register("profile.prune", op_prune, mutates=True)
    server.register("profile.carry", op_carry, mutates=True)
    server.register("profile.export", op_export)
    server.register("profile.import", op_import, mutates=True, target_arg="name")
    server.register("profile.diff", op_diff)
    server.register("mode", op_mode, mutates=True)
    server.register("relearn", op_relearn, mutates=True)
    server.register("allow", op_allow, mutates=True, target_arg="alert_id")
    server.register("disallow", op_disallow, mutates=True, target_arg="alert_id")


async def _would_stop(alerts: AlertBook, scope: str, name: str, window: float) -> list[dict[str, Any]]:
    """The incidents of the window that protect mode would have stopped (their `would`)."""
    q = AlertQuery(limit=PREVIEW_LIMIT, **({"app": name} if scope == "app" else {"container": name}))
    since = iso_time(time.time() - window)
    return [{"id": a.id, "container": a.container, "kind": a.kind, "subject": a.subject, "summary": a.summary,
             "would": a.would, "count": a.count, "last_seen": a.last_seen}
            for a in await alerts.query(q) if a.would and a.last_seen >= since and not a.resolved]


def _profiles_named(book: ProfileBook, inventory: Inventory, target: str) -> list[Profile]:
    """A container's profile, or every profile of an app."""
    app = [p for p in book.profiles.values() if p.app == target]
    if app and not inventory.resolve(target):
        return app
    c = args.container(inventory, target)
    att = book.for_container(c.id)
    if att is None:
        raise OpError(f"container {c.name} has no profile ({c.state})", args.CONFLICT)
    return [att.profile]


def _profile_of(book: ProfileBook, inventory: Inventory, alert: Alert) -> Profile | None:
    """The profile the incident was judged against: its container's, else the newest of its
    app and service (the container may be gone)."""
    c = inventory.containers.get(alert.container_id)
    if c is not None:
        p = book.by_key.get(profile_key(c))
        if p is not None:
            return p
    candidates = [p for p in book.profiles.values() if p.app == alert.app and p.service == alert.service]
    return max(candidates, key=lambda p: p.created, default=None)


def _app_exists(book: ProfileBook, inventory: Inventory, name: str) -> bool:
    if any(c.app == name for c in inventory.containers.values()):
        return True
    return name in book.app_rows or any(p.app == name for p in book.profiles.values())
