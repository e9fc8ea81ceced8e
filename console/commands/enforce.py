"""stockade block | unblock | blocks | freeze | unfreeze | kill | forensics | seccomp | harden"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from enforcer.models import BadPeer, split_peer_port
from enforcer.protocol import ProtocolError

from ..client import EnforcerClient
from ..escape import printable
from ..output import print_json, print_table


def register(sub: Any) -> None:
    for name, helptext in (("block", "cut a container off from a peer (both directions)"),
                           ("unblock", "remove blocks (by container and peer, or --id)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("container", nargs="?" if name == "unblock" else None, help="name, id or id prefix")
        p.add_argument("--peer", required=name == "block", metavar="PEER",
                       help="a container, or IP[/CIDR]; :PORT for one port ([v6]:PORT for IPv6)")
        p.add_argument("--port", type=int, help="only this port (same as PEER:PORT)")
        p.add_argument("--proto", choices=("tcp", "udp", "any"), help="with a port: tcp, udp or both (default)")
        if name == "block":
            p.add_argument("--reason", help="why (kept with the block and in the audit log)")
        else:
            p.add_argument("--id", type=int, dest="block_id", help="the block's id (see stockade blocks)")
        p.add_argument("--json", action="store_true", help="one JSON document")
        p.set_defaults(run=run_block if name == "block" else run_unblock)

    p = sub.add_parser("blocks", help="network blocks in force")
    p.add_argument("container", nargs="?", help="only this container's blocks")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_blocks)

    for name, helptext in (("freeze", "freeze every process of a container (cgroup freezer)"),
                           ("unfreeze", "thaw a container frozen by Stockade")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("container", help="name, id or id prefix")
        p.add_argument("--json", action="store_true", help="one JSON document")
        p.set_defaults(run=run_freeze, op=name)

    p = sub.add_parser("kill", help="kill one process of a container (host pid, checked to be inside it)")
    p.add_argument("container", help="name, id or id prefix")
    p.add_argument("pid", type=int, help="the process's pid on the host")
    p.add_argument("--signal", "-s", default="KILL", help="signal name or number (default KILL)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_kill)

    p = sub.add_parser("forensics", help="freeze a container and write a tar.gz bundle for analysis")
    p.add_argument("container", help="name, id or id prefix")
    p.add_argument("--out", metavar="FILE", help="bundle path (default: the enforcer's forensics folder); must not exist")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(run=run_forensics)

    p = sub.add_parser("seccomp", help="a Docker seccomp profile (JSON) from the container's learned syscalls")
    p.add_argument("container", help="name, id or id prefix")
    p.add_argument("--json", action="store_true", help="(the output is JSON already)")
    p.set_defaults(run=run_seccomp)

    p = sub.add_parser("harden", help="a compose override (YAML) hardening an app from its learned profiles")
    p.add_argument("app", help="app (compose project) name")
    p.add_argument("--json", action="store_true", help="the override and the seccomp files as one JSON document")
    p.set_defaults(run=run_harden)


def _peer_args(args: argparse.Namespace) -> dict[str, Any]:
    try:
        peer, port = split_peer_port(args.peer)
    except BadPeer as e:
        raise ProtocolError(str(e), "bad_request") from None
    if port and args.port and port != args.port:
        raise ProtocolError(f"two ports given ({port} and {args.port})", "bad_request")
    out: dict[str, Any] = {"peer": peer}
    if port or args.port:
        out["port"] = port or args.port
    if args.proto:
        out["proto"] = args.proto
    return out


def _block_line(b: dict[str, Any]) -> str:
    port = f" port {b['port']}/{b['proto']}" if b.get("port") else ""
    where = (f"in force: {', '.join(map(printable, b.get('addresses') or []))} <-> "
             f"{', '.join(map(printable, b.get('peer_addresses') or []))}") if b.get("active") \
        else "not in force until both sides have an address (stopped container?)"
    return f"block {b['id']}: {printable(b['container'])} from {printable(b['peer'])}{port}; {where}"


async def run_block(args: argparse.Namespace, client: EnforcerClient) -> int:
    req = {"target": args.container, **_peer_args(args)}
    if args.reason:
        req["reason"] = args.reason
    b = await client.call("block", **req)
    if args.json:
        print_json(b)
    else:
        print(("blocked: " if b.get("created_now", True) else "already blocked: ") + _block_line(b))
    return 0


async def run_unblock(args: argparse.Namespace, client: EnforcerClient) -> int:
    if args.block_id is not None:
        result = await client.call("unblock", block_id=args.block_id)
    else:
        if not args.container or not args.peer:
            raise ProtocolError("name a container and --peer, or give --id", "bad_request")
        result = await client.call("unblock", target=args.container, **_peer_args(args))
    if args.json:
        print_json(result)
    else:
        n = result.get("removed", 0)
        print(f"removed {n} block{'s' if n != 1 else ''}")
    return 0


async def run_blocks(args: argparse.Namespace, client: EnforcerClient) -> int:
    rows = await client.call("blocks", **({"target": args.container} if args.container else {}))
    if args.json:
        print_json(rows)
        return 0
    print_table([(b["id"], printable(b["container"], 40), printable(b["peer"], 40),
                  f"{b['port']}/{b['proto']}" if b.get("port") else "all", "yes" if b["active"] else "no",
                  b["source"], printable(b.get("reason") or "", 60)) for b in rows],
                ["ID", "CONTAINER", "PEER", "PORT", "ACTIVE", "SOURCE", "REASON"])
    return 0


async def run_freeze(args: argparse.Namespace, client: EnforcerClient) -> int:
    result = await client.call(args.op, target=args.container)
    if args.json:
        print_json(result)
    else:
        note = " (paused by Docker)" if result.get("paused_by_docker") else ""
        print(f"{printable(result['container'])}: {result['state']}{note}")
    return 0


async def run_kill(args: argparse.Namespace, client: EnforcerClient) -> int:
    result = await client.call("kill", target=args.container, pid=args.pid, signal=args.signal)
    if args.json:
        print_json(result)
    else:
        print(f"sent SIG{result['signal']} to pid {result['pid']}" + (f"; {result['note']}" if result.get("note") else ""))
    return 0


async def run_forensics(args: argparse.Namespace, client: EnforcerClient) -> int:
    req: dict[str, Any] = {"target": args.container}
    if args.out:
        req["out"] = os.path.abspath(args.out)  # the enforcer's working folder is not ours
    result = await client.call("forensics", timeout=600, **req)
    if args.json:
        print_json(result)
        return 0
    print(f"bundle   {printable(result['path'], 4096)}")
    print(f"size     {result['size']} bytes, {result['members']} members, "
          f"{result['processes']} processes, {result['files_archived']} changed files archived")
    print(f"sha256   {result['sha256']}")
    if result.get("frozen"):
        print(f"{printable(result['container'])} stays frozen: stockade unfreeze {printable(result['container'])}")
    return 0


async def run_seccomp(args: argparse.Namespace, client: EnforcerClient) -> int:
    profile = await client.call("seccomp", target=args.container)
    try:
        c = await client.call("container", target=args.container)
        if c.get("profile_state") == "learning":
            print(f"stockade: note: {printable(c['name'])} is still learning; this profile may miss syscalls",
                  file=sys.stderr)
    except ProtocolError:
        pass
    print(json.dumps(profile, indent=2))
    return 0


async def run_harden(args: argparse.Namespace, client: EnforcerClient) -> int:
    result = await client.call("harden", target=args.app)
    if args.json:
        print_json(result)
    else:
        sys.stdout.write(result["yaml"])
    return 0
