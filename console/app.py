"""The Textual console (first screen: containers, live)."""

from __future__ import annotations

import asyncio
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from .client import EnforcerClient, Unreachable
from .escape import safe_text


class StockadeApp(App[None]):
    TITLE = "Stockade"
    BINDINGS = [("q", "quit", "Quit")]

    def __init__(self, socket_path: str, read_only: bool = False) -> None:
        super().__init__()
        self.client = EnforcerClient(socket_path)
        self.read_only = read_only
        self.rows: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting…", id="conn")
        table: DataTable[Any] = DataTable(id="containers", cursor_type="row")
        table.add_columns("NAME", "APP", "SERVICE", "IMAGE", "STATE", "CGROUP", "ADDRESSES")
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.connection_loop()

    @work(exclusive=True, group="connection")
    async def connection_loop(self) -> None:
        status = self.query_one("#conn", Static)
        while True:
            try:
                hello = await self.client.connect()
                status.update(safe_text(f"enforcer on {hello['host']} ({self.client.path})"))
                await self.client.subscribe(["inventory"])
                self.rows = {c["id"]: c for c in await self.client.call("containers")}
                self.redraw()
                async for event in self.client.events():
                    if event["event"] == "inventory":
                        c = event["data"]["container"]
                        if event["data"]["change"] == "removed":
                            self.rows.pop(c["id"], None)
                        else:
                            self.rows[c["id"]] = c
                        self.redraw()
                status.update(safe_text(f"lost the enforcer at {self.client.path}; reconnecting…"))
            except Unreachable as e:
                status.update(safe_text(f"{e}; retrying…"))
            await asyncio.sleep(1.0)

    def redraw(self) -> None:
        table = self.query_one("#containers", DataTable)
        table.clear()
        for c in sorted(self.rows.values(), key=lambda c: (c["app"], c["name"])):
            addrs = ",".join(n["ip"] for n in c["networks"] if n.get("ip"))
            table.add_row(*(safe_text(v) for v in (c["name"], c["app"], c["service"], c["image"], c["state"],
                                                    c["cgroup_id"], addrs)), key=c["id"])


def run_console(socket_path: str, read_only: bool = False) -> int:
    StockadeApp(socket_path, read_only=read_only).run()
    return 0
