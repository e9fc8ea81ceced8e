"""Ops of the alert book: alerts (a query) and alert (one incident) (docs/protocol.md)."""

from __future__ import annotations

from typing import Any

from ..detect.alerts import AlertBook
from ..models import ALERT_KINDS, SEVERITIES
from ..server import OpError, Request, Server
from ..store.alerts import AlertQuery
from . import args


def register(server: Server, alerts: AlertBook) -> None:
    async def op_alerts(req: Request) -> list[dict[str, Any]]:
        return [a.to_dict() for a in await alerts.query(parse_query(req.args))]

    async def op_alert(req: Request) -> dict[str, Any]:
        # `alert_id`; without it the request's own id names the alert (docs/protocol.md:
        # an "id" argument cannot be told from the request id on the wire).
        alert_id = args.whole({"alert_id": req.args.get("alert_id", req.id)}, "alert_id")
        alert = await alerts.find(alert_id)
        if alert is None:
            raise OpError(f"no alert {alert_id}", args.NOT_FOUND)
        return alert.to_dict()

    server.register("alerts", op_alerts)
    server.register("alert", op_alert)


def parse_query(a: dict[str, Any]) -> AlertQuery:
    q = AlertQuery()
    if a.get("since") is not None:
        q.since = args.whole(a, "since", lo=0)
    if a.get("limit") is not None:
        q.limit = args.whole(a, "limit", lo=1, hi=100_000)
    q.kind = args.choice(a, "kind", ALERT_KINDS, required=False) or q.kind
    q.min_severity = args.choice(a, "severity", SEVERITIES, required=False) or q.min_severity
    q.app = args.optional_name(a, "app") or q.app
    q.container = args.optional_name(a, "container") or q.container
    return q
