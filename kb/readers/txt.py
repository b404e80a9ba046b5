"""Plain text: paragraphs on blank lines; underlined or short ALL-CAPS lines start a section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

from kb.document import Document, Section
from kb.readers._text import clean, read_decoded

_UNDERLINE = re.compile(r"^\s*([=\-~*#])\1{2,}\s*$")


def _is_caps_heading(line: str) -> bool:
    words = line.split()
    letters = [c for c in line if c.isalpha()]
    return (0 < len(words) <= 8 and len(letters) >= 3 and all(c.isupper() for c in letters)
            and not line.rstrip().endswith((".", ",", ";")))


def parse_text(text: str, path: str, fallback_title: str) -> Document:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    sections: list[Section] = []
    current = Section(heading=[], paragraphs=[])
    buffer: list[str] = []

    def flush_paragraph():
        if buffer:
            paragraph = clean(" ".join(buffer))
            if paragraph:
                current.paragraphs.append(paragraph)
            buffer.clear()

    def start(title: str):
        nonlocal current
        flush_paragraph()
        if current.paragraphs:
            sections.append(current)
        current = Section(heading=[clean(title)], paragraphs=[])

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if stripped and _UNDERLINE.match(following) and len(stripped) <= 100 and not _UNDERLINE.match(line):
            start(stripped)
            i += 2
            continue
        if not stripped:
            flush_paragraph()
        elif _UNDERLINE.match(line):
            flush_paragraph()
        elif not buffer and _is_caps_heading(stripped) and (not following.strip() or i == 0):
            start(stripped)
        else:
            buffer.append(stripped)
        i += 1
    flush_paragraph()
    if current.paragraphs:
        sections.append(current)
    title = fallback_title
    for line in lines[:20]:
        if line.strip():
            candidate = clean(line)
            if len(candidate.split()) <= 12:
                title = candidate
            break
    return Document(path=path, title=title, kind="txt", sections=sections)


def read_txt(handle: BinaryIO, path: Path) -> Document:
    return read_decoded(handle, path, parse_text)
