"""`stockade-enforcer`: the daemon, in the foreground. SIGTERM (or Ctrl-C) stops it cleanly."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import __version__
from .config import ConfigError, Settings
from .daemon import Daemon
from .server import SocketInUse
from .store import StoreError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="stockade-enforcer", description="Stockade's per-host enforcer daemon.")
    p.add_argument("--socket", help="unix socket path (default /run/stockade/enforcer.sock)")
    p.add_argument("--db", help="SQLite database (default /var/lib/stockade/stockade.db)")
    p.add_argument("--learn-seconds", type=float, help="learning period of a new profile (default 600)")
    p.add_argument("--learn-stable-seconds", type=float,
                   help="learning also waits until no new entry for this long (default: a quarter of "
                        "the learning period, at most 300)")
    p.add_argument("--config", help="TOML config file (default /etc/stockade/config.toml if present)")
    p.add_argument("--no-sensors", action="store_true", help="do not load eBPF sensors (control plane only)")
    p.add_argument("--socket-group", help="group that owns the socket (0660): who may connect (default stockade)")
    p.add_argument("--admin-group", help="members may act (default stockade-admin; root always may)")
    p.add_argument("--viewer-group", help="members may only read (default stockade)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--version", action="version", version=f"stockade-enforcer {__version__}")
    return p.parse_args(argv)


# C0 and C1 controls (ESC starts every terminal escape) but newline and tab: log lines quote
# container names, paths and compose errors, and a log is read in terminals.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)] if c not in (0x09, 0x0A)}


class InertFormatter(logging.Formatter):
    """Log lines with attacker-chosen text made inert (tracebacks keep their line breaks)."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).translate(_CONTROLS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(InertFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    for noisy in ("aiosqlite", "urllib3", "docker"):  # they log every statement/request at DEBUG
        logging.getLogger(noisy).setLevel(logging.INFO)
    try:
        settings = Settings.load(args.config, socket=args.socket, db=args.db, learn_seconds=args.learn_seconds,
                                 learn_stable_seconds=args.learn_stable_seconds,
                                 sensors=False if args.no_sensors else None, socket_group=args.socket_group,
                                 admin_group=args.admin_group, viewer_group=args.viewer_group)
    except ConfigError as e:
        print(f"stockade-enforcer: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(settings))
    except (SocketInUse, StoreError, ConfigError, PermissionError) as e:
        print(f"stockade-enforcer: {e}", file=sys.stderr)
        return 1
    return 0


async def _run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Daemon(settings).run(stop)


if __name__ == "__main__":
    sys.exit(main())
