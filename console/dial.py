"""`stockade dial-stdio`: bridge stdin/stdout to the local enforcer socket, byte for byte.

A remote client runs `ssh host -- stockade dial-stdio` and speaks the enforcer's protocol
over the ssh child's pipes; this end connects to the socket as the ssh user, so the
enforcer's SO_PEERCRED role check sees that user (a viewer over SSH is read-only there too).

It starts once per connection, so it imports only the standard library (no asyncio, no
Textual, not even the protocol): a select loop over two file descriptors.
Exit status: 0 when either side closes cleanly; 1 with one line on stderr when the socket
cannot be reached; 2 for bad arguments.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys

DEFAULT_SOCKET = "/run/stockade/enforcer.sock"
PREFIX = "stockade dial-stdio: "  # the client recognises this line in ssh's stderr
CHUNK = 65536


def _say(message: str) -> None:
    os.write(2, (PREFIX + message.replace("\n", " ") + "\n").encode("utf-8", "backslashreplace"))


def _parse(argv: list[str]) -> str:
    path = os.environ.get("STOCKADE_SOCKET") or DEFAULT_SOCKET
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--socket" and args:
            path = args.pop(0)
        elif arg.startswith("--socket="):
            path = arg.split("=", 1)[1]
        elif arg in ("-h", "--help"):
            print("usage: stockade dial-stdio [--socket PATH]\n\n"
                  "Bridge stdin/stdout to the enforcer socket (what `--host ssh://...` runs on the remote).")
            raise SystemExit(0)
        else:
            raise ValueError(f"unexpected argument {arg!r} (usage: stockade dial-stdio [--socket PATH])")
    if not path:
        raise ValueError("--socket needs a path")
    return path


def _group_hint(path: str) -> str:
    try:
        import grp

        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError, ImportError):
        return "stockade"


def connect(path: str) -> socket.socket:
    """The connected socket, or ConnectionError with the one line to print."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise ConnectionError(f"cannot reach the enforcer at {path}: no such socket "
                              "(is stockade-enforcer running?)") from None
    except PermissionError:
        sock.close()
        raise ConnectionError(f"cannot reach the enforcer at {path}: permission denied "
                              f"(join group {_group_hint(path)})") from None
    except OSError as e:
        sock.close()
        raise ConnectionError(f"cannot reach the enforcer at {path}: "
                              f"{e.strerror or type(e).__name__}") from None
    return sock


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def bridge(sock: socket.socket, stdin: int = 0, stdout: int = 1) -> None:
    """Copy stdin -> socket and socket -> stdout until the socket closes (or stdout does).

    When stdin ends first, the socket's write side is shut (the enforcer sees EOF and
    closes), and what it still sends is copied out before returning."""
    sfd = sock.fileno()
    inputs = [stdin, sfd]
    while True:
        readable, _, _ = select.select(inputs, [], [])
        if sfd in readable:
            try:
                data = sock.recv(CHUNK)
            except ConnectionResetError:
                data = b""
            if not data:
                return
            try:
                _write_all(stdout, data)
            except BrokenPipeError:
                return
        if stdin in readable:
            data = os.read(stdin, CHUNK)
            if data:
                try:
                    sock.sendall(data)
                except (BrokenPipeError, ConnectionResetError):
                    return
            else:
                inputs.remove(stdin)
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError as e:
                    if e.errno != errno.ENOTCONN:
                        raise


def main(argv: list[str]) -> int:
    try:
        path = _parse(argv)
    except ValueError as e:
        _say(str(e))
        return 2
    try:
        sock = connect(path)
    except ConnectionError as e:
        _say(str(e))
        return 1
    try:
        bridge(sock)
    except KeyboardInterrupt:
        return 130
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
