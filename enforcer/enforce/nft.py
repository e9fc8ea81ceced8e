"""libnftables over ctypes: nftables commands as JSON, in this process, over netlink.

Why not pyroute2 (0.9.7, measured on this host, kernel 6.18; bench/bench_enforce.py): its
nftables API has no interval or concatenated sets (and its set calls fail outright in
0.9.7), so with it each block would be a rule, and 1,000 rules evaluated one by one added
~73 us to every connection between two containers, where 1,000 blocks as set elements
add nothing measurable. libnftables is what `nft` itself is built on: one JSON document is
one atomic transaction, and listings come back as JSON we can parse. Per change pyroute2
is quicker (~0.7-1 ms a rule against ~0.6-5 ms a set element here: libnftables loads a
cache of the host's tables first, so its cost grows with the other tables on the host);
a block is not a hot path, a packet is. No process is started per rule: the library
speaks netlink from the calling thread.

A context is not thread-safe: `Nft` is used from one worker thread (see firewall.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from typing import Any

# Output flags of libnftables.h.
_OUTPUT_HANDLE = 1 << 3
_OUTPUT_JSON = 1 << 4
_OUTPUT_NUMERIC_PROTO = 1 << 7

LIBRARY_NAMES = ("libnftables.so.1", "libnftables.so")


class NftError(Exception):
    """A command the kernel or libnftables refused; the message is one line."""

    def __init__(self, message: str, errno_name: str = "") -> None:
        super().__init__(message)
        self.errno_name = errno_name  # e.g. "ENOENT" when a table or set does not exist


class NftUnavailable(NftError):
    """libnftables cannot be loaded (package nftables / libnftables1 missing)."""


def _load_library() -> ctypes.CDLL:
    errors = []
    for name in LIBRARY_NAMES + tuple(filter(None, [ctypes.util.find_library("nftables")])):
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            errors.append(str(e))
    raise NftUnavailable("libnftables is not installed (apt-get install libnftables1): " + "; ".join(errors[:1]))


class Nft:
    """One libnftables context with JSON output and buffered output/errors."""

    def __init__(self) -> None:
        lib = _load_library()
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise NftUnavailable("libnftables: cannot create a context")
        # JSON output also switches the input parser to JSON.
        lib.nft_ctx_output_set_flags(self._ctx, _OUTPUT_JSON | _OUTPUT_HANDLE | _OUTPUT_NUMERIC_PROTO)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run commands as one transaction; returns the `nftables` list of the output (listings)."""
        if self._ctx is None:
            raise NftError("libnftables context closed")
        if not commands:
            return []
        buf = json.dumps({"nftables": commands}, separators=(",", ":")).encode()
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, buf)
        out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
        err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise _error(err.decode(errors="replace"))
        if not out.strip():
            return []
        try:
            return list(json.loads(out).get("nftables", []))
        except ValueError as e:
            raise NftError(f"libnftables returned output that is not JSON: {e}") from None

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


def _error(text: str) -> NftError:
    """libnftables errors are several lines (message, command, carets): keep the message."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    message = next((ln for ln in lines if ln.startswith("Error:")), lines[0] if lines else "nftables command failed")
    name = ""
    lowered = message.lower()
    if "no such file or directory" in lowered:
        name = "ENOENT"
    elif "file exists" in lowered:
        name = "EEXIST"
    elif "operation not permitted" in lowered:
        name = "EPERM"
    return NftError(message.removeprefix("Error: ")[:300], name)
