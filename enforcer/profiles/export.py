"""Profiles as code: a profile as a YAML document, and back.

One document per (app, service, image digest), every entry with its origin (seed, learned,
allowed by whom, imported), in a stable order (kinds in a fixed order, entries by key,
fields in a fixed order), so a profile learned on staging diffs well in git, is reviewed,
and is imported on production hosts; export -> import -> export gives the same bytes.
Timestamps are left out on purpose: they differ per host and would make every diff noisy.

Parsing checks everything before anything is applied: a file that does not validate is
refused with the line and the reason, and nothing of it is applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

from .model import (ANY, PROFILE_KINDS, Entry, Profile, file_entry, listener_entry, peer_entry,
                    process_entry, syscall_entry)

FORMAT = "stockade-profile/v1"
ORIGINS = ("seed", "learned", "allowed", "imported")
MAX_ENTRIES = 100_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Field order per kind: the order they are written in (then any other field, by name).
_FIELDS: dict[str, tuple[str, ...]] = {
    "process": ("path", "sha256", "binary"),
    "listener": ("proto", "port"),
    "peer": ("direction", "proto", "peer", "port"),
    "file": ("prefix", "path"),
    "syscall": ("name", "nr"),
}
_PROVENANCE = ("by", "alert_id", "carried_from")  # of an allowed entry (carried: from which digest)


class ProfileFileError(ValueError):
    """A profile file that cannot be imported: `line` (1-based, 0 if unknown) and why."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.line = line
        self.reason = reason


@dataclass(slots=True)
class ProfileDocument:
    app: str
    service: str
    image_digest: str
    entries: list[Entry] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    pruned: list[tuple[str, str]] = field(default_factory=list)  # (kind, key) of seeds pruned

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.app, self.service, self.image_digest)


# -- export -----------------------------------------------------------------------------------
def entry_document(e: Entry) -> dict[str, Any]:
    d = e.data
    out: dict[str, Any] = {f: d[f] for f in _FIELDS[e.kind] if f in d}
    for name in sorted(set(d) - set(_FIELDS[e.kind]) - set(_PROVENANCE)):
        out[name] = d[name]
    out["origin"] = e.source
    if e.never_used:
        out["never_used"] = True  # seeded, and not seen in use while the profile learned
    for name in _PROVENANCE:
        if name in d:
            out[name] = d[name]
    return out


def document(p: Profile) -> dict[str, Any]:
    doc: dict[str, Any] = {"format": FORMAT, "app": p.app, "service": p.service, "image_digest": p.image_digest}
    if p.gaps:
        doc["gaps"] = list(p.gaps)
    if p.pruned:  # seeds a person pruned: the importing host does not seed them again either
        doc["pruned"] = {kind: sorted(k for kd, k in p.pruned if kd == kind)
                         for kind in PROFILE_KINDS if any(kd == kind for kd, _ in p.pruned)}
    doc["entries"] = {kind: [entry_document(e) for _, e in sorted(p.entries[kind].items())]
                      for kind in PROFILE_KINDS}
    return doc


def dump(profiles: Iterable[Profile]) -> str:
    docs = [document(p) for p in sorted(profiles, key=lambda p: p.key)]
    header = "# Stockade profiles: one document per app, service and image digest (stockade profile import)\n"
    return header + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, allow_unicode=False,
                                       explicit_start=True, width=200)


# -- import -----------------------------------------------------------------------------------
class _LineLoader(yaml.SafeLoader):
    """Safe YAML that remembers the line of every mapping (for one-line errors)."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def _line(obj: Any) -> int:
    return obj.get("__line__", 0) if isinstance(obj, dict) else 0


def _text(obj: dict[str, Any], name: str, limit: int = 4096, required: bool = True) -> str:
    value = obj.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise ProfileFileError(_line(obj), f"{name} must be a string of at most {limit} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ProfileFileError(_line(obj), f"{name} has control characters")
    return value


def _port(obj: dict[str, Any], allow_any: bool) -> int | str:
    value = obj.get("port")
    if allow_any and value == ANY:
        return ANY
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ProfileFileError(_line(obj), "port must be a number from 0 to 65535" + (" or \"*\"" if allow_any else ""))
    return value


def _choice(obj: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = obj.get(name)
    if value not in allowed:
        raise ProfileFileError(_line(obj), f"{name} must be one of {', '.join(allowed)}")
    return str(value)


def _entry(kind: str, obj: Any) -> Entry:
    if not isinstance(obj, dict):
        raise ProfileFileError(0, f"a {kind} entry must be a mapping")
    origin = _choice(obj, "origin", ORIGINS)
    if kind == "process":
        path = _text(obj, "path")
        if not path.startswith("/"):
            raise ProfileFileError(_line(obj), "path must be absolute")
        sha = obj.get("sha256", "")
        if not isinstance(sha, str) or (sha and not _SHA256.match(sha)):
            raise ProfileFileError(_line(obj), "sha256 must be 64 lowercase hex digits (or empty: not pinned)")
        e = process_entry(path, sha, source=origin, binary=_text(obj, "binary", required=False))
    elif kind == "listener":
        e = listener_entry(_choice(obj, "proto", ("tcp", "udp")), int(_port(obj, False)), source=origin)
    elif kind == "peer":
        e = peer_entry(_choice(obj, "direction", ("in", "out")), _choice(obj, "proto", ("tcp", "udp")),
                       _text(obj, "peer", 256), _port(obj, True), source=origin)
    elif kind == "file":
        path = _text(obj, "prefix", required=False) or _text(obj, "path")
        if not path.startswith("/"):
            raise ProfileFileError(_line(obj), "a written path must be absolute")
        e = file_entry(path, source=origin)
    else:
        nr = obj.get("nr", -1)
        if not isinstance(nr, int) or isinstance(nr, bool) or not -1 <= nr < 1024:
            raise ProfileFileError(_line(obj), "nr must be a syscall number (or -1)")
        e = syscall_entry(nr, _text(obj, "name", 64, required=nr < 0), source=origin)
    never_used = obj.get("never_used", False)
    if not isinstance(never_used, bool) or (never_used and origin != "seed"):
        raise ProfileFileError(_line(obj), "never_used must be true or false, and only a seed can be never used")
    e.used = not never_used
    known = set(_FIELDS[kind]) | {"origin", "never_used", "__line__", *_PROVENANCE}
    for name in sorted(set(obj) - known):  # fields a newer exporter adds: scalars only
        value = obj[name]
        if not isinstance(value, (str, int, bool)) or (isinstance(value, str) and len(value) > 4096):
            raise ProfileFileError(_line(obj), f"field {name!r} must be a short scalar")
        e.data[name] = value
    if origin == "allowed":
        e.data["by"] = _text(obj, "by", 256)
        alert_id = obj.get("alert_id")
        if alert_id is not None:
            if not isinstance(alert_id, int) or isinstance(alert_id, bool) or alert_id < 1:
                raise ProfileFileError(_line(obj), "alert_id must be a positive number")
            e.data["alert_id"] = alert_id
        carried = _text(obj, "carried_from", 256, required=False)
        if carried:
            e.data["carried_from"] = carried
    return e


def parse(text: str) -> list[ProfileDocument]:
    """Every document of a profile file, validated; ProfileFileError on the first problem."""
    try:
        raw = [d for d in yaml.load_all(text, Loader=_LineLoader) if d is not None]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ProfileFileError(mark.line + 1 if mark else 0, f"not YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise ProfileFileError(0, f"not YAML: {str(e).splitlines()[0]}") from None
    if not raw:
        raise ProfileFileError(0, "no profile in the file")
    out: list[ProfileDocument] = []
    seen: set[tuple[str, str, str]] = set()
    total = 0
    for doc in raw:
        if not isinstance(doc, dict):
            raise ProfileFileError(0, "each document must be a mapping")
        if doc.get("format") != FORMAT:
            raise ProfileFileError(_line(doc), f"format must be {FORMAT}")
        pd = ProfileDocument(_text(doc, "app", 256), _text(doc, "service", 256), _text(doc, "image_digest", 256))
        if pd.key in seen:
            raise ProfileFileError(_line(doc), f"{pd.app}/{pd.service} {pd.image_digest[:19]} appears twice")
        seen.add(pd.key)
        gaps = doc.get("gaps", [])
        if not isinstance(gaps, list) or not all(isinstance(g, str) and len(g) <= 500 for g in gaps):
            raise ProfileFileError(_line(doc), "gaps must be a list of short strings")
        pd.gaps = list(gaps)
        pruned = doc.get("pruned", {})
        if not isinstance(pruned, dict):
            raise ProfileFileError(_line(doc), "pruned must be a mapping of kind to a list of keys")
        for kind, keys in pruned.items():
            if kind == "__line__":
                continue
            if kind not in PROFILE_KINDS or not isinstance(keys, list) or not all(
                    isinstance(k, str) and 0 < len(k) <= 4096 and k.isprintable() for k in keys):
                raise ProfileFileError(_line(pruned), f"pruned {str(kind)[:32]!r}: a kind and a list of entry keys")
            pd.pruned += [(kind, k) for k in keys]
        entries = doc.get("entries")
        if not isinstance(entries, dict):
            raise ProfileFileError(_line(doc), "entries must be a mapping of kind to a list")
        for kind, items in entries.items():
            if kind == "__line__":
                continue
            if kind not in PROFILE_KINDS:
                raise ProfileFileError(_line(entries), f"unknown entry kind {str(kind)[:32]!r}")
            if not isinstance(items, list):
                raise ProfileFileError(_line(entries), f"{kind} must be a list")
            for obj in items:
                pd.entries.append(_entry(kind, obj))
            total += len(items)
            if total > MAX_ENTRIES:
                raise ProfileFileError(_line(entries), f"more than {MAX_ENTRIES} entries")
        out.append(pd)
    return out


# -- diff -------------------------------------------------------------------------------------
def diff(old: Iterable[Entry], new: Iterable[Entry]) -> dict[str, list[dict[str, Any]]]:
    """What `new` adds to and removes from `old`, by entry (kind and key), in stable order."""
    a = {(e.kind, e.key): e for e in old}
    b = {(e.kind, e.key): e for e in new}
    order = {k: i for i, k in enumerate(PROFILE_KINDS)}

    def rows(keys: set[tuple[str, str]], side: dict[tuple[str, str], Entry]) -> list[dict[str, Any]]:
        return [{"kind": k, "key": key, **entry_document(side[(k, key)])}
                for k, key in sorted(keys, key=lambda t: (order[t[0]], t[1]))]

    return {"added": rows(set(b) - set(a), b), "removed": rows(set(a) - set(b), a)}
