"""Socket ops of the profiles layer: profile, mode, relearn (docs/protocol.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..models import MODES
from ..server import OpError, Request

if TYPE_CHECKING:
    from .book import ProfileBook
    from .model import Profile


def register(book: "ProfileBook", server: Any) -> None:
    async def op_profile(req: Request) -> dict[str, Any]:
        c = book.enforcer.container_or_error(req.args.get("target"))
        att = book.for_container(c.id)
        if att is None:
            raise OpError(f"container {c.name} has no profile ({c.state})", "conflict")
        return {"container": book.enforcer.describe(c), "profile": book.profile_view(att)}

    async def op_mode(req: Request) -> dict[str, Any]:
        target, mode, scope = req.args.get("target"), req.args.get("mode"), req.args.get("scope")
        if not isinstance(target, str) or not target:
            raise OpError("name an app or a container", "bad_request")
        if mode not in MODES:
            raise OpError(f"mode must be one of {', '.join(MODES)}", "bad_request")
        if scope not in (None, "app", "container"):
            raise OpError("scope must be app or container", "bad_request")
        if scope is None:
            scope = "app" if _app_exists(book, target) else "container"
        store = book.enforcer.store.inventory
        if scope == "app":
            await store.set_app_mode(target, mode)
            name = target
        else:
            c = book.enforcer.container_or_error(target)
            await store.set_container_mode(c.name, mode)
            name = c.name
        await book.reload_modes()
        for c in book.refresh_modes():
            book.enforcer.server.publish("inventory", {"change": "updated", "container": book.enforcer.describe(c)})
        return {"target": name, "scope": scope, "mode": mode}

    async def op_relearn(req: Request) -> dict[str, Any]:
        target = req.args.get("target")
        if not isinstance(target, str) or not target:
            raise OpError("name an app or a container", "bad_request")
        profiles: list[Profile]
        if _app_exists(book, target):
            profiles = [p for p in book.profiles.values() if p.app == target]
        else:
            c = book.enforcer.container_or_error(target)
            att = book.for_container(c.id)
            if att is None:
                raise OpError(f"container {c.name} has no profile ({c.state})", "conflict")
            profiles = [att.profile]
        for p in profiles:
            book.relearn(p)
        return {"profiles": sorted(p.id for p in profiles)}

    server.register("profile", op_profile)
    server.register("mode", op_mode, mutates=True)
    server.register("relearn", op_relearn, mutates=True)


def _app_exists(book: "ProfileBook", name: str) -> bool:
    if any(c.app == name for c in book.enforcer.inventory.containers.values()):
        return True
    return name in book.app_rows or any(p.app == name for p in book.profiles.values())
