"""Markdown: ATX (#) and setext headings make the heading path; code fences are kept as text, never headings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

from kb.document import Document, Section
from kb.readers._text import clean, read_decoded

# Every pattern here runs in time linear in the line: no two quantifiers can claim the same characters (the ATX
# heading's text is taken apart with str methods, not with `\s+(.*?)\s*#*\s*$`, which took minutes on a heading
# of 5,000 spaces), and a bracket, paren or angle scan stops at the next opener of its kind, so the scans that
# start at successive openers never cover the same text twice ("[" * 20,000 took 0.9 s, "<" * 20,000 0.1 s).
_ATX = re.compile(r"^[ \t]{0,3}(#{1,6})[ \t]")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_TARGET = r"\((?:[^()]|\([^()]*\))*+\)"  # a link's target, one level of parentheses inside (wiki URLs)
_INLINE = [
    (re.compile(r"!\[([^\[\]]*)\]" + _TARGET), r"\1"),  # images -> alt text
    (re.compile(r"\[([^\[\]]+)\]" + _TARGET), r"\1"),  # links -> text
    (re.compile(r"<[^<>]+>"), " "),  # inline html tags
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),
    (re.compile(r"`([^`]*)`"), r"\1"),
]


def _atx_text(line: str, start: int) -> str:
    """An ATX heading's text: after the #s, without the closing #s and the spaces around."""
    text = line[start:].strip()
    closed = text.rstrip("#")
    if closed != text and (not closed or closed[-1] in " \t"):
        text = closed.rstrip()
    return text


def _inline(text: str) -> str:
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return text


def parse_markdown(text: str, path: str, fallback_title: str) -> Document:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # YAML front matter
    if lines and lines[0].strip() == "---":
        for end in range(1, min(len(lines), 200)):
            if lines[end].strip() in ("---", "..."):
                lines = lines[end + 1:]
                break
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    current = Section(heading=[], paragraphs=[])
    buffer: list[str] = []
    title = None
    in_fence = False

    def flush():
        if buffer:
            paragraph = clean(_inline(" ".join(buffer)))
            if paragraph:
                current.paragraphs.append(paragraph)
            buffer.clear()

    def heading(level: int, text: str):
        nonlocal current, title
        flush()
        if current.paragraphs:
            sections.append(current)
        text = clean(_inline(text))
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, text))
        if title is None and level == 1:
            title = text
        current = Section(heading=[t for _, t in stack], paragraphs=[])

    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            flush() if not in_fence else None
            continue
        if in_fence:
            buffer.append(line.strip())
            continue
        match = _ATX.match(line)
        if match:
            heading(len(match.group(1)), _atx_text(line, match.end()))
            continue
        if _SETEXT.match(line) and buffer and len(buffer) == 1 and (i == 0 or lines[i - 1].strip()):
            text = buffer.pop()
            heading(1 if line.strip().startswith("=") else 2, text)
            continue
        if not line.strip():
            flush()
        else:
            stripped = re.sub(r"^\s{0,3}(?:[-*+]|\d+[.)]|>)\s+", "", line)
            if stripped != line and buffer:  # a list item or quote starts its own paragraph
                flush()
            buffer.append(stripped.strip())
    flush()
    if current.paragraphs:
        sections.append(current)
    return Document(path=path, title=title or fallback_title, kind="md", sections=sections)


def read_md(handle: BinaryIO, path: Path) -> Document:
    return read_decoded(handle, path, parse_markdown)
