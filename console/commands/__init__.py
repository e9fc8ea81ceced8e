"""The scriptable `stockade` commands, one module per area. Each module has
`register(subparsers)`; a command's `run(args, client)` coroutine returns the exit status."""

from __future__ import annotations

from . import enforce, feeds, inventory, outputs, profiles

MODULES = [inventory, feeds, profiles, enforce, outputs]
