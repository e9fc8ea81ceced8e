"""A container and an app as clients see them: the one place those views are computed.

Inventory data first, then what the layers know of it: its mode and profile state, its
incident count, whether it is frozen and how many blocks it has. Layers never publish a
view themselves; they say a container changed and the root publishes `views.container(c)`.
"""

from __future__ import annotations

from typing import Any

from .detect.alerts import AlertBook
from .enforce.responder import Responder
from .models import App, Container
from .profiles.book import ProfileBook


class Views:
    def __init__(self, profiles: ProfileBook, alerts: AlertBook, responder: Responder | None,
                 default_mode: str) -> None:
        self.profiles = profiles
        self.alerts = alerts
        self.responder = responder  # None where a test runs without the real responder
        self.default_mode = default_mode

    def container(self, c: Container) -> dict[str, Any]:
        data = c.to_dict()
        data.update(self.profiles.describe_container(c))
        data.update(self.alerts.describe_container(c))
        if self.responder is not None:
            data.update(self.responder.describe_container(c))
        return data

    def app(self, app: App, stored: dict[str, Any]) -> dict[str, Any]:
        """`stored`: the app's row of settings (its chosen mode), if any."""
        data = app.to_dict()
        data["mode"] = stored.get("mode", self.default_mode)
        data.update(self.profiles.describe_app(app))
        data.update(self.alerts.describe_app(app))
        return data
