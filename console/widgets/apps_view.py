"""Apps: app > service > container as a tree table, with the selected app's topology beside it.

Each node shows its mode, its state and a live anomaly count (incidents loaded in the
console for that app, service or container). The pane on the right lists the allowed
connections between services and, in red, traffic seen that is not linked.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from ..fleet import columns_for, fleet_rows, unqualify
from ..format import MODE_STYLE, as_dict, as_list, esc
from ..state import ConsoleState
from ..topology import Edge, app_edges, edges_of
from .containers_view import profile_str, status_str
from .live_table import Column, LiveTable, Row
from .view import Target, View

COLUMNS = [
    Column("name", "NAME", min_width=12, max_width=44),
    Column("kind", "KIND", min_width=9, max_width=9),
    Column("mode", "MODE", min_width=7, max_width=8),
    Column("state", "STATE", min_width=9, max_width=14),
    Column("profile", "PROFILE", min_width=8, max_width=18),
    Column("alerts", "ALERTS", min_width=6, max_width=7, align="right"),
    Column("links", "CONNECTS TO", min_width=11, max_width=200, flex=True),
]


def _count_style(n: int) -> str:
    return "bold bright_red" if n else "dim"


def _state_summary(containers: list[dict[str, Any]]) -> tuple[str, str]:
    if not containers:
        return "no containers", "dim"
    running = sum(1 for c in containers if c.get("state") == "running" and not c.get("frozen"))
    frozen = sum(1 for c in containers if c.get("frozen"))
    text = f"{running}/{len(containers)} running" + (f" {frozen} frozen" if frozen else "")
    style = "green" if running == len(containers) else "bold bright_cyan" if frozen else "yellow"
    return text, style


def _links_text(out: list[Edge], bad: list[Edge], service: str) -> tuple[str, str]:
    parts: list[str] = []
    for e in out:
        part = esc(e.dst, 64) + (f":{e.port}" if e.port else "")
        if part not in parts:  # tcp and udp to the same place read as one
            parts.append(part)
    text = "→ " + ", ".join(parts) if parts else ""
    if bad:
        unl = ", ".join(esc(e.src if e.dst == service else e.dst, 64) for e in bad)
        text = (text + "  " if text else "") + f"✗ unlinked: {unl}"
        return text, "bold bright_red"
    return text or "-", "" if parts else "dim"


class AppsView(View):
    VIEW_NAME = "apps"
    TITLE = "Apps"
    DOMAINS = frozenset({"apps", "containers", "alerts"})
    ACTIONS = frozenset({"block", "freeze", "unfreeze", "mode", "relearn", "forensics"})
    _state: ConsoleState | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield LiveTable(columns_for(COLUMNS, self.multi_host), sortable=False, empty_text="no apps on this host", id="apps-table")
            with VerticalScroll(id="topology-pane"):
                yield Static(id="topology")

    def repaint(self, state: ConsoleState) -> None:
        self._state = state
        table = self.table
        rows = fleet_rows(state, self._rows)
        if not rows and state.connection.state != "connected":
            table.set_empty_text("waiting for the enforcer…")
        else:
            table.set_empty_text("no apps on this host")
        table.set_rows(rows)
        self.stale = False
        self.show_topology()

    def _rows(self, state: ConsoleState) -> list[Row]:
        """One host's apps, services and containers, as tree rows."""
        apps = dict(state.apps)
        # Without the apps op (or before it answers), group the containers by their labels.
        for c in state.containers.values():
            app_name = str(c.get("app") or "?")
            if app_name in state.apps:
                continue
            app = apps.setdefault(app_name, {"name": app_name, "services": {}, "mode": c.get("mode")})
            app["services"].setdefault(str(c.get("service") or "?"), []).append(c["id"])
        counts_app: dict[str, int] = {}
        counts_svc: dict[tuple[str, str], int] = {}
        counts_ctr: dict[str, int] = {}
        for a in state.incidents.values():
            app_name, svc = str(a.get("app") or ""), str(a.get("service") or "")
            counts_app[app_name] = counts_app.get(app_name, 0) + 1
            counts_svc[(app_name, svc)] = counts_svc.get((app_name, svc), 0) + 1
            cid = str(a.get("container_id") or "")
            counts_ctr[cid] = counts_ctr.get(cid, 0) + 1
        rows: list[Row] = []
        for name in sorted(apps):
            app = apps[name]
            services = as_dict(app.get("services"))
            edges = app_edges(app)
            members = [state.containers[i] for ids in services.values() for i in ids if i in state.containers]
            st, st_style = _state_summary(members)
            mode = str(app.get("mode") or "")
            n_app = app["alerts"] if isinstance(app.get("alerts"), int) else counts_app.get(name, 0)
            learning = sum(1 for c in members if c.get("profile_state") == "learning")
            profile = f"{learning} learning" if learning else ("active" if members and all(
                c.get("profile_state") == "active" for c in members) else "-")
            unlinked = [e for e in edges if not e.allowed]
            links = f"{sum(1 for e in edges if e.allowed)} allowed" + (f", {len(unlinked)} unlinked" if unlinked else "")
            rows.append(Row(("app", name), (
                "▾ " + esc(name, 128), "lone" if app.get("lone") else "app", esc(mode, 10), st, profile,
                str(n_app), links if edges else "-"),
                ("bold", "dim", MODE_STYLE.get(mode, "dim"), st_style, "cyan" if learning else "dim",
                 _count_style(n_app), "bold bright_red" if unlinked else "dim"),
                search=f"{name}".lower()))
            lone = bool(app.get("lone")) and len(services) == 1
            svc_names = sorted(services)
            for si, svc in enumerate(svc_names):
                ids = [i for i in services[svc] if isinstance(i, str)]
                last_svc = si == len(svc_names) - 1
                branch, stem = ("└─ ", "   ") if last_svc else ("├─ ", "│  ")
                prefix = "  "
                if not lone:
                    ctrs = [state.containers[i] for i in ids if i in state.containers]
                    sst, sst_style = _state_summary(ctrs)
                    out, bad = edges_of(edges, svc)
                    ltext, lstyle = _links_text(out, bad, svc)
                    n_svc = counts_svc.get((name, svc), 0)
                    rows.append(Row(("svc", name, svc), (
                        prefix + branch + esc(svc, 128), "service", "", sst, "", str(n_svc), ltext),
                        ("bold", "dim", "", sst_style, "", _count_style(n_svc), lstyle),
                        search=f"{name} {svc}".lower()))
                    prefix = prefix + stem
                for ci, cid in enumerate(ids):
                    member = state.containers.get(cid)
                    if member is None:
                        continue
                    c = member
                    cbranch = "└─ " if ci == len(ids) - 1 else "├─ "
                    status, status_style = status_str(c)
                    profile, profile_style = profile_str(c, state.clock())
                    cmode = str(c.get("mode") or "")
                    n_ctr = state.container_alerts(c, counts_ctr)
                    ips = [str(n.get("ip")) for n in as_list(c.get("networks")) if isinstance(n, dict) and n.get("ip")]
                    rows.append(Row(("ctr", cid), (
                        prefix + cbranch + esc(c.get("name"), 128), "container", esc(cmode, 10), status, profile,
                        str(n_ctr), esc(" ".join(ips), 100)),
                        ("", "dim", MODE_STYLE.get(cmode, "dim"), status_style, profile_style, _count_style(n_ctr), "dim"),
                        search=f"{name} {svc} {c.get('name')} {c.get('image')}".lower()))
        return rows

    def _app_of(self, qualified: Any) -> str | None:
        host, key = unqualify(qualified)
        if isinstance(key, tuple) and key:
            if key[0] in ("app", "svc"):
                return str(key[1])
            if key[0] == "ctr":
                c = self._state.host_state(host).containers.get(key[1]) if self._state else None
                return c.get("app") if c else None
        return None

    def show_topology(self) -> None:
        fleet = getattr(self, "_state", None)
        pane = self.query_one("#topology", Static)
        name = self._app_of(self.table.cursor_key) if fleet else None
        if fleet is None or name is None:
            pane.update(Text("select an app to see its connections", style="dim italic"))
            return
        state = fleet.host_state(unqualify(self.table.cursor_key)[0])
        app = state.apps.get(name, {"name": name})
        edges = app_edges(app)
        out = Text(end="")
        out.append(esc(name, 128), style="bold")
        out.append(f"  mode {esc(app.get('mode') or '-', 10)}\n", style="dim")
        source = "profile" if app.get("edges") is not None else "compose file" if app.get("compose") else "none"
        out.append(f"Allowed connections ({source})\n", style="bold underline")
        allowed = [e for e in edges if e.allowed]
        if not allowed:
            out.append("  none declared or learned\n", style="dim")
        for e in allowed:
            out.append("  ")
            out.append(esc(e.label(), 200))
            if e.origin:
                out.append(f"  {esc(e.origin, 20)}", style="dim")
            out.append("\n")
        unlinked = [e for e in edges if not e.allowed]
        net = [a for a in state.incidents.values() if a.get("app") == name and a.get("kind") in ("network", "threat")]
        if unlinked or net:
            out.append("Unlinked traffic\n", style="bold bright_red underline")
            for e in unlinked:
                out.append("  ✗ ", style="bold bright_red")
                out.append(esc(e.label(), 200), style="bright_red")
                out.append("\n")
            for a in sorted(net, key=lambda a: a.get("id", 0), reverse=True)[:20]:
                out.append("  ✗ ", style="bold bright_red")
                out.append(esc(a.get("container"), 64), style="bright_red")
                out.append(": ")
                out.append(esc(a.get("summary"), 200), style="bright_red")
                count = a.get("count")
                if isinstance(count, int) and count > 1:
                    out.append(f" ×{count}", style="dim")
                out.append("\n")
        services = as_dict(app.get("services"))
        compose = app.get("compose") if isinstance(app.get("compose"), dict) else None
        if compose and compose.get("files"):
            out.append("compose: ", style="dim")
            out.append(esc(", ".join(str(f) for f in compose["files"]), 300), style="dim")
            out.append("\n")
        if compose and compose.get("error"):
            # Still watched, but learning without the compose file's seed: say why.
            out.append("compose file problem: ", style="bold yellow")
            out.append(esc(compose["error"], 500), style="yellow")
            out.append("\n")
        out.append(f"{len(services)} service(s)", style="dim")
        pane.update(out)

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        self.show_topology()

    def target(self, state: ConsoleState) -> Target:
        host, key = unqualify(self.table.cursor_key)
        if isinstance(key, tuple) and key and key[0] == "ctr":
            c = state.host_state(host).containers.get(key[1])
            return Target(container_id=key[1], app=c.get("app") if c else None, host=host)
        return Target(app=self._app_of(self.table.cursor_key), host=host)
