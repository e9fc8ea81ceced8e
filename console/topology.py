"""An app's topology for the apps view: which services may talk to which (no Textual here).

The profiles layer adds `edges` to each app in the `apps` op (allowed service-to-service
connections, and traffic seen that is not allowed). Its exact shape is read leniently:
a list of objects (`from`/`to` or `src`/`dst`, `port`, `proto`, `source`, `allowed` or
`unlinked`), a list of pairs, or a mapping of service -> targets. Without it, the compose
file's `links` and `depends_on` give the declared topology.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .format import as_dict, as_list

SRC_KEYS = ("from", "src", "client", "source_service", "service")
DST_KEYS = ("to", "dst", "server", "target_service", "target", "peer")
ORIGIN_WORDS = {"seed", "learned", "compose", "link", "links", "depends_on", "network", "observed"}


@dataclass(frozen=True, slots=True)
class Edge:
    src: str
    dst: str
    port: int | None = None
    proto: str = ""
    origin: str = ""  # where the edge comes from: link, depends_on, seed, learned...
    allowed: bool = True  # False: traffic seen that the profile does not allow (unlinked)

    def label(self) -> str:
        if self.port:
            where = f" {self.proto or 'tcp'}/{self.port}"
        else:
            where = f" {self.proto}" if self.proto else ""
        return f"{self.src} → {self.dst}{where}"


def _first(d: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = d.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _port(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _edge_from_dict(e: dict[str, Any]) -> Edge | None:
    src = _first(e, SRC_KEYS)
    dst = _first(e, DST_KEYS)
    if src is None and isinstance(e.get("source"), str) and e["source"] not in ORIGIN_WORDS:
        src = e["source"]
    if not src or not dst:
        return None
    origin = e.get("origin") or e.get("via") or e.get("kind") or ""
    if not origin and isinstance(e.get("source"), str) and e["source"] in ORIGIN_WORDS:
        origin = e["source"]
    allowed = not (e.get("unlinked") is True or e.get("allowed") is False or e.get("linked") is False)
    return Edge(src, dst, _port(e.get("port")), str(e.get("proto") or ""), str(origin), allowed)


def app_edges(app: dict[str, Any]) -> list[Edge]:
    """Every edge of an app, from the enforcer's `edges` or else from its compose file."""
    raw = app.get("edges")
    edges: list[Edge] = []
    if isinstance(raw, list):
        for e in raw:
            if isinstance(e, dict):
                edge = _edge_from_dict(e)
                if edge:
                    edges.append(edge)
            elif isinstance(e, (list, tuple)) and len(e) >= 2 and all(isinstance(x, str) for x in e[:2]):
                edges.append(Edge(e[0], e[1], _port(e[2]) if len(e) > 2 else None))
    elif isinstance(raw, dict):
        for src, targets in raw.items():
            for dst in targets if isinstance(targets, list) else [targets]:
                if isinstance(dst, str):
                    edges.append(Edge(str(src), dst))
                elif isinstance(dst, dict):
                    edge = _edge_from_dict({"from": src, **dst})
                    if edge:
                        edges.append(edge)
    if raw is None:
        edges = compose_edges(app.get("compose"))
    seen: set[Edge] = set()
    unique = []
    for edge in edges:
        if edge not in seen:
            seen.add(edge)
            unique.append(edge)
    return unique


def compose_edges(compose: Any) -> list[Edge]:
    if not isinstance(compose, dict):
        return []
    out = []
    services = as_dict(compose.get("services"))
    for name, decl in sorted(services.items()):
        if not isinstance(decl, dict):
            continue
        for target in as_list(decl.get("links")):
            if isinstance(target, str):
                out.append(Edge(str(name), target.split(":", 1)[0], origin="link"))
        for target in as_list(decl.get("depends_on")):
            if isinstance(target, str):
                out.append(Edge(str(name), target, origin="depends_on"))
    return out


def edges_of(edges: list[Edge], service: str) -> tuple[list[Edge], list[Edge]]:
    """(outgoing allowed edges, unlinked edges touching the service)."""
    out = [e for e in edges if e.allowed and e.src == service]
    bad = [e for e in edges if not e.allowed and service in (e.src, e.dst)]
    return out, bad
