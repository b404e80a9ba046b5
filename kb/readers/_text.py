"""Shared text helpers for readers: decoding bytes safely and cleaning whitespace."""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import BinaryIO, Callable

from kb.document import Document
from kb.errors import ReadError

_SPACES = re.compile(r"[ \t\f\v\u00a0\u200b]+")
_CONTROL = set(range(0, 32)) - {9, 10, 12, 13}


def looks_binary(data: bytes) -> bool:
    sample = data[:8192]
    if not sample:
        return False
    if b"\x00" in sample and not (sample.startswith(codecs.BOM_UTF16_LE) or sample.startswith(codecs.BOM_UTF16_BE)):
        return True
    control = sum(1 for b in sample if b in _CONTROL)
    return control / len(sample) > 0.05


def decode(data: bytes) -> tuple[str, str | None]:
    """Text and a note when it was not UTF-8. Raises ReadError for binary data."""
    for bom, encoding in ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding), f"decoded as {encoding}"
            except UnicodeDecodeError:
                break
    if looks_binary(data):
        raise ReadError("binary data, not text")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "not UTF-8; decoded as Windows-1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "not UTF-8; decoded as Latin-1"


def clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def paragraphs(text: str) -> list[str]:
    """Split on blank lines; join wrapped lines inside a paragraph."""
    out = []
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        block = clean(" ".join(line.strip() for line in block.split("\n")))
        if block:
            out.append(block)
    return out


def read_all(handle: BinaryIO, limit: int = 512 * 1024 * 1024) -> bytes:
    """The whole file, refusing one that grows past `limit` while it is read."""
    handle.seek(0)
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise ReadError(f"too large for a text file (over {limit / 1e6:.0f} MB)")
    return data


def read_decoded(handle: BinaryIO, path: Path, parse: Callable[[str, str, str], Document]) -> Document:
    """Read a text file, decode it (noting a non-UTF-8 fallback on the document), and parse it with `parse`."""
    text, note = decode(read_all(handle))
    document = parse(text, str(path), path.stem)
    if note:
        document.notes.append(note)
    return document
