"""`stockade`: the console with no arguments, scriptable commands otherwise (DESIGN.md, CLI).

Where: `--socket PATH` (a local enforcer), or `--host TARGET` / `STOCKADE_HOST` (a socket path,
`unix:///path` or `ssh://[user@]host[:port][/socket]`; several for the console). `stockade
dial-stdio` is what `--host ssh://...` runs on the remote: it is dispatched before anything
else is imported, since it starts once per connection.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

HOST_ENV = "STOCKADE_HOST"


def build_parser() -> argparse.ArgumentParser:
    import argparse

    from . import commands

    p = argparse.ArgumentParser(prog="stockade", description="Stockade: container runtime defense. "
                                "With no command, opens the console.")
    p.add_argument("--socket", default=None, help="enforcer socket (default $STOCKADE_SOCKET or /run/stockade/enforcer.sock)")
    p.add_argument("--host", action="append", default=None, metavar="TARGET",
                   help="the enforcer to talk to: ssh://[user@]host[:port][/socket], unix:///path or a socket "
                        f"path (default ${HOST_ENV}, comma-separated; the console takes several, other commands one)")
    p.add_argument("--read-only", action="store_true", help="console: unbind every key that changes state")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in commands.MODULES:
        module.register(sub)
    d = sub.add_parser("dial-stdio", help="bridge stdin/stdout to the local enforcer socket (what --host ssh:// runs remotely)")
    d.add_argument("--socket", dest="dial_socket", default=None, help="the socket (default $STOCKADE_SOCKET or the default)")
    return p


class UsageError(Exception):
    """A bad --host/--socket combination or target; one line, exit status 2."""


def resolve_targets(hosts: list[str] | None, socket: str | None, env: dict[str, str] | None = None) -> list[str]:
    """The targets to talk to, in order: --host flags, else --socket, else $STOCKADE_HOST
    (comma-separated), else the local socket. Each is checked (UsageError if bad)."""
    from .transport import TargetError, default_socket_path, parse_target

    env = os.environ if env is None else env
    if hosts and socket:
        raise UsageError("give --host or --socket, not both")
    if hosts:
        targets, source = [h.strip() for h in hosts], "--host"
    elif socket:
        return [socket]
    elif env.get(HOST_ENV, "").strip():
        targets, source = [t.strip() for t in env[HOST_ENV].split(",") if t.strip()], HOST_ENV
    else:
        return [default_socket_path()]
    for t in targets:
        if not t:
            raise UsageError(f"{source}: an empty target")
        if "://" not in t and "/" not in t:
            raise UsageError(f"{source} {t!r}: a host is ssh://[user@]host[:port][/socket] "
                             "(or unix:///path, or a socket path)")
        try:
            parse_target(t)
        except TargetError as e:
            raise UsageError(f"{source}: {e}") from None
    return targets


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dial-stdio"]:
        from .dial import main as dial_main

        return dial_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "dial-stdio":  # reached with global options before it
        from .dial import main as dial_main

        socket = args.dial_socket or args.socket
        return dial_main(["--socket", socket] if socket else [])
    from .escape import printable

    try:
        targets = resolve_targets(args.host, args.socket)
    except UsageError as e:
        print(f"stockade: {printable(e)}", file=sys.stderr)
        return 2
    if not args.command:
        from .app import run_console

        return run_console(targets, read_only=args.read_only)
    if len(targets) > 1:
        print(f"stockade {args.command}: talks to one enforcer, but {len(targets)} hosts were given "
              f"(--host / {HOST_ENV}); only the console takes several", file=sys.stderr)
        return 2
    import asyncio

    from enforcer.protocol import ProtocolError

    try:
        return asyncio.run(_run(args, targets[0]))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except ProtocolError as e:
        print(f"stockade: {printable(e)}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, target: str) -> int:
    from .client import EnforcerClient

    client = EnforcerClient(target)
    try:
        await client.connect()
        return int(await args.run(args, client) or 0)
    finally:
        await client.close()


if __name__ == "__main__":
    sys.exit(main())
