"""stockade profile CONTAINER | profile export|import|diff|prune|carry ... | alerts [--follow]
[--since ID] | mode TARGET MODE [--preview] | relearn TARGET | allow ALERT_ID"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from enforcer.models import ALERT_KINDS, MODES, SEVERITIES
from enforcer.protocol import ProtocolError

from ..client import EnforcerClient
from ..escape import printable
from ..output import duration, print_json, print_table


MAX_PROFILE_FILE = 900 << 10  # the socket refuses a request line over 1 MiB (JSON escaping adds some)


def register(sub: Any) -> None:
    p = sub.add_parser("profile", help="a container's profile: what it may run, listen on, reach, write, call; "
                       "profile export|import|diff: profiles as code; profile prune|carry: its upkeep (audited)",
                       usage="stockade profile CONTAINER [--json]\n"
                             "       stockade profile export CONTAINER|APP [--out FILE]\n"
                             "       stockade profile import FILE\n"
                             "       stockade profile diff CONTAINER [FILE|CONTAINER]\n"
                             "       stockade profile prune CONTAINER [--dry-run]\n"
                             "       stockade profile carry CONTAINER [--from DIGEST] [--dry-run]")
    p.add_argument("words", nargs="+", metavar="CONTAINER",
                   help="name, id or id prefix (or export/import/diff/prune/carry ...)")
    p.add_argument("--out", metavar="FILE", help="export: write the YAML here (default: stdout)")
    p.add_argument("--dry-run", action="store_true", help="prune, carry: say what would change; change nothing")
    p.add_argument("--from", dest="from_digest", metavar="DIGEST",
                   help="carry: the image digest (or a prefix of it) whose profile to carry from "
                        "(default: the previous one of the service)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_profile)

    p = sub.add_parser("alerts", help="incidents, newest first; --follow streams new ones")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing incidents as they come and grow")
    p.add_argument("--since", type=int, default=0, metavar="ID", help="only incidents with a larger id")
    p.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    p.add_argument("--kind", choices=ALERT_KINDS)
    p.add_argument("--severity", choices=SEVERITIES, help="this severity or worse")
    p.add_argument("--app", help="only this app's incidents")
    p.add_argument("--container", help="only this container's incidents (name, id or id prefix)")
    p.add_argument("--json", action="store_true", help="one JSON object per line (the alert schema)")
    p.set_defaults(run=run_alerts)

    p = sub.add_parser("mode", help="set the mode of an app (or of one container): learn, alert or protect")
    p.add_argument("target", help="app, or container name/id")
    p.add_argument("mode", choices=MODES)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--app", dest="scope", action="store_const", const="app", help="TARGET is an app")
    scope.add_argument("--container", dest="scope", action="store_const", const="container",
                       help="TARGET is a container (a per-container override)")
    p.add_argument("--preview", action="store_true",
                   help="with protect: list what protect would have stopped over the window; change nothing")
    p.add_argument("--window", type=float, default=24 * 3600, metavar="SECONDS",
                   help="how far back --preview looks (default 24 h)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_mode)

    p = sub.add_parser("allow", help="accept an incident into its profile (it stops recurring; audited)")
    p.add_argument("alert_id", type=int, help="the incident's id (stockade alerts)")
    p.add_argument("--undo", action="store_true", help="withdraw what allowing this incident added")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_allow)

    p = sub.add_parser("relearn", help="reset the profiles of an app or a container to learning (seed kept)")
    p.add_argument("target", help="app, or container name/id")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_relearn)


# -- profile -----------------------------------------------------------------------------------
def _entry_text(kind: str, e: dict[str, Any]) -> str:
    d = e.get("data") or {}
    if kind == "process":
        sha = d.get("sha256") or ""
        return f"{d.get('path', e['key'])}  " + (f"sha256:{sha[:16]}" if sha else "(not pinned yet)") + \
            (f"  -> {d['binary']}" if d.get("binary") else "")
    if kind == "peer":
        arrow = "->" if d.get("direction") == "out" else "<-"
        return f"{arrow} {d.get('peer')} {d.get('proto')}/{d.get('port')}"
    return str(e["key"])


def _origin(e: dict[str, Any]) -> str:
    """Where an entry came from: seed (and whether it was ever used), learned, or allowed by
    whom (from which incident, carried from which image digest)."""
    d = e.get("data") or {}
    if e.get("source") == "allowed":
        text = f"allowed by {printable(d.get('by', '?'), 64)} (incident {printable(d.get('alert_id', '?'), 20)})"
        if d.get("carried_from"):
            text += f", carried from {printable(str(d['carried_from'])[:19], 20)}"
        return text
    if e.get("source") == "seed" and e.get("never_used"):
        return "seed, never used"
    return printable(e.get("source", ""), 20)


async def run_profile(args: argparse.Namespace, client: EnforcerClient) -> int:
    verb, rest = args.words[0], args.words[1:]
    if verb in ("export", "import", "diff"):
        return await _profile_as_code(verb, rest, args, client)
    if verb in ("prune", "carry"):
        return await _profile_upkeep(verb, rest, args, client)
    if rest:
        raise ProtocolError(f"unexpected {printable(rest[0], 64)!s}: give one container "
                            "(or export, import, diff, prune, carry)", "bad_request")
    args.container = verb
    result = await client.call("profile", target=args.container)
    if args.json:
        print_json(result)
        return 0
    c, p = result["container"], result["profile"]
    state = p["state"] + (f" ({duration(p.get('learning_left', 0))} left)" if p["state"] == "learning" else "")
    if p["state"] == "learning" and p.get("learning_reason"):
        state += f"; {printable(p['learning_reason'], 200)}"
    print(f"container  {printable(c['name'])}  ({printable(c['app'])}/{printable(c['service'])})")
    print(f"profile    {p['id']}  {state}  mode {p.get('mode', '-')}")
    print(f"image      {printable(c['image'])}  {printable(p['image_digest'][:19])}")
    image = p.get("image") or {}
    if image.get("command"):
        print(f"command    {printable(' '.join(image['command']), 200)}")
    if image.get("user"):
        print(f"user       {printable(image['user'])}")
    if p.get("complete") is False:
        print("complete   NO: " + "; ".join(printable(g, 200) for g in p.get("gaps") or []))
    elif p.get("complete"):
        print("complete   yes (nothing was missed while it learned)")
    for kind, entries in p["entries"].items():
        print()
        print(f"{kind} ({len(entries)})")
        rows = [(_entry_text(kind, e), _origin(e)) for e in entries]
        if rows:
            print_table([("  " + printable(text, 300), src) for text, src in rows], ["  ENTRY", "SOURCE"])
    if p.get("suspect_paths"):
        print()
        print("held for a hash check: " + ", ".join(printable(x) for x in p["suspect_paths"]))
    if p.get("pruned"):
        print()
        print("pruned (not seeded again): " + ", ".join(printable(x, 200) for x in p["pruned"][:20])
              + (f" and {len(p['pruned']) - 20} more" if len(p["pruned"]) > 20 else ""))
    if p.get("never_used"):
        print()
        print(f"{p['never_used']} seeded entr{'y' if p['never_used'] == 1 else 'ies'} never used"
              + (" so far" if p["state"] == "learning" else " while it learned")
              + f": `stockade profile prune {printable(c['name'])}` removes them")
    return 0


async def _profile_upkeep(verb: str, rest: list[str], args: argparse.Namespace, client: EnforcerClient) -> int:
    usage = {"prune": "profile prune CONTAINER [--dry-run]",
             "carry": "profile carry CONTAINER [--from DIGEST] [--dry-run]"}[verb]
    if len(rest) != 1:
        raise ProtocolError(f"usage: stockade {usage}", "bad_request")
    kwargs: dict[str, Any] = {"target": rest[0], "dry_run": bool(args.dry_run)}
    if verb == "carry" and args.from_digest:
        kwargs["from"] = args.from_digest
    result = await client.call(f"profile.{verb}", **kwargs)
    if args.json:
        print_json(result)
        return 0
    rows = result["removed"] if verb == "prune" else result["carried"]
    head = f"{printable(result['container'])} (profile {result['profile']})"
    if verb == "prune":
        if not rows:
            print(f"{head}: no seeded entry is unused; nothing to prune")
            return 0
        verb_done = "would remove" if result["dry_run"] else "removed"
        print(f"{head}: {verb_done} {len(rows)} seeded, never used entr{'y' if len(rows) == 1 else 'ies'}:")
    else:
        source = f"profile {result['from_profile']} ({printable(result['from_digest'][:19], 20)})"
        if not rows:
            print(f"{head}: nothing allowed by hand in {source} is missing here; nothing to carry")
            return 0
        verb_done = "would carry" if result["dry_run"] else "carried"
        print(f"{head}: {verb_done} {len(rows)} allowed entr{'y' if len(rows) == 1 else 'ies'} from {source}:")
    for r in rows:
        print(f"  {r['kind']:<8} {printable(r['what'], 300)}")
    if result["dry_run"]:
        print("(dry run: nothing changed)")
    return 0


async def _profile_as_code(verb: str, rest: list[str], args: argparse.Namespace, client: EnforcerClient) -> int:
    usage = {"export": "profile export CONTAINER|APP [--out FILE]", "import": "profile import FILE",
             "diff": "profile diff CONTAINER [FILE|CONTAINER]"}[verb]
    if not 1 <= len(rest) <= (2 if verb == "diff" else 1):
        raise ProtocolError(f"usage: stockade {usage}", "bad_request")
    if verb == "export":
        result = await client.call("profile.export", target=rest[0])
        if args.out:
            _write_file(args.out, result["yaml"])
            print(f"{len(result['profiles'])} profile(s) written to {printable(args.out, 300)}", file=sys.stderr)
        elif args.json:
            print_json(result)
        else:
            sys.stdout.write(result["yaml"])
        return 0
    if verb == "import":
        result = await client.call("profile.import", text=_read_file(rest[0]), name=rest[0][-256:])
        if args.json:
            print_json(result)
            return 0
        for p in result["imported"]:
            where = ", ".join(printable(n, 64) for n in p["containers"]) or "no container running it here yet"
            print(f"profile {p['id']} {printable(p['app'])}/{printable(p['service'])} "
                  f"{printable(p['image_digest'][:19])}: {p['entries']} entries, active ({where})")
        return 0
    kwargs: dict[str, Any] = {"target": rest[0]}
    if len(rest) == 2:
        if os.path.isfile(rest[1]):
            kwargs["text"] = _read_file(rest[1])
        else:
            kwargs["other"] = rest[1]
    result = await client.call("profile.diff", **kwargs)
    if args.json:
        print_json(result)
        return 0
    print(f"{printable(result['container'])} (profile {result['profile']}) against {printable(result['against'], 200)}")
    for sign, rows in (("+", result["added"]), ("-", result["removed"])):
        for r in rows:
            print(f"{sign} {r['kind']:<8} {printable(r['key'], 300)}  ({printable(r.get('origin', ''), 64)})")
    if not result["added"] and not result["removed"]:
        print("  no difference")
    return 0


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_PROFILE_FILE + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise ProtocolError(f"cannot read {printable(path, 300)}: {getattr(e, 'strerror', None) or e}",
                            "bad_request") from None
    if len(text) > MAX_PROFILE_FILE:
        raise ProtocolError(f"{printable(path, 300)} is larger than {MAX_PROFILE_FILE >> 10} KiB "
                            "(one request line of the socket); split it by app", "bad_request")
    return text


def _write_file(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ProtocolError(f"cannot write {printable(path, 300)}: {e.strerror}", "failed") from None


# -- alerts ------------------------------------------------------------------------------------
def _query(args: argparse.Namespace) -> dict[str, Any]:
    q: dict[str, Any] = {"since": args.since, "limit": args.limit}
    for name in ("kind", "severity", "app", "container"):
        if getattr(args, name):
            q[name] = getattr(args, name)
    return q


def _row(a: dict[str, Any]) -> tuple[Any, ...]:
    return (a["id"], a["last_seen"] or a["time"], a["severity"], a["kind"], a["container"], a["count"],
            a["action"], a["summary"])


def _line(a: dict[str, Any]) -> str:
    """One incident on one line (follow mode: a growing count prints the line again)."""
    return (f"{a['id']:>6}  {printable(a['last_seen'] or a['time'])}  {printable(a['severity']):<8}  "
            f"{printable(a['kind']):<7}  {printable(a['container'])}  x{a['count']}  {printable(a['action'])}  "
            f"{printable(a['summary'], 300)}")


HEADERS = ["ID", "LAST SEEN", "SEVERITY", "KIND", "CONTAINER", "COUNT", "ACTION", "SUMMARY"]


def _wanted(a: dict[str, Any], args: argparse.Namespace) -> bool:
    if a.get("id", 0) <= args.since:
        return False
    if args.kind and a.get("kind") != args.kind:
        return False
    if args.severity and SEVERITIES.index(a.get("severity", "low")) < SEVERITIES.index(args.severity):
        return False
    if args.app and a.get("app") != args.app:
        return False
    if args.container and args.container not in (a.get("container"), a.get("container_id")) and not (
            len(args.container) >= 4 and str(a.get("container_id", "")).startswith(args.container)):
        return False
    return True


async def run_alerts(args: argparse.Namespace, client: EnforcerClient) -> int:
    if args.follow:
        await client.subscribe(["alert"])  # before the listing: nothing falls in between
    alerts = await client.call("alerts", **_query(args))
    if not args.follow:
        if args.json:
            for a in alerts:
                print_json(a)
        else:
            print_table([_row(a) for a in alerts], HEADERS)
        return 0
    shown: dict[int, int] = {}

    def show(a: dict[str, Any]) -> None:
        if shown.get(a["id"], 0) >= a["count"]:
            return  # already printed at this count (listed, then the same event arrived)
        shown[a["id"]] = a["count"]
        if args.json:
            print_json(a)
        else:
            print(_line(a))
        sys.stdout.flush()

    for a in reversed(alerts):  # oldest first, then what comes
        show(a)
    async for event in client.events():
        if event.get("event") == "disconnected":
            raise ProtocolError("the enforcer closed the connection", "unavailable")
        if event.get("event") == "overflow":
            print(f"stockade: {event['data'].get('dropped', 0)} alert events were dropped; "
                  "run `stockade alerts` to see everything", file=sys.stderr)
            continue
        if event.get("event") == "alert" and _wanted(event.get("data") or {}, args):
            show(event["data"])
    return 0


# -- mode, relearn -----------------------------------------------------------------------------
async def run_mode(args: argparse.Namespace, client: EnforcerClient) -> int:
    kwargs: dict[str, Any] = {"target": args.target, "mode": args.mode}
    if args.scope:
        kwargs["scope"] = args.scope
    if args.preview:
        kwargs.update(preview=True, window=args.window)
    result = await client.call("mode", **kwargs)
    if args.json:
        print_json(result)
    elif args.preview:
        stops = result["would_stop"]
        print(f"{result['scope']} {printable(result['target'])}: protect would have stopped {len(stops)} "
              f"incident(s) in the last {duration(result['window'])} (nothing changed)")
        print_table([(a["id"], a["last_seen"][:19].replace("T", " "), printable(a["container"], 40), a["would"],
                      a["count"], printable(a["summary"], 100)) for a in stops],
                    ["ID", "LAST SEEN", "CONTAINER", "WOULD", "COUNT", "SUMMARY"])
    else:
        print(f"{result['scope']} {printable(result['target'])}: mode {result['mode']}")
    return 0


async def run_allow(args: argparse.Namespace, client: EnforcerClient) -> int:
    if args.undo:
        result = await client.call("disallow", alert_id=args.alert_id)
        if args.json:
            print_json(result)
        else:
            ids = result.get("profiles") or [result["profile"]]
            which = f"profile {ids[0]}" if len(ids) == 1 else "profiles " + ", ".join(str(i) for i in ids)
            print(f"incident {result['alert_id']}: {which} no longer allow{'s' if len(ids) == 1 else ''} "
                  f"{printable(result['withdrawn'], 300)}; the incident is open again")
        return 0
    result = await client.call("allow", alert_id=args.alert_id)
    if args.json:
        print_json(result)
    else:
        print(f"incident {result['alert_id']}: profile {result['profile']} may now {printable(result['allowed'], 300)}"
              f" ({printable(result['resolved'])})")
    return 0


async def run_relearn(args: argparse.Namespace, client: EnforcerClient) -> int:
    result = await client.call("relearn", target=args.target)
    if args.json:
        print_json(result)
    else:
        ids = ", ".join(str(i) for i in result["profiles"]) or "none"
        print(f"{printable(args.target)}: profiles {ids} learning again")
    return 0
