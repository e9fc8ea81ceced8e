"""Ops of the enforcer's health and record: status, stats and audit (docs/protocol.md)."""

from __future__ import annotations

import time
from typing import Any, Callable

from .. import __version__
from ..inventory import DockerSource, Inventory
from ..ports import StatusSource
from ..server import Request, Server
from ..store import Store
from . import args


def register(server: Server, *, host: str, started: float, docker: DockerSource, inventory: Inventory,
             store: Store, sources: Callable[[], list[StatusSource]]) -> None:
    """`sources()`: the parts whose status() dicts are merged into the reply, in order."""

    async def op_status(req: Request) -> dict[str, Any]:
        now = time.time()
        db = store.db
        status: dict[str, Any] = {
            "host": host,
            "version": __version__,
            "started": started,
            "uptime": now - started,
            "docker": {"connected": docker.connected, "error": "" if docker.connected else docker.last_error},
            "containers": len(inventory.containers),
            "containers_watched": sum(1 for c in inventory.containers.values() if c.cgroup_id),
            "store": {"pending_writes": db.pending, "error": db.last_error, "writing": not db.failing_since,
                      "failing_since": db.failing_since, "dropped_writes": db.dropped,
                      "committed_writes": db.writes_committed},
            "socket": server.status(),
            "sensors": [],
        }
        for source in sources():
            status.update(source.status())
        return status

    async def op_audit(req: Request) -> list[dict[str, Any]]:
        limit = args.whole(req.args, "limit", default=500, lo=1, hi=10_000)
        since = args.whole(req.args, "since", default=0, lo=0)
        return [e.to_dict() for e in await store.audit.recent(limit=limit, since_id=since)]

    server.register("status", op_status)
    server.register("audit", op_audit)
