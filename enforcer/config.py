"""Settings, loaded once: defaults < /etc/stockade/config.toml < STOCKADE_* env < flags."""

from __future__ import annotations

import os
import re
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
    # Where the sensors' policy maps and program links are pinned (sensors/pins.py): "" =
    # /sys/fs/bpf/stockade/<nft_table>, one folder per enforcer instance; "off" = no pins
    # (kill-on-exec then ends with the process).
    bpf_pin_dir: str = ""
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
    hash_max_mib: float = 32.0  # binaries and written files larger than this are not hashed (said)
    hash_deadline: float = 5.0  # seconds one file's read may take before the hasher gives up (said)
    hash_rate_mib: float = 64.0  # MiB a second one container's written files may cost the hasher
    feeds: dict[str, Any] = field(default_factory=dict)  # [feeds.NAME] tables from config
    apps: dict[str, Any] = field(default_factory=dict)  # [apps.NAME] per-app overrides
    abusech_auth_key: str = ""

    def pin_root(self) -> str:
        """The bpffs folder of this instance's pins, or "" when pinning is off."""
        if self.bpf_pin_dir == "off":
            return ""
        return self.bpf_pin_dir or f"/sys/fs/bpf/stockade/{self.nft_table}"

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
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", self.nft_table):
            # It names the nftables table and the pin folder /sys/fs/bpf/stockade/<nft_table>:
            # an empty name would make --uninstall remove every instance's pins.
            raise ConfigError(f"nft_table must be a letter then letters, digits or _ (at most 64), "
                              f"not {self.nft_table!r}")
        if self.default_mode not in ("learn", "alert", "protect"):
            raise ConfigError(f"default_mode must be learn, alert or protect, not {self.default_mode!r}")
        if self.learn_seconds < 0:
            raise ConfigError("learn_seconds must be >= 0")
        if not (0 < self.hash_max_mib <= 4096 and 0 < self.hash_deadline <= 600 and 0 < self.hash_rate_mib <= 65536):
            raise ConfigError("hash_max_mib must be in (0, 4096], hash_deadline in (0, 600] seconds "
                              "and hash_rate_mib in (0, 65536]")
