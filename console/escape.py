"""Showing attacker-controlled text safely.

Process names, paths, argv, container names, labels and feed text come from whoever
controls a container or a feed. They are shown as inert text: control characters (which
include terminal escape sequences) become visible `\\xNN` escapes, lone surrogates from
undecodable bytes become `\\udcNN`, and in the console they are always wrapped in
`rich.text.Text`, never parsed as markup.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

_MAX_DEFAULT = 4096


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\t":
        return "\\t"
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if code < 0x20 or 0x7F <= code < 0xA0:
        return f"\\x{code:02x}"
    if 0xD800 <= code < 0xE000:  # lone surrogate (surrogateescape'd byte)
        return f"\\u{code:04x}"
    if code in (0x2028, 0x2029, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
                0x2066, 0x2067, 0x2068, 0x2069, 0xFEFF):
        # line separators and bidi overrides: they reorder or break what the eye reads
        return f"\\u{code:04x}"
    return ch


def printable(value: Any, max_len: int = _MAX_DEFAULT) -> str:
    """One line of inert, printable text; long values are cut with an ellipsis."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > max_len:
        text = text[:max_len] + "…"
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escape_char(ch) for ch in text)


def safe_text(value: Any, style: str = "", max_len: int = _MAX_DEFAULT) -> Text:
    """For Textual/Rich: a Text that is never interpreted as markup."""
    return Text(printable(value, max_len), style=style, no_wrap=False, end="")
