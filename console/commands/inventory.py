"""stockade apps | containers | status | audit"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..client import EnforcerClient
from ..escape import printable
from ..output import ago, duration, print_json, print_table


def register(sub: Any) -> None:
    p = sub.add_parser("apps", help="apps (compose projects), their services and containers")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_apps)

    p = sub.add_parser("containers", help="containers under watch")
    p.add_argument("--app", help="only this app's containers")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_containers)

    p = sub.add_parser("status", help="enforcer health: up time, sensors, events, losses")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_status)

    p = sub.add_parser("audit", help="every action taken through the enforcer: who, what, result")
    p.add_argument("--limit", type=int, default=100, help="at most this many, newest first (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_audit)


async def run_apps(args: argparse.Namespace, client: EnforcerClient) -> int:
    apps = await client.call("apps")
    if args.json:
        print_json(apps)
        return 0
    containers = {c["id"]: c for c in await client.call("containers")}
    rows = []
    for app in apps:
        for service, ids in sorted(app["services"].items()):
            names = [containers[i]["name"] for i in ids if i in containers] or ["-"]
            states = sorted({containers[i]["state"] for i in ids if i in containers}) or ["-"]
            rows.append((app["name"], service, app.get("mode", ""), ",".join(states), " ".join(names)))
    print_table(rows, ["APP", "SERVICE", "MODE", "STATE", "CONTAINERS"])
    for app in apps:
        error = (app.get("compose") or {}).get("error")
        if error:  # the app is still watched, without a seed from its compose file
            print(f"stockade: app {printable(app['name'], 200)}: {printable(error, 500)}", file=sys.stderr)
    return 0


async def run_containers(args: argparse.Namespace, client: EnforcerClient) -> int:
    kwargs = {"app": args.app} if args.app else {}
    rows = await client.call("containers", **kwargs)
    if args.json:
        print_json(rows)
        return 0
    table = []
    for c in rows:
        addresses = ",".join(n["ip"] for n in c["networks"] if n.get("ip")) or "-"
        profile = c.get("profile_state") or "-"
        if profile == "learning" and c.get("learning_left"):
            profile += f" ({duration(c['learning_left'])} left)"
        table.append((c["name"], c["app"], c["service"], c["image"], c["state"], c.get("mode") or "-",
                      profile, c.get("alerts", 0), c["cgroup_id"] or "-", addresses, c["id"][:12]))
    print_table(table, ["NAME", "APP", "SERVICE", "IMAGE", "STATE", "MODE", "PROFILE", "ALERTS",
                        "CGROUP", "ADDRESSES", "ID"])
    return 0


async def run_status(args: argparse.Namespace, client: EnforcerClient) -> int:
    s = await client.call("status")
    if args.json:
        print_json(s)
        return 0
    docker = "connected" if s["docker"]["connected"] else f"unreachable ({s['docker']['error']})"
    print(f"host        {s['host']}")
    print(f"version     {s['version']}")
    print(f"up          {duration(s['uptime'])} (since {ago(s['started'])} ago)")
    print(f"docker      {docker}")
    print(f"containers  {s['containers']} ({s['containers_watched']} watched)")
    store = s["store"]
    state = "writing" if store.get("writing", True) else f"CANNOT WRITE since {ago(store['failing_since'])} ago"
    print(f"store       {state}, {store['pending_writes']} writes pending, {store.get('dropped_writes', 0)} dropped"
          + (f", error: {printable(str(store['error']), 200)}" if store["error"] else ""))
    sock = s.get("socket") or {}
    if sock:
        print(f"socket      {sock.get('requests', 0)} requests, {sock.get('subscribers', 0)} subscribers, "
              f"{sock.get('events_dropped', 0)} events dropped (slow subscribers)"
              + (f", {sock['in_flight']} in flight, {sock.get('busy_refused', 0)} refused as busy"
                 if "in_flight" in sock else "")
              + (f", {sock['lookups_stalled']} peers refused: user lookups stalled" if sock.get("lookups_stalled") else ""))
    det = s.get("detector") or {}
    if det:
        print(f"detector    {det.get('events', 0)} events, {det.get('queued', 0)} queued, "
              f"{det.get('errors', 0)} errors")
    if s.get("alerts"):
        counts = s["alerts"]
        print("alerts      " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    folding = s.get("alert_folding") or {}
    if folding:
        print(f"folding     {folding.get('raised', 0)} alerts raised into {folding.get('incidents_opened', 0)} "
              f"new incidents ({folding.get('burst_folded', 0)} into bursts)")
    pins = s.get("pins") or {}
    if pins:
        print("pins        " + _pins_line(pins))
    hasher = s.get("hasher") or {}
    if hasher:
        skipped = hasher.get("skipped") or {}
        worst = hasher.get("worst_queue") or {}
        why = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in skipped.items() if v)
        print(f"hasher      {hasher.get('hashed', 0)} hashed, {hasher.get('skipped_total', 0)} not hashed"
              + (f" ({why})" if why else "")
              + f", {hasher.get('stalled_reads', 0)} reads stalled ({hasher.get('stuck_reads', 0)} still blocked)"
              + f", {hasher.get('queued', 0)} queued"
              + (f", most by {printable(str(worst['container']), 80)} ({worst['queued']})" if worst.get("queued") else ""))
    guard = s.get("rewrite_guard") or {}
    if guard:
        print("rewrite     " + (
            f"guard on: {guard.get('tracked', 0)} written files tracked, {guard.get('held_execs', 0)} execs held, "
            f"{guard.get('marks_lost', 0)} marks lost ({guard.get('failing_closed', 0)} containers failing closed)"
            if guard.get("on") else f"guard off: {printable(str(guard.get('off_reason', '')))}"))
    refusals = (s.get("enforcement") or {}).get("refusals") or {}
    if refusals:
        print("refusals    " + (
            f"{refusals.get('logged', 0)} inbound refusals logged, {refusals.get('alerts', 0)} alerted, "
            f"{refusals.get('unlogged', 0)} over the log limit (refused, not alerted)"
            if refusals.get("available") else
            f"NOT TOLD (refused inbound connections raise no alert): {printable(str(refusals.get('error') or '?'), 200)}"))
    outputs = s.get("outputs") or {}
    if outputs.get("configured"):
        failing = outputs.get("failing") or []
        print(f"outputs     {outputs['configured']}, {outputs.get('delivered', 0)} delivered, "
              f"{outputs.get('pending', 0)} pending, {outputs.get('dropped', 0)} dropped (outbox was full)"
              + (f", failing: {printable(', '.join(failing), 200)}" if failing else ""))
    if s.get("sensors"):
        print()
        print_table([(x["name"], "loaded" if x.get("loaded") else "off", x.get("events", 0),
                      f"{x.get('rate', 0.0):.1f}", x.get("lost", 0), x.get("suppressed", 0), x.get("error", ""))
                     for x in s["sensors"]], ["SENSOR", "STATE", "EVENTS", "EVENTS/S", "LOST", "SUPPRESSED", "ERROR"])
    return 0


def _pins_line(pins: dict[str, Any]) -> str:
    """What of protect stays in the kernel when the enforcer is down (docs/failsafe.md)."""
    if not pins.get("enabled"):
        return f"off: {printable(str(pins.get('reason', '')), 200)} (kill-on-exec ends with the enforcer)"
    links = pins.get("links") or []
    progs = sum(g.get("programs", 0) for g in links)
    line = (f"{len(pins.get('maps', []))} maps since {ago(pins['maps_since'])} ago, "
            f"{progs} programs since {ago(min(g['since'] for g in links))} ago" if links else
            f"{len(pins.get('maps', []))} maps, no programs linked yet")
    adopted = (pins.get("adopted") or {}).get("links") or []
    if adopted:
        line += f" (adopted from pid {', '.join(str(g.get('pid')) for g in adopted)})"
    return f"{line} in {printable(str(pins.get('dir', '')), 200)}"


async def run_audit(args: argparse.Namespace, client: EnforcerClient) -> int:
    entries = await client.call("audit", limit=max(1, min(args.limit, 10_000)))
    if args.json:
        print_json(entries)
        return 0
    print_table([(e["id"], e["time"], f"{e['user']} ({e['uid']})", e["action"], e["target"], e["result"])
                 for e in entries],
                ["ID", "TIME", "USER", "ACTION", "TARGET", "RESULT"])
    return 0
