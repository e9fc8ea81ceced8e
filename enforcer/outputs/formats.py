"""Encoders of one incident (the Alert schema, as `stockade alerts --json` prints it) for the
pipelines people already run (docs/outputs.md):

- `json`: the incident unchanged;
- `falco`: Falco's JSON alert (uuid, output, priority, rule, time, output_fields, source,
  tags, hostname), written from Falco's documented fields so falcosidekick takes it as is;
- `ocsf`: an OCSF Detection Finding (class_uid 2004, category 2 "Findings").

Each encoder is a pure function of the incident dict: the delivery worker calls it when it
sends, so the outbox keeps the incident and a format is never frozen into stored rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..models import parse_iso_time

# The namespace of the deterministic uuids: one (host, incident id, count) is one uuid, so a
# receiver can drop the duplicates that at-least-once delivery may produce.
_NAMESPACE = uuid.UUID("6f1c2a57-3c1e-4c55-9d0b-57a0c4ade001")

# Falco's priorities are syslog's names; Stockade has four severities.
FALCO_PRIORITY = {"low": "Notice", "medium": "Warning", "high": "Error", "critical": "Critical"}
# OCSF severity_id: 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical, 6 Fatal.
OCSF_SEVERITY = {"low": (2, "Low"), "medium": (3, "Medium"), "high": (4, "High"), "critical": (5, "Critical")}
OCSF_VERSION = "1.1.0"
OCSF_CLASS = 2004  # Detection Finding
OCSF_CATEGORY = 2  # Findings


def event_uuid(alert: dict[str, Any]) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{alert.get('host', '')}/{alert.get('id')}/{alert.get('count', 1)}"))


def _epoch(alert: dict[str, Any], key: str = "time") -> float:
    value = alert.get(key) or alert.get("time") or ""
    try:
        return parse_iso_time(value)
    except (ValueError, TypeError):
        return 0.0


def _rfc3339_nanos(epoch: float) -> str:
    """Falco's time: RFC 3339, UTC, nanoseconds (from our milliseconds)."""
    t = datetime.fromtimestamp(int(epoch), tz=UTC)
    nanos = round((epoch - int(epoch)) * 1000) * 1_000_000
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos:09d}Z"


def encode_json(alert: dict[str, Any]) -> dict[str, Any]:
    return dict(alert)


def _falco_fields(alert: dict[str, Any]) -> dict[str, Any]:
    d = alert.get("detail") or {}
    image = alert.get("image") or ""
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    cid = alert.get("container_id") or ""
    fields: dict[str, Any] = {
        "container.id": cid[:12],  # Falco's container.id is the short id
        "container.full_id": cid,
        "container.name": alert.get("container") or "",
        "container.image": image,
        "container.image.repository": repo,
        "container.image.tag": tag,
        "stockade.app": alert.get("app") or "",
        "stockade.service": alert.get("service") or "",
        "stockade.kind": alert.get("kind") or "",
        "stockade.action": alert.get("action") or "",
        "stockade.would": alert.get("would"),
        "stockade.count": alert.get("count", 1),
        "stockade.alert_id": alert.get("id"),
    }
    if d.get("pid") is not None:
        fields["proc.pid"] = d.get("pid")
    if d.get("ppid") is not None:
        fields["proc.ppid"] = d.get("ppid")
    if d.get("uid") is not None:
        fields["user.uid"] = d.get("uid")
    kind = alert.get("kind")
    if kind == "process":
        path = d.get("path") or ""
        argv = d.get("argv") or []
        fields["proc.exepath"] = path
        fields["proc.name"] = (d.get("applet") or path).rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        fields["proc.cmdline"] = " ".join(str(a) for a in argv) if argv else fields["proc.name"]
        if d.get("sha256"):
            fields["proc.exe.sha256"] = d["sha256"]
    elif d.get("comm"):
        fields["proc.name"] = d["comm"]
    if kind == "network":
        fields["fd.l4proto"] = d.get("proto")
        fields["fd.lip"], fields["fd.lport"] = d.get("local_ip"), d.get("local_port")
        fields["fd.rip"], fields["fd.rport"] = d.get("remote_ip"), d.get("remote_port")
        fields["fd.name"] = f"{d.get('local_ip')}:{d.get('local_port')}->{d.get('remote_ip')}:{d.get('remote_port')}"
        fields["evt.type"] = "accept" if d.get("direction") == "in" else "connect"
    elif kind == "file":
        fields["fd.name"] = d.get("path")
        fields["evt.type"] = d.get("op")
    elif kind == "syscall":
        fields["evt.type"] = d.get("name")
        fields["evt.res"] = d.get("ret")
    elif kind == "threat":
        fields["stockade.feed"] = d.get("feed")
        fields["stockade.indicator"] = d.get("indicator")
    return fields


def encode_falco(alert: dict[str, Any]) -> dict[str, Any]:
    epoch = _epoch(alert)
    time_text = _rfc3339_nanos(epoch)
    priority = FALCO_PRIORITY.get(alert.get("severity", ""), "Warning")
    fields = _falco_fields(alert)
    output = (f"{time_text[11:29]}: {priority} {alert.get('summary', '')} (container={alert.get('container', '')}"
              f" container_id={fields['container.id']} image={alert.get('image', '')}"
              f" action={alert.get('action', '')} count={alert.get('count', 1)})")
    rule = alert.get("rule") or "stockade"
    tags = ["stockade", str(alert.get("kind") or ""), *[str(t) for t in alert.get("tags") or []]]
    return {
        "uuid": event_uuid(alert),
        "output": output,
        "priority": priority,
        "rule": f"stockade: {alert.get('kind', '')} {rule}".strip(),
        "time": time_text,
        "output_fields": fields,
        "source": "stockade",
        "tags": [t for t in tags if t],
        "hostname": alert.get("host") or "",
    }


def encode_ocsf(alert: dict[str, Any]) -> dict[str, Any]:
    severity_id, severity = OCSF_SEVERITY.get(alert.get("severity", ""), (0, "Unknown"))
    count = int(alert.get("count") or 1)
    activity_id, activity = (1, "Create") if count <= 1 else (2, "Update")
    d = alert.get("detail") or {}
    container = {"uid": alert.get("container_id") or "", "name": alert.get("container") or "",
                 "image": {"name": alert.get("image") or ""}}
    evidence: dict[str, Any] = {"container": container}
    if d.get("pid") is not None or d.get("path") and alert.get("kind") == "process":
        process: dict[str, Any] = {"pid": d.get("pid")}
        if alert.get("kind") == "process":
            process.update({"file": {"path": d.get("path"), "name": str(d.get("path") or "").rsplit("/", 1)[-1]},
                            "cmd_line": " ".join(str(a) for a in d.get("argv") or [])})
            if d.get("sha256"):
                process["file"]["hashes"] = [{"algorithm_id": 3, "algorithm": "SHA-256", "value": d["sha256"]}]
        elif d.get("comm"):
            process["name"] = d["comm"]
        evidence["process"] = process
    if alert.get("kind") == "network":
        evidence["src_endpoint"] = {"ip": d.get("local_ip"), "port": d.get("local_port")}
        evidence["dst_endpoint"] = {"ip": d.get("remote_ip"), "port": d.get("remote_port")}
        evidence["connection_info"] = {"protocol_name": d.get("proto"),
                                       "direction_id": 1 if d.get("direction") == "in" else 2}
    if alert.get("kind") == "file":
        evidence["file"] = {"path": d.get("path"), "name": str(d.get("path") or "").rsplit("/", 1)[-1]}
    finding = {
        "uid": f"{alert.get('host', '')}/{alert.get('id')}",
        "title": alert.get("summary") or "",
        "desc": f"{alert.get('summary', '')} in container {alert.get('container', '')} "
                f"({alert.get('app', '')}/{alert.get('service', '')}); action {alert.get('action', '')}",
        "types": [str(alert.get("kind") or "")],
        "first_seen_time": int(_epoch(alert, "first_seen") * 1000),
        "last_seen_time": int(_epoch(alert, "last_seen") * 1000),
        "analytic": {"name": alert.get("rule") or "", "type_id": 1, "type": "Rule"},
    }
    tags = alert.get("tags") or []
    if tags:
        finding["attacks"] = [{"technique": {"uid": str(t)}} for t in tags]
    return {
        "class_uid": OCSF_CLASS,
        "class_name": "Detection Finding",
        "category_uid": OCSF_CATEGORY,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": OCSF_CLASS * 100 + activity_id,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "action_id": 2 if alert.get("action") in ("killed", "blocked", "frozen") else 1,
        "disposition": alert.get("action") or "",
        "time": int(_epoch(alert) * 1000),
        "count": count,
        "message": alert.get("summary") or "",
        "finding_info": finding,
        "metadata": {"uid": event_uuid(alert), "version": OCSF_VERSION,
                     "product": {"name": "Stockade", "vendor_name": "Stockade", "version": __version__}},
        "device": {"hostname": alert.get("host") or "", "type_id": 0},
        "resources": [{"type": "container", "uid": container["uid"], "name": container["name"],
                       "labels": [f"app={alert.get('app', '')}", f"service={alert.get('service', '')}"]}],
        "evidences": [evidence],
        "unmapped": {"stockade": {"id": alert.get("id"), "kind": alert.get("kind"), "subject": alert.get("subject"),
                                  "rule": alert.get("rule"), "detail": d}},
    }


ENCODERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "json": encode_json, "falco": encode_falco, "ocsf": encode_ocsf}


def encode(fmt: str, alert: dict[str, Any]) -> dict[str, Any]:
    return ENCODERS[fmt](alert)
