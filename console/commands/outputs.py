"""stockade outputs list | add NAME URL --format falco|json|ocsf [--min-severity S] [--header K:V]...
[--deadline SECONDS] | remove NAME | test NAME   (docs/outputs.md)"""

from __future__ import annotations

import argparse
from typing import Any

from enforcer.models import OUTPUT_FORMATS, SEVERITIES
from enforcer.protocol import ProtocolError

from ..client import EnforcerClient
from ..escape import printable
from ..output import ago, print_json, print_table


def register(sub: Any) -> None:
    p = sub.add_parser("outputs", help="alert outputs: HTTP, file and syslog, as json, falco or ocsf")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_list)
    outs = p.add_subparsers(dest="outputs_command", metavar="ACTION")

    q = outs.add_parser("list", help="outputs and their delivery state")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q.set_defaults(run=run_list)

    q = outs.add_parser("add", help="send every alert to URL: http(s)://..., file:///path, syslog://host:port, "
                                    "syslog+tcp://host:port")
    q.add_argument("name")
    q.add_argument("url")
    q.add_argument("--format", required=True, choices=OUTPUT_FORMATS)
    q.add_argument("--min-severity", choices=SEVERITIES, default="low", help="send only alerts this severe or more")
    q.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                   help="an HTTP header sent with every POST (repeatable)")
    q.add_argument("--deadline", type=float, metavar="SECONDS",
                   help="http(s): seconds one POST may take in all, answer included (default 20, 1-600); "
                        "a receiver slower than that fails the attempt, which is retried")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q.set_defaults(run=run_add)

    q = outs.add_parser("remove", help="remove an output (and what its outbox still holds)")
    q.add_argument("name")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q.set_defaults(run=run_remove)

    q = outs.add_parser("test", help="send one test alert to an output now")
    q.add_argument("name")
    q.add_argument("--json", action="store_true", help="one JSON document")
    q.set_defaults(run=run_test)


def parse_headers(items: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise ProtocolError(f"--header wants NAME:VALUE, not {item!r}", "bad_request")
        headers[key.strip()] = value.strip()
    return headers


async def run_list(args: argparse.Namespace, client: EnforcerClient) -> int:
    outputs = await client.call("outputs")
    if args.json:
        print_json(outputs)
        return 0
    rows = [(o["name"], o["format"], o["min_severity"], o["pending"], o["delivered"], o["dropped"],
             ago(o["last_delivery"]) if o["last_delivery"] else "never",
             f"failing ({o['failures']}x, retry in {o['retry_in']:g}s): {o['error']}" if o["failures"] else "ok",
             o["url"]) for o in outputs]
    print_table(rows, ["NAME", "FORMAT", "MIN", "PENDING", "DELIVERED", "DROPPED", "LAST", "STATE", "URL"])
    return 0


async def run_add(args: argparse.Namespace, client: EnforcerClient) -> int:
    request: dict[str, Any] = {"name": args.name, "url": args.url, "format": args.format,
                               "min_severity": args.min_severity}
    headers = parse_headers(args.header)
    if headers:
        request["headers"] = headers
    if args.deadline is not None:
        request["deadline"] = args.deadline
    out = await client.call("outputs.add", **request)
    if args.json:
        print_json(out)
    else:
        print(f"added output {printable(out['name'])} ({out['format']}, {out['min_severity']} and above) "
              f"-> {printable(out['url'])}")
    return 0


async def run_remove(args: argparse.Namespace, client: EnforcerClient) -> int:
    result = await client.call("outputs.remove", name=args.name)
    if args.json:
        print_json(result)
    else:
        print(f"removed output {printable(result['removed'])}")
    return 0


async def run_test(args: argparse.Namespace, client: EnforcerClient) -> int:
    # The test POST may take the output's whole deadline: wait a little longer than that.
    deadline = next((o.get("deadline") for o in await client.call("outputs") if o["name"] == args.name), None)
    result = await client.call("outputs.test", name=args.name, timeout=max(30.0, (deadline or 0) + 10))
    if args.json:
        print_json(result)
    else:
        print(f"output {printable(result['name'])}: test alert delivered in {result['seconds']:.3f}s")
    return 0
