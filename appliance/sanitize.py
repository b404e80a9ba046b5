"""Nothing from a file reaches a terminal raw.

Documents, ZIM articles, file names, model metadata, history and llama.cpp's log can hold terminal control
sequences (ESC [2J clears the screen, OSC 0 sets the window title, OSC 52 writes the clipboard). `clean` turns
every C0 and C1 control character except newline and tab, DEL, and the Unicode bidirectional overrides into a
visible escape such as `\\x1b`. The CLI and the TUI pass all such text through it; `--json` output needs no
cleaning (JSON escapes control characters itself).
"""

from __future__ import annotations

import re

_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + _BIDI + "]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f" + _BIDI + "]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str) -> str:
    """Text safe to print: control characters other than newline and tab become visible escapes."""
    if not text:
        return text or ""
    return _UNSAFE.sub(_escape, text)


def clean_line(text: str) -> str:
    """Like `clean`, and newlines and tabs become escapes too: for names and one-line fields."""
    if not text:
        return text or ""
    return _UNSAFE_LINE.sub(_escape, text)
