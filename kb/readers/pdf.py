"""PDF through pypdf: one section per page (page numbers kept, 1-based), headed by the outline (bookmarks) entry
that covers the page. Encrypted PDFs open only when the empty user password unlocks them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

from kb.document import Document, Section, fact
from kb.errors import ReadError
from kb.readers._text import clean, paragraphs

logging.getLogger("pypdf").setLevel(logging.ERROR)

MAX_PAGES = 5000


def _outline(reader) -> list[tuple[int, list[str]]]:
    """(first page index, heading path) for every outline entry, sorted by page."""
    marks: list[tuple[int, list[str]]] = []

    def visit(items, parents: list[str]):
        last: list[str] = parents
        for item in items:
            if isinstance(item, list):
                visit(item, last)
                continue
            try:
                page = reader.get_destination_page_number(item)
                title = clean(str(item.title))
            except Exception:  # noqa: BLE001 - one broken outline entry is skipped
                continue
            if page is None or page < 0 or not title:
                continue
            last = parents + [title]
            marks.append((page, last))

    try:
        visit(reader.outline, [])
    except Exception:  # noqa: BLE001 - a broken outline only loses the headings
        return []
    marks.sort(key=lambda m: m[0])
    return marks


# The document information a PDF may carry, as the provenance record names it.
PDF_FACTS = {"/Title": "Title", "/Author": "Creator", "/Subject": "Subject", "/Creator": "Made with",
             "/Producer": "Producer", "/CreationDate": "Date", "/ModDate": "Modified"}


def read_pdf(handle: BinaryIO, path: Path) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    handle.seek(0)
    try:
        reader = PdfReader(handle, strict=False)
    except PdfReadError as exc:
        raise ReadError(f"corrupt PDF ({str(exc)[:100]})") from None
    if reader.is_encrypted:
        try:
            if not reader.decrypt(""):
                raise ReadError("encrypted PDF (needs a password)")
        except (FileNotDecryptedError, NotImplementedError, Exception) as exc:
            if isinstance(exc, ReadError):
                raise
            raise ReadError("encrypted PDF (needs a password)") from None
    try:
        pages = reader.pages
        count = len(pages)
    except Exception as exc:  # noqa: BLE001 - pypdf raises anything on a corrupt file: one ReadError
        raise ReadError(f"corrupt PDF ({type(exc).__name__})") from None
    if count > MAX_PAGES:
        raise ReadError(f"{count} pages; more than {MAX_PAGES} is not supported")
    title = ""
    facts: dict[str, dict[str, str]] = {}
    try:
        info = reader.metadata
        if info and info.title:
            title = clean(str(info.title))
        for key, name in PDF_FACTS.items():
            value = info.get(key) if info else None
            if value is not None and str(value).strip():
                facts[name] = fact(str(value), f"the PDF's document information ({key})")
    except Exception:  # noqa: BLE001 - broken metadata only loses the title and the facts
        pass
    marks = _outline(reader)
    sections: list[Section] = []
    failed_pages = 0
    mark_index = -1
    for index in range(count):
        while mark_index + 1 < len(marks) and marks[mark_index + 1][0] <= index:
            mark_index += 1
        heading = list(marks[mark_index][1]) if mark_index >= 0 else []
        try:
            text = pages[index].extract_text() or ""
        except Exception:  # noqa: BLE001 - a page pypdf cannot extract is counted, the rest are read
            failed_pages += 1
            continue
        paras = paragraphs(_join_hyphens(text))
        if paras:
            sections.append(Section(heading=heading, paragraphs=paras, page=index + 1))
    if failed_pages == count and count:
        raise ReadError("corrupt PDF (no page could be read)")
    if not title and sections:
        first = sections[0].paragraphs[0]
        title = first if len(first.split()) <= 12 else path.stem
    document = Document(path=str(path), title=title or path.stem, kind="pdf", sections=sections, facts=facts)
    if failed_pages:
        document.notes.append(f"{failed_pages} of {count} pages could not be read")
    return document


def _join_hyphens(text: str) -> str:
    # "equip-\nment" -> "equipment"; keep single newlines as soft breaks (paragraphs() joins them)
    import re

    return re.sub(r"(\w)-\n(\w)", r"\1\2", text)
