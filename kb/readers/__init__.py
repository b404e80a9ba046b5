"""One module per format, each turning an open file into a Document.

`read(path)` opens the file as a regular file only (kb.files.open_regular) and reads it; `read_from(handle, path)`
reads a handle the caller already opened (the ingest hashes and reads through the same descriptor). Whatever a file
holds, a reader returns a Document or raises ReadError with a one-line reason, never anything else.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from kb.document import Document
from kb.errors import ReadError
from kb.files import open_regular

KINDS = {
    ".txt": "txt", ".text": "txt",
    ".md": "md", ".markdown": "md",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".pdf": "pdf",
    ".epub": "epub",
    ".zim": "zim",
}

MAX_FILE_BYTES = 512 * 1024 * 1024  # a single manual beyond this is almost surely not a manual


def kind_of(path: Path) -> str | None:
    return KINDS.get(path.suffix.lower())


def read(path: Path) -> Document:
    """Read one non-ZIM file. Raises ReadError with a one-line reason."""
    kind = _readable_kind(path)
    with open_regular(path) as handle:
        return read_from(handle, path, kind)


def _readable_kind(path: Path) -> str:
    kind = kind_of(path)
    if kind is None or kind == "zim":
        raise ReadError(f"unsupported format {path.suffix or '(no extension)'}")
    return kind


def read_from(handle: BinaryIO, path: Path, kind: str | None = None) -> Document:
    """Read an open binary handle (positioned anywhere) as the file `path` names."""
    kind = kind or _readable_kind(path)
    try:
        size = handle.seek(0, io.SEEK_END)
        handle.seek(0)
    except (OSError, ValueError) as exc:
        raise ReadError(f"cannot be read ({exc})") from None
    if size > MAX_FILE_BYTES and kind in ("txt", "md", "html"):
        raise ReadError(f"too large for a text file ({size / 1e6:.0f} MB)")
    if kind == "txt":
        from kb.readers.txt import read_txt as reader
    elif kind == "md":
        from kb.readers.md import read_md as reader
    elif kind == "html":
        from kb.readers.html import read_html as reader
    elif kind == "pdf":
        from kb.readers.pdf import read_pdf as reader
    elif kind == "epub":
        from kb.readers.epub import read_epub as reader
    else:
        raise ReadError(f"unsupported format {path.suffix or '(no extension)'}")
    try:
        document = reader(handle, path)
    except ReadError:
        raise
    except MemoryError:
        raise ReadError("too large to read in memory") from None
    except RecursionError:
        raise ReadError("nested too deeply to parse") from None
    except OSError as exc:
        raise ReadError(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - a broken file in a third-party parser: name it, keep the batch going
        raise ReadError(f"cannot be parsed as {kind} ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not any(p.strip() for s in document.sections for p in s.paragraphs):
        raise ReadError("contains no text" + (" (a scanned PDF needs OCR first)" if kind == "pdf" else ""))
    return document


__all__ = ["KINDS", "MAX_FILE_BYTES", "kind_of", "read", "read_from", "ReadError"]
