"""sd_notify: READY reaches systemd's socket (a real unix datagram socket here), by path and
in the abstract namespace; without NOTIFY_SOCKET nothing is sent; a dead socket is a warning."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from enforcer.sdnotify import notify


def test_ready_reaches_a_socket_given_by_path(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        assert notify("READY=1\nSTATUS=sensors loaded", {"NOTIFY_SOCKET": path})
        assert server.recv(4096) == b"READY=1\nSTATUS=sensors loaded"


def test_ready_reaches_an_abstract_socket() -> None:
    name = f"stockade-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert server.recv(4096) == b"READY=1"


def test_nothing_without_systemd_and_a_missing_socket_is_not_fatal(tmp_path: Path) -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
