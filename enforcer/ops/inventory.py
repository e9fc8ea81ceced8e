"""Ops of the inventory: apps, containers and container (docs/protocol.md)."""

from __future__ import annotations

from typing import Any

from ..inventory import Inventory
from ..server import Request, Server
from ..store.inventory import InventoryRepo
from ..views import Views
from . import args


def register(server: Server, inventory: Inventory, views: Views, settings_repo: InventoryRepo) -> None:
    async def op_apps(req: Request) -> list[dict[str, Any]]:
        stored = await settings_repo.app_settings()
        return [views.app(app, stored.get(app.name, {})) for app in inventory.apps().values()]

    async def op_containers(req: Request) -> list[dict[str, Any]]:
        app = req.args.get("app")
        rows = []
        for c in sorted(inventory.containers.values(), key=lambda c: (c.app, c.service, c.name)):
            if app and c.app != app:
                continue
            c.pids = inventory.live_pids(c)
            rows.append(views.container(c))
        return rows

    async def op_container(req: Request) -> dict[str, Any]:
        c = args.container(inventory, req.args.get("target"))
        c.pids = inventory.live_pids(c)
        return views.container(c)

    server.register("apps", op_apps)
    server.register("containers", op_containers)
    server.register("container", op_container)
