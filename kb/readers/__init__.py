"""One module per format. `read(path)` returns the Documents in a file (one, except a fully ingested ZIM)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from kb.document import Document
from kb.errors import ReadError, file_errors

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
    kind = kind_of(path)
    if kind is None or kind == "zim":
        raise ReadError(f"unsupported format {path.suffix or '(no extension)'}")
    with file_errors():
        size = path.stat().st_size
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
    else:
        from kb.readers.epub import read_epub as reader
    try:
        with file_errors():
            document = reader(path)
    except ReadError:
        raise
    except MemoryError:
        raise ReadError("too large to read in memory") from None
    except RecursionError:
        raise ReadError("nested too deeply to parse") from None
    except Exception as exc:  # a broken file in a third-party parser: name it, keep the batch going
        raise ReadError(f"cannot be parsed as {kind} ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not any(p.strip() for s in document.sections for p in s.paragraphs):
        raise ReadError("contains no text" + (" (a scanned PDF needs OCR first)" if kind == "pdf" else ""))
    return document


def read_zim_articles(path: Path) -> Iterator[Document]:
    from kb.readers.zim import iter_articles

    yield from iter_articles(path)


__all__ = ["KINDS", "kind_of", "read", "read_zim_articles", "ReadError"]
