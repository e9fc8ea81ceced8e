"""Ops of the alert outputs (docs/protocol.md, "Alert outputs"; docs/outputs.md): argument
checks and one-line errors; the work is the output manager's."""

from __future__ import annotations

import re
import time
from typing import Any

from ..models import OUTPUT_FORMATS, SEVERITIES, Alert, iso_time
from ..outputs import OutputManager, targets
from ..server import OpError, Request, Server
from ..store.outputs import OutputConfig
from . import args

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_HEADERS = 32


def register(server: Server, manager: OutputManager, host: str) -> None:
    ops = OutputOps(manager, host)
    server.register("outputs", ops.list)
    server.register("outputs.add", ops.add, mutates=True, target_arg="name")
    server.register("outputs.remove", ops.remove, mutates=True, target_arg="name")
    server.register("outputs.test", ops.test, mutates=True, target_arg="name")


class OutputOps:
    def __init__(self, manager: OutputManager, host: str) -> None:
        self.manager = manager
        self.host = host

    async def list(self, req: Request) -> list[dict[str, Any]]:
        return [o.describe() for _, o in sorted(self.manager.outputs.items())]

    async def add(self, req: Request) -> dict[str, Any]:
        a = req.args
        name = a.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise args.bad("name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        fmt = args.choice(a, "format", OUTPUT_FORMATS)
        min_severity = args.choice(a, "min_severity", SEVERITIES, required=False) or "low"
        headers = a.get("headers") or {}
        if not isinstance(headers, dict) or len(headers) > MAX_HEADERS or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) < 256 and len(v) < 4096
                for k, v in headers.items()):
            raise args.bad(f"headers must be an object of at most {MAX_HEADERS} name: value strings")
        deadline = a.get("deadline")
        try:
            targets.parse(a.get("url"), headers, deadline)
        except ValueError as e:
            raise args.bad(str(e)) from None
        if name in self.manager.outputs:
            raise OpError(f"an output named {name} exists; remove it first", args.CONFLICT)
        config = OutputConfig(name=name, url=a["url"], format=fmt, min_severity=min_severity, headers=dict(headers),
                              created=time.time(), deadline=None if deadline is None else float(deadline))
        out = await self.manager.add(config)
        return out.describe()

    async def remove(self, req: Request) -> dict[str, Any]:
        name = self._name(req)
        await self.manager.remove(name)
        return {"removed": name}

    async def test(self, req: Request) -> dict[str, Any]:
        name = self._name(req)
        now = time.time()
        stamp = iso_time(now)
        alert = Alert(id=0, time=stamp, host=self.host, app="stockade-test", service="test", container="stockade-test",
                      container_id="0" * 64, image="stockade/test", kind="process", severity="low",
                      summary=f"stockade test alert for output {name}",
                      detail={"path": "/bin/true", "pid": 0, "ppid": 0, "argv": ["true"], "test": True},
                      action="alerted", count=1, first_seen=stamp, last_seen=stamp, subject="test",
                      rule="test").to_dict()
        result = await self.manager.test(name, alert)
        if not result["delivered"]:
            raise OpError(f"output {name}: {result['error']}", args.FAILED)
        return result

    def _name(self, req: Request) -> str:
        name = req.args.get("name")
        if not isinstance(name, str) or not name:
            raise args.bad("name an output")
        if name not in self.manager.outputs:
            raise OpError(f"no output named {name[:64]!r}", args.NOT_FOUND)
        return name
