"""Alert outputs: incidents into HTTP, JSON-lines files and syslog, as json, Falco or OCSF
(docs/outputs.md)."""

from __future__ import annotations

from .manager import OutputManager

__all__ = ["OutputManager"]
