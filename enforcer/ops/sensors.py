"""Ops of the sensors: stats (events, losses and rates per sensor; docs/protocol.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..server import Request, Server

if TYPE_CHECKING:
    from ..sensors.hub import SensorHub  # only for the annotation: this module must not load bcc


def register(server: Server, hub: "SensorHub") -> None:
    async def op_stats(req: Request) -> dict[str, Any]:
        return hub.stats_result()

    server.register("stats", op_stats)
