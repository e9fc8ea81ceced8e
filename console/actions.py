"""What each action key will do, said exactly, before it is done (no Textual here).

A plan names the op and its arguments (container ids, never row numbers), the words the
confirmation dialog shows, and how to report the result in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from .format import as_list, esc

MUTATING_ACTIONS = frozenset({"block", "unblock", "freeze", "unfreeze", "kill", "mode", "relearn", "sync",
                              "forensics", "allow", "prune"})
PREVIEW_SHOWN = 8  # incidents listed in the protect dialog; the rest are counted
PRUNE_SHOWN = 20  # entries listed in the prune dialog; the rest are counted

MODE_MEANING = {
    "learn": "record new behaviour into the profile; alert only on research rules (feeds, sensitive files, dangerous syscalls)",
    "alert": "anything outside the profile becomes an alert; nothing is stopped",
    "protect": "anything outside the profile becomes an alert AND is stopped: unexpected programs are killed "
               "before they run, disallowed connections are dropped",
}


@dataclass(slots=True)
class ActionPlan:
    op: str
    args: dict[str, Any]
    title: str
    lines: list[Text] = field(default_factory=list)
    confirm_label: str = "Confirm"
    subject: str = ""  # who it acts on, for the result line
    host: int | None = None  # which host of a fleet console it goes to (None: the only one)

    def request_text(self) -> Text:
        """The request exactly as it goes over the socket."""
        return Text(json.dumps({"op": self.op, **self.args}, ensure_ascii=True, default=str), style="dim", end="")


def _who(c: dict[str, Any]) -> Text:
    out = Text(end="")
    out.append(esc(c.get("name"), 128), style="bold")
    out.append(f" ({esc(str(c.get('id', ''))[:12])}", style="dim")
    if c.get("app"):
        out.append(", app ", style="dim")
        out.append(esc(c.get("app"), 128), style="dim")
    out.append(")", style="dim")
    return out


def _line(*parts: Any) -> Text:
    out = Text(end="")
    for p in parts:
        out.append_text(p) if isinstance(p, Text) else out.append(p)
    return out


def freeze_plan(c: dict[str, Any]) -> ActionPlan:
    return ActionPlan("freeze", {"target": c["id"]}, "Freeze container", [
        _line("Freeze ", _who(c), "."),
        Text("Every process in it is stopped by the cgroup freezer (state FROZEN) until you unfreeze it (u)."),
        Text("Nothing is killed; its connections stay open but nothing in it runs.", style="dim"),
    ], "Freeze", esc(c.get("name"), 128))


def unfreeze_plan(c: dict[str, Any]) -> ActionPlan:
    return ActionPlan("unfreeze", {"target": c["id"]}, "Unfreeze container", [
        _line("Thaw ", _who(c), "."),
        Text("Its processes continue from where they were stopped (state THAWED)."),
    ], "Unfreeze", esc(c.get("name"), 128))


def kill_plan(c: dict[str, Any], pid: int, what: str = "") -> ActionPlan:
    return ActionPlan("kill", {"target": c["id"], "pid": pid}, "Kill a process", [
        _line("Send SIGKILL to host pid ", Text(str(pid), style="bold"),
              *([" (", Text(esc(what, 200), style="bold"), ")"] if what else []), " in ", _who(c), "."),
        Text("The enforcer first checks that the pid belongs to that container, and refuses otherwise."),
        Text("The rest of the container keeps running.", style="dim"),
    ], "Kill", f"pid {pid} in {esc(c.get('name'), 128)}")


def parse_peer(text: str) -> tuple[str, int | None]:
    """`10.0.0.5:443` -> ("10.0.0.5", 443); `web` -> ("web", None); IPv6 in brackets keeps its colons."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit():
            return host, int(port)
    return text, None


def block_plan(c: dict[str, Any], peer_text: str) -> ActionPlan:
    peer, port = parse_peer(peer_text)
    args: dict[str, Any] = {"target": c["id"], "peer": peer}
    if port:
        args["port"] = port
    return ActionPlan("block", args, "Block a peer", [
        _line("Drop all traffic between ", _who(c), " and ", Text(esc(peer, 200), style="bold"),
              *([" on port ", Text(str(port), style="bold")] if port else [" on every port"]), "."),
        Text("nftables rules in the enforcer's own table, both directions; they stay until you unblock."),
        Text("Established connections to that peer stop getting packets.", style="dim"),
    ], "Block", f"{esc(c.get('name'), 128)} ↔ {esc(peer_text, 200)}")


def unblock_plan(c: dict[str, Any], block: dict[str, Any]) -> ActionPlan:
    args: dict[str, Any] = {"target": c["id"], "peer": block.get("peer")}
    if isinstance(block.get("port"), int):
        args["port"] = block["port"]
    port = f" on port {block['port']}" if isinstance(block.get("port"), int) else ""
    return ActionPlan("unblock", args, "Unblock a peer", [
        _line("Remove the block #", esc(block.get("id"), 12), " between ", _who(c), " and ",
              Text(esc(block.get("peer"), 200), style="bold"), port, "."),
        Text("Traffic between them is allowed again (if the profile allows it)."),
    ], "Unblock", f"{esc(c.get('name'), 128)} ↔ {esc(block.get('peer'), 200)}")


def mode_plan(target: str, scope: str, mode: str, current: str = "", label: str = "",
              preview: dict[str, Any] | str | None = None, gaps: list[str] | None = None) -> ActionPlan:
    """`preview`: for protect, the enforcer's dry run (what protect would have stopped over
    its window), or the one-line reason it could not be had. `gaps`: why the profiles it
    would enforce may be incomplete (warned about before protect)."""
    where = f"app {esc(target, 128)} (every container of the app without its own override)" if scope == "app" \
        else f"container {esc(label or target, 128)} only"
    lines = [
        _line("Set the mode of ", Text(where, style="bold"), " from ", Text(esc(current or "?", 10), style="bold"),
              " to ", Text(mode, style="bold"), "."),
        Text(f"{mode}: {MODE_MEANING.get(mode, '')}"),
    ]
    if mode == "protect" and gaps:
        lines.append(Text(f"Warning: {len(gaps)} reason(s) the learned profile may be incomplete "
                          "(protect may stop what is normal):", style="bold yellow"))
        for gap in gaps[:4]:
            lines.append(Text(f"  - {esc(gap, 160)}", style="yellow"))
    if isinstance(preview, str):
        lines.append(Text(f"what protect would stop: unknown ({esc(preview, 200)})", style="yellow"))
    elif preview is not None:
        stops = as_list(preview.get("would_stop"))
        hours = float(preview.get("window") or 0) / 3600
        if not stops:
            lines.append(Text(f"In the last {hours:g} h nothing seen would have been stopped.", style="green"))
        else:
            lines.append(Text(f"In the last {hours:g} h protect would have stopped {len(stops)} incident(s):",
                              style="bold yellow"))
            for a in stops[:PREVIEW_SHOWN]:
                lines.append(_line(f"  #{esc(a.get('id'), 12)} ", Text(esc(a.get("would"), 10), style="bold"), " ",
                                   Text(esc(a.get("container"), 60), style="dim"), " ", esc(a.get("summary"), 120)))
            if len(stops) > PREVIEW_SHOWN:
                lines.append(Text(f"  … and {len(stops) - PREVIEW_SHOWN} more (stockade mode {esc(target, 64)} "
                                  "protect --preview)", style="dim"))
    return ActionPlan("mode", {"target": target, "mode": mode, "scope": scope}, "Change mode", lines,
                      f"Set {mode}", esc(label or target, 128))


def allow_plan(alert: dict[str, Any], dry_run: dict[str, Any]) -> ActionPlan:
    """Accept an incident into its profile; `dry_run` is the enforcer's answer saying exactly
    what will be allowed."""
    profile = f"{esc(dry_run.get('app'), 128)}/{esc(dry_run.get('service'), 128)}"
    return ActionPlan("allow", {"alert_id": alert.get("id")}, "Allow into the profile", [
        _line("Incident ", Text(f"#{esc(alert.get('id'), 12)}", style="bold"), ": ", esc(alert.get("summary"), 200)),
        _line("The profile of ", Text(profile, style="bold"), f" (#{esc(dry_run.get('profile'), 12)}) will allow: ",
              Text(esc(dry_run.get("allowed"), 300), style="bold")),
        Text("The incident is marked resolved and the same thing no longer alerts (or is stopped in protect)."),
        Text("Recorded in the audit log with your name; the entry survives a relearn.", style="dim"),
    ], "Allow", f"incident #{esc(alert.get('id'), 12)}")


def prune_plan(c: dict[str, Any], dry_run: dict[str, Any]) -> ActionPlan:
    """Remove the seeded, never used entries of a container's profile; `dry_run` is the
    enforcer's answer listing exactly what will be removed."""
    rows = [r for r in as_list(dry_run.get("removed")) if isinstance(r, dict)]
    lines = [
        _line("The profile of ", _who(c), f" (#{esc(dry_run.get('profile'), 12)}) loses ",
              Text(f"{len(rows)} seeded entr{'y' if len(rows) == 1 else 'ies'}", style="bold"),
              " never used while it learned:"),
    ]
    for r in rows[:PRUNE_SHOWN]:
        lines.append(_line("  ", Text(esc(r.get("kind"), 10).ljust(9), style="dim"), Text(esc(r.get("what"), 200),
                                                                                        style="bold")))
    if len(rows) > PRUNE_SHOWN:
        lines.append(Text(f"  … and {len(rows) - PRUNE_SHOWN} more (stockade profile prune --dry-run lists all)",
                          style="dim"))
    lines += [
        Text("Afterwards each of them is an incident in alert mode, and stopped in protect mode."),
        Text("Recorded in the audit log with your name; the profile remembers them as pruned, so seeding "
             "(a restart, a relearn) does not bring them back.", style="dim"),
    ]
    return ActionPlan("profile.prune", {"target": c["id"]}, "Prune unused seeds", lines, "Prune",
                      esc(c.get("name"), 128))


def relearn_plan(target: str, what: str) -> ActionPlan:
    return ActionPlan("relearn", {"target": target}, "Relearn", [
        _line("Reset the profile(s) of ", Text(esc(what, 200), style="bold"), " to learning."),
        Text("What was learned so far is discarded; the profile learns again for its learning period, "
             "and until then only research rules (feeds, sensitive files, dangerous syscalls) alert."),
    ], "Relearn", esc(what, 200))


def sync_plan(feeds: list[dict[str, Any]], only: str | None = None) -> ActionPlan:
    enabled = [f for f in feeds if f.get("enabled", True)]
    names = ", ".join(esc(f.get("name"), 64) for f in enabled) or "none known"
    if only:
        return ActionPlan("feeds.sync", {"name": only}, "Sync a feed", [
            _line("Download feed ", Text(esc(only, 64), style="bold"), " from its URL now and reload its entries."),
            Text("Entries that fail to parse are counted as rejected; private ranges are dropped unless local."),
        ], "Sync", esc(only, 64))
    return ActionPlan("feeds.sync", {}, "Sync threat feeds", [
        Text(f"Download every enabled feed from its URL now and reload its entries ({len(enabled)}: {names})."),
        Text("Entries that fail to parse are counted as rejected; private ranges are dropped unless local."),
    ], "Sync all", "feeds")


def forensics_plan(c: dict[str, Any]) -> ActionPlan:
    return ActionPlan("forensics", {"target": c["id"]}, "Forensics bundle", [
        _line("Freeze ", _who(c), " first, then write one forensics bundle of it (processes, open files, "
              "connections, changed files, its profile and incidents) into the enforcer's forensics directory."),
        Text("The container stays frozen afterwards: press u to thaw it."),
    ], "Write bundle", esc(c.get("name"), 128))


def describe_result(plan: ActionPlan, result: Any) -> str:
    """One line for the notification after an action succeeded."""
    if plan.op in ("freeze", "unfreeze") and isinstance(result, dict):
        return f"{plan.subject}: {esc(result.get('state', 'done'), 20)}"
    if plan.op == "kill" and isinstance(result, dict):
        return f"killed pid {esc(result.get('pid'), 12)} (signal {esc(result.get('signal'), 12)})"
    if plan.op == "block" and isinstance(result, dict):
        return f"blocked {plan.subject} (block #{esc(result.get('id'), 12)})"
    if plan.op == "unblock" and isinstance(result, dict):
        return f"unblocked {plan.subject} ({esc(result.get('removed'), 12)} removed)"
    if plan.op == "mode" and isinstance(result, dict):
        return f"{esc(result.get('scope'), 12)} {esc(result.get('target'), 128)} is now in {esc(result.get('mode'), 12)} mode"
    if plan.op == "relearn" and isinstance(result, dict):
        profiles = as_list(result.get("profiles"))
        return f"{plan.subject}: {len(profiles)} profile(s) back to learning"
    if plan.op == "forensics" and isinstance(result, dict):
        size = result.get("size")
        return (f"bundle written: {esc(result.get('path'), 300)} ({esc(size, 20)} bytes, "
                f"sha256 {esc(str(result.get('sha256', ''))[:16], 16)}…)")
    if plan.op == "allow" and isinstance(result, dict):
        return f"{plan.subject}: the profile now allows {esc(result.get('allowed'), 200)}"
    if plan.op == "profile.prune" and isinstance(result, dict):
        return f"{plan.subject}: {len(as_list(result.get('removed')))} seeded, never used entries pruned"
    if plan.op == "feeds.sync":
        n = len(result) if isinstance(result, list) else 1
        return f"synced {n} feed(s)"
    return f"{plan.op}: done"
