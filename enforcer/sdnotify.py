"""Telling systemd the enforcer is ready (sd_notify, Type=notify in the unit).

The unit orders the enforcer before docker.service: at boot, Docker starts the containers
only once this says READY, which is once the sensors are loaded (kill-on-exec can hold) or
have failed (Docker must not wait for ever). Without it a reboot would leave protected
containers running unwatched for the whole compile (30 s to minutes; docs/failsafe.md).

The protocol is one datagram to $NOTIFY_SOCKET (a path, or `@name` in the abstract
namespace); outside systemd there is no such variable and this does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `message` (e.g. "READY=1\\nSTATUS=...") to the service manager; True if sent."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)
            sock.sendto(message.encode(), address)
        return True
    except OSError as e:
        log.warning("systemd: cannot notify %r: %s", address.replace("\0", "@"), e)
        return False
