"""The catalogue of well-known public feeds (enforcer/data/feeds.toml) and the `[feeds.NAME]`
tables of the config, merged into the feeds the registry should hold.

Catalogue feeds ship disabled; a config table enables or changes one, or defines a feed of
its own. Publishers' polite intervals are floors: a feed on a catalogue publisher's host
is never synced more often than that publisher allows, whoever added it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config import ConfigError
from .models import FORMATS
from .parsers import check_columns

CATALOGUE_FILE = Path(__file__).resolve().parent.parent / "data" / "feeds.toml"
MIN_INTERVAL = 10.0  # no feed, not even a local one, is fetched more often than this
DEFAULT_INTERVAL = 3600.0
ABUSECH_SUFFIX = "abuse.ch"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_CONFIG_KEYS = {"url", "format", "enabled", "local", "interval", "columns", "max_bytes", "auth_key", "description"}


@dataclass(slots=True)
class FeedSpec:
    """What the catalogue and the config say a feed should be."""

    name: str
    url: str
    format: str
    interval: float = DEFAULT_INTERVAL
    min_interval: float = MIN_INTERVAL
    columns: dict[str, Any] = field(default_factory=dict)
    auth: str = ""  # "abusech": send the abuse.ch Auth-Key
    auth_key: str = ""  # per-feed key from the config (else Settings.abusech_auth_key)
    description: str = ""
    enabled: bool = False
    local: bool = False
    max_bytes: int = 0
    source: str = "catalogue"  # catalogue | config
    configured: set[str] = field(default_factory=set)  # keys the config table set (they win)


def name_problem(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        return "a feed name is 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
    return ""


def url_problem(url: Any) -> str:
    if not isinstance(url, str) or len(url) > 2048:
        return "the URL must be text of at most 2048 characters"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the URL cannot be parsed"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL must be http:// or https:// with a host"
    return ""


def format_problem(fmt: Any) -> str:
    if fmt not in FORMATS:
        return f"unknown format {fmt!r} (use {', '.join(FORMATS)})"
    return ""


def load_catalogue(path: Path = CATALOGUE_FILE) -> dict[str, FeedSpec]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read the feed catalogue {path}: {e}") from None
    out: dict[str, FeedSpec] = {}
    for name, table in data.items():
        out[name] = FeedSpec(
            name=name, url=table["url"], format=table["format"],
            interval=float(table.get("interval", DEFAULT_INTERVAL)),
            min_interval=float(table.get("min_interval", MIN_INTERVAL)),
            columns=dict(table.get("columns", {})), auth=table.get("auth", ""),
            description=table.get("description", ""),
        )
    return out


def merge_config(catalogue: dict[str, FeedSpec], tables: dict[str, Any]) -> dict[str, FeedSpec]:
    """Catalogue + `[feeds.NAME]` tables; ConfigError (one line) on a table that cannot be used."""
    specs = {name: _copy(spec) for name, spec in catalogue.items()}
    for name, table in tables.items():
        where = f"[feeds.{name}]"
        if name_problem(name):
            raise ConfigError(f"{where}: {name_problem(name)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(table) - _CONFIG_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        spec = specs.get(name)
        if spec is None:
            if "url" not in table or "format" not in table:
                raise ConfigError(f"{where}: a feed not in the catalogue needs url and format")
            spec = specs[name] = FeedSpec(name=name, url=table["url"], format=table["format"],
                                          enabled=True, source="config")
        for key, value in table.items():
            try:
                _set(spec, key, value)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where}: bad {key}: {e}") from None
            spec.configured.add(key)
        for problem in (url_problem(spec.url), format_problem(spec.format), check_columns(spec.columns)):
            if problem:
                raise ConfigError(f"{where}: {problem}")
    return specs


def polite_interval(url: str, requested: float, catalogue: dict[str, FeedSpec], name: str = "") -> float:
    """The interval actually used: at least MIN_INTERVAL, the floor of the catalogue feed of
    that name, and the floor of any catalogue publisher on the same host."""
    host = (urlsplit(url).hostname or "").lower()
    floor = MIN_INTERVAL
    if name in catalogue:
        floor = max(floor, catalogue[name].min_interval)
    for spec in catalogue.values():
        if (urlsplit(spec.url).hostname or "").lower() == host:
            floor = max(floor, spec.min_interval)
    return max(requested, floor)


def is_abusech(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == ABUSECH_SUFFIX or host.endswith("." + ABUSECH_SUFFIX)


def _set(spec: FeedSpec, key: str, value: Any) -> None:
    if key in ("enabled", "local"):
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        setattr(spec, key, value)
    elif key == "interval":
        spec.interval = float(value)
        if spec.interval <= 0:
            raise ValueError("must be positive")
    elif key == "max_bytes":
        if not isinstance(value, int) or value < 0:
            raise ValueError("expected a whole number of bytes")
        spec.max_bytes = value
    elif key == "columns":
        if not isinstance(value, dict):
            raise TypeError("expected a table")
        spec.columns = dict(value)
    else:
        if not isinstance(value, str):
            raise TypeError("expected text")
        setattr(spec, key, value)


def _copy(spec: FeedSpec) -> FeedSpec:
    return replace(spec, columns=dict(spec.columns), configured=set(spec.configured))
