"""The unix-socket control plane shared by the console and the CLI."""

from .server import OpError, Request, Server, SocketInUse

__all__ = ["OpError", "Request", "Server", "SocketInUse"]
