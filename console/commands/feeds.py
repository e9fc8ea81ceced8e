"""stockade feeds list | add NAME URL --format F [--local] | remove NAME | sync [NAME] |
hits | check VALUE | enable NAME | disable NAME"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from enforcer.models import FORMATS
from enforcer.protocol import ProtocolError

from ..client import EnforcerClient
from ..escape import printable
from ..output import ago, duration, print_json, print_table

SYNC_TIMEOUT = 900.0  # a sync of every feed may take a while; the enforcer bounds each one


def register(sub: Any) -> None:
    p = sub.add_parser("feeds", help="threat feeds: list, add, remove, sync, hits")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_list)
    feeds = p.add_subparsers(dest="feeds_command", metavar="ACTION")

    q = feeds.add_parser("list", help="feeds, their last sync and counts")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q.set_defaults(run=run_list)

    q = feeds.add_parser("add", help="add a feed (and sync it once)")
    q.add_argument("name")
    q.add_argument("url")
    q.add_argument("--format", required=True, choices=FORMATS)
    q.add_argument("--local", action="store_true",
                   help="a feed of your own network: keep private ranges that are otherwise dropped")
    q.add_argument("--interval", type=float, default=3600.0, help="seconds between syncs (default 3600)")
    q.add_argument("--column", action="append", default=[], metavar="TYPE=COLUMN",
                   help="csv: where an indicator type is (header name or 0-based index); "
                        "TYPE is ip, ip:port, domain, url, sha256, md5, sha1, hash, indicator, type or delimiter")
    q.add_argument("--max-bytes", type=int, default=0, help="download size cap (default: the enforcer's)")
    q.add_argument("--disabled", action="store_true", help="register it but do not sync or match it yet")
    q.add_argument("--no-sync", action="store_true", help="do not sync now (the schedule will)")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q.set_defaults(run=run_add)

    q = feeds.add_parser("remove", help="remove a feed")
    q.add_argument("name")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q.set_defaults(run=run_remove)

    q = feeds.add_parser("sync", help="sync one feed, or every enabled feed, now")
    q.add_argument("name", nargs="?")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q.set_defaults(run=run_sync)

    q = feeds.add_parser("hits", help="recent values seen that a feed lists")
    q.add_argument("--limit", type=int, default=200)
    q.add_argument("--feed", help="only this feed's hits")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q.set_defaults(run=run_hits)

    q = feeds.add_parser("check", help="is this IP, domain or hash on a loaded feed?")
    q.add_argument("value")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q.set_defaults(run=run_check)

    for action, enabled in (("enable", True), ("disable", False)):
        q = feeds.add_parser(action, help=f"{action} a feed" + (" (catalogue feeds ship disabled)" if enabled else ""))
        q.add_argument("name")
        q.add_argument("--json", action="store_true", help="one JSON document")
        q.set_defaults(run=run_set, enabled=enabled)


def parse_columns(items: list[str]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ProtocolError(f"--column wants TYPE=COLUMN, not {item!r}", "bad_request")
        columns[key] = int(value) if value.isdigit() and key != "delimiter" else value
    return columns


async def run_list(args: argparse.Namespace, client: EnforcerClient) -> int:
    feeds = await client.call("feeds")
    if args.json:
        print_json(feeds)
        return 0
    rows = []
    for f in feeds:
        status = f["status"] + (" (loaded)" if f.get("loaded") and f["status"] == "failed" else "")
        rows.append((f["name"], "on" if f["enabled"] else "off", f["format"], "local" if f["local"] else "",
                     duration(f["interval"]), ago(f["last_sync"]), status, f["entries"], f["rejected"],
                     f["dropped"], f["hits"], f["error"] or f["url"]))
    print_table(rows, ["NAME", "ON", "FORMAT", "LOCAL", "EVERY", "SYNCED", "STATUS", "ENTRIES", "BAD",
                       "DROPPED", "HITS", "ERROR/URL"])
    return 0


async def run_add(args: argparse.Namespace, client: EnforcerClient) -> int:
    request: dict[str, Any] = {"name": args.name, "url": args.url, "format": args.format, "local": args.local,
                               "interval": args.interval, "enabled": not args.disabled}
    if args.column:
        request["columns"] = parse_columns(args.column)
    if args.max_bytes:
        request["max_bytes"] = args.max_bytes
    feed = await client.call("feeds.add", **request)
    results: list[dict[str, Any]] = []
    if feed["enabled"] and not args.no_sync:
        results = await client.call("feeds.sync", timeout=SYNC_TIMEOUT, name=args.name)
    if args.json:
        print_json({"feed": feed, "sync": results[0] if results else None})
    else:
        print(f"added feed {printable(args.name)} ({args.format}{', local' if args.local else ''})")
        _print_results(results)
    return _report_failures(results, "its first sync failed")


async def run_remove(args: argparse.Namespace, client: EnforcerClient) -> int:
    result = await client.call("feeds.remove", name=args.name)
    if args.json:
        print_json(result)
    else:
        print(f"removed feed {printable(result['removed'])}")
    return 0


async def run_sync(args: argparse.Namespace, client: EnforcerClient) -> int:
    request = {"name": args.name} if args.name else {}
    results = await client.call("feeds.sync", timeout=SYNC_TIMEOUT, **request)
    if args.json:
        print_json(results)
    else:
        if not results:
            print("no enabled feeds")
        _print_results(results)
    return _report_failures(results, "sync failed")


async def run_hits(args: argparse.Namespace, client: EnforcerClient) -> int:
    request: dict[str, Any] = {"limit": args.limit}
    if args.feed:
        request["feed"] = args.feed
    hits = await client.call("feeds.hits", **request)
    if args.json:
        print_json(hits)
        return 0
    print_table([(h["time"], h["feed"], h["type"], h["indicator"], h["matched"], h.get("container") or "-",
                  h.get("alert_id") or "-") for h in hits],
                ["TIME", "FEED", "TYPE", "INDICATOR", "MATCHED", "CONTAINER", "ALERT"])
    return 0


async def run_check(args: argparse.Namespace, client: EnforcerClient) -> int:
    result = await client.call("feeds.check", value=args.value)
    hit = result["hit"]
    if args.json:
        print_json(result)
    elif hit:
        print(f"{printable(result['value'])}: listed by {printable(hit['feed'])} as {hit['type']} "
              f"{printable(hit['indicator'])}")
    else:
        print(f"{printable(result['value'])}: not on any loaded feed")
    return 0


async def run_set(args: argparse.Namespace, client: EnforcerClient) -> int:
    feed = await client.call("feeds.set", name=args.name, enabled=args.enabled)
    if args.json:
        print_json(feed)
    else:
        print(f"feed {printable(feed['name'])} {'enabled' if feed['enabled'] else 'disabled'}")
    return 0


def _print_results(results: list[dict[str, Any]]) -> None:
    if not results:
        return
    print_table([(r["name"], r["status"], r["entries"], r["rejected"], r["dropped"], f"{r['seconds']:.2f}s",
                  r["error"]) for r in results],
                ["FEED", "RESULT", "ENTRIES", "BAD", "DROPPED", "TOOK", "ERROR"])


def _report_failures(results: list[dict[str, Any]], what: str) -> int:
    failed = [r for r in results if r["status"] == "failed"]
    for r in failed:
        print(f"stockade: feed {printable(r['name'])}: {what}: {printable(r['error'])}", file=sys.stderr)
    return 1 if failed else 0
