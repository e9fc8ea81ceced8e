"""Accepting an incident into its profile (`stockade allow ALERT_ID`): the profile entry
that makes the same thing normal, built from what the alert recorded.

Only what the profile decides can be allowed: an unexpected program (with its sha256), a
peer and port, a listener, a written path prefix, a syscall. Research rules (threat-feed
hits, sensitive files, dangerous syscalls) fire in every mode whatever the profile says,
and a burst folds many subjects; those are refused with the reason.
"""

from __future__ import annotations

import time
from typing import Any

from ..models import Alert
from .model import Entry, file_entry, listener_entry, peer_entry, process_entry, syscall_entry

ALLOWED = "allowed"


class NotAllowable(Exception):
    """The incident is not about something a profile holds (the message says why)."""


def entries_for(alert: Alert, by: str, now: float | None = None) -> list[Entry]:
    """The entries that make the incident normal: one, or for an incident that folded one
    program run's new syscalls, one per syscall it lists."""
    now = now or time.time()
    d: dict[str, Any] = alert.detail or {}
    if alert.kind == "syscall" and alert.rule == "profile" and isinstance(d.get("syscalls"), list):
        out = []
        for s in d["syscalls"]:
            if isinstance(s, dict):
                e = syscall_entry(int(s.get("nr", -1)), str(s.get("name") or ""), source=ALLOWED, now=now)
                e.data.update({"by": by, "alert_id": alert.id})
                out.append(e)
        if out:
            return out
    return [entry_for(alert, by, now)]


def entry_for(alert: Alert, by: str, now: float | None = None) -> Entry:
    now = now or time.time()
    d: dict[str, Any] = alert.detail or {}
    if alert.subject == "burst":
        raise NotAllowable(f"incident {alert.id} is a burst of {alert.kind} alerts: allow its subjects one by one")
    if alert.rule != "profile":
        what = {"research:sensitive-file": "a sensitive-file rule", "research:dangerous-syscall":
                "a dangerous-syscall rule"}.get(alert.rule, "a threat-feed hit" if alert.rule.startswith("feed:")
                                                   else f"rule {alert.rule!r}")
        raise NotAllowable(f"incident {alert.id} is {what}, which fires in every mode: a profile cannot allow it")
    entry: Entry
    if alert.kind == "process":
        if not d.get("sha256"):
            raise NotAllowable(f"incident {alert.id}: the program was not hashed, so there is nothing to pin")
        exe = str(d.get("path") or "") if d.get("multicall") else ""  # a multi-call binary: keyed by applet
        entry = process_entry(alert.subject, str(d["sha256"]), source=ALLOWED, now=now,
                              binary=str(d.get("binary") or ""), exe=exe)
    elif alert.kind == "network":
        proto = str(d.get("proto") or "tcp")
        if d.get("direction") == "listen":
            entry = listener_entry(proto, int(d.get("local_port") or 0), source=ALLOWED, now=now)
        else:
            direction = str(d.get("direction") or "out")
            port = d.get("local_port") if direction == "in" else d.get("remote_port")
            entry = peer_entry(direction, proto, str(d.get("peer") or ""), int(port or 0), source=ALLOWED, now=now)
    elif alert.kind == "file":
        prefix = str(d.get("prefix") or "")
        if not prefix:
            raise NotAllowable(f"incident {alert.id} names no written path to allow")
        entry = file_entry(prefix, source=ALLOWED, now=now)
    elif alert.kind == "syscall":
        entry = syscall_entry(int(d.get("nr", -1)), str(d.get("name") or ""), source=ALLOWED, now=now)
    else:
        raise NotAllowable(f"incident {alert.id} is a {alert.kind} alert: a profile cannot allow it")
    entry.data.update({"by": by, "alert_id": alert.id})
    return entry


def describe_all(entries: list[Entry]) -> str:
    if len(entries) > 1 and all(e.kind == "syscall" for e in entries):
        return "use the syscalls " + ", ".join(e.data.get("name") or f"#{e.data.get('nr')}" for e in entries)
    return "; ".join(describe(e) for e in entries)


def describe(entry: Entry) -> str:
    """One line: exactly what the entry allows (the confirmation the console and CLI show)."""
    d = entry.data
    if entry.kind == "process":
        return f"run {d['path']} with sha256 {str(d['sha256'])[:16]}"
    if entry.kind == "listener":
        return f"listen on {d['proto']}/{d['port']}"
    if entry.kind == "peer":
        way = "connect to" if d["direction"] == "out" else "accept from"
        return f"{way} {d['peer']} on {d['proto']}/{d['port']}"
    if entry.kind == "file":
        return f"write under {d['prefix']}" if "prefix" in d else f"write {d['path']}"
    return f"use the syscall {d.get('name') or '#' + str(d.get('nr'))}"
