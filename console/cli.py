"""`stockade`: the console with no arguments, scriptable commands otherwise (DESIGN.md, CLI)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from enforcer.protocol import ProtocolError

from . import commands
from .client import EnforcerClient, Unreachable, default_socket_path
from .escape import printable


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stockade", description="Stockade: container runtime defense. "
                                "With no command, opens the console.")
    p.add_argument("--socket", action="append", default=None,
                   help="enforcer socket (default $STOCKADE_SOCKET or /run/stockade/enforcer.sock); the console "
                        "takes it several times and shows every enforcer (a fleet); commands use the first")
    p.add_argument("--read-only", action="store_true", help="console: unbind every key that changes state")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in commands.MODULES:
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sockets = args.socket or [default_socket_path()]
    socket_path = sockets[0]
    if not args.command:
        from .app import run_console

        return run_console(sockets, read_only=args.read_only)
    try:
        return asyncio.run(_run(args, socket_path))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except (ProtocolError, Unreachable) as e:
        print(f"stockade: {printable(e)}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, socket_path: str) -> int:
    client = EnforcerClient(socket_path)
    await client.connect()
    try:
        return int(await args.run(args, client) or 0)
    finally:
        await client.close()


if __name__ == "__main__":
    sys.exit(main())
