"""Ops of the profiles: profile, mode, relearn (docs/protocol.md)."""

from __future__ import annotations

from typing import Any, Callable

from ..inventory import Inventory
from ..models import MODES, Container
from ..profiles.book import ProfileBook
from ..profiles.model import Profile
from ..server import OpError, Request, Server
from . import args

ContainerView = Callable[[Container], dict[str, Any]]


def register(server: Server, book: ProfileBook, inventory: Inventory, view: ContainerView) -> None:
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

    server.register("profile", op_profile)
    server.register("mode", op_mode, mutates=True)
    server.register("relearn", op_relearn, mutates=True)


def _app_exists(book: ProfileBook, inventory: Inventory, name: str) -> bool:
    if any(c.app == name for c in inventory.containers.values()):
        return True
    return name in book.app_rows or any(p.app == name for p in book.profiles.values())
