"""Settings, loaded once: defaults < /etc/stockade/config.toml < STOCKADE_* env < flags."""

from __future__ import annotations

import os
import socket as _socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_DB = "/var/lib/stockade/stockade.db"
DEFAULT_SOCKET = "/run/stockade/enforcer.sock"
DEFAULT_CONFIG = "/etc/stockade/config.toml"
DEFAULT_FORENSICS = "/var/lib/stockade/forensics"
DEFAULT_SECCOMP = "/var/lib/stockade/seccomp"


class ConfigError(Exception):
    """A config file or value that cannot be used; the message is one line for the user."""


@dataclass(slots=True)
class Settings:
    socket: str = DEFAULT_SOCKET
    db: str = DEFAULT_DB
    forensics_dir: str = DEFAULT_FORENSICS
    seccomp_dir: str = DEFAULT_SECCOMP  # seccomp profiles written by `harden`, named in its override
    nft_table: str = "stockade"  # the nftables table (inet and bridge) Stockade owns; no other is touched
    learn_seconds: float = 600.0
    # Learning also waits for the profile to be stable (no new entry) this long; negative:
    # automatic, a quarter of the learning period, at most 300 s.
    learn_stable_seconds: float = -1.0
    default_mode: str = "alert"  # the mode a profile leaves learning into
    host: str = field(default_factory=_socket.gethostname)
    docker_url: str = "unix:///var/run/docker.sock"
    socket_group: str = "stockade"  # group that owns the socket (0660): who may connect
    admin_group: str = "stockade-admin"  # may act (root always may)
    viewer_group: str = "stockade"  # may only read
    sensors: bool = True  # load eBPF sensors (off for unit tests of the control plane)
    feeds: dict[str, Any] = field(default_factory=dict)  # [feeds.NAME] tables from config
    apps: dict[str, Any] = field(default_factory=dict)  # [apps.NAME] per-app overrides
    abusech_auth_key: str = ""

    @classmethod
    def load(cls, config_file: str | None = None, **overrides: Any) -> "Settings":
        s = cls()
        path = config_file or os.environ.get("STOCKADE_CONFIG") or DEFAULT_CONFIG
        if path and Path(path).exists():
            try:
                data = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise ConfigError(f"cannot read config {path}: {e}") from None
            s._apply(data, source=path)
        elif config_file:
            raise ConfigError(f"config file {config_file} does not exist")
        env = {
            f.name: os.environ[f"STOCKADE_{f.name.upper()}"]
            for f in fields(cls)
            if f"STOCKADE_{f.name.upper()}" in os.environ
        }
        s._apply(env, source="environment")
        s._apply({k: v for k, v in overrides.items() if v is not None}, source="command line")
        return s

    def _apply(self, data: dict[str, Any], source: str) -> None:
        known = {f.name: f for f in fields(self)}
        for key, value in data.items():
            key = key.replace("-", "_")
            if key not in known:
                raise ConfigError(f"unknown setting {key!r} in {source}")
            current = getattr(self, key)
            try:
                if isinstance(current, bool):
                    value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
                elif isinstance(current, float):
                    value = float(value)
                elif isinstance(current, dict):
                    if not isinstance(value, dict):
                        raise ValueError("expected a table")
                else:
                    value = str(value)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"bad value for {key} in {source}: {e}") from None
            setattr(self, key, value)
        if self.default_mode not in ("learn", "alert", "protect"):
            raise ConfigError(f"default_mode must be learn, alert or protect, not {self.default_mode!r}")
        if self.learn_seconds < 0:
            raise ConfigError("learn_seconds must be >= 0")
