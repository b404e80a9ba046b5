"""EPUB through ebooklib: each spine document is read as HTML under its chapter title (from the table of
contents, else its first heading). The archive is checked first, so a zip bomb is refused before inflating."""

from __future__ import annotations

import posixpath
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO

from kb.document import Document, fact
from kb.errors import ReadError
from kb.readers._text import clean, decode
from kb.readers.html import parse_html

MAX_UNCOMPRESSED = 300 * 1024 * 1024
MAX_RATIO = 150
MAX_ENTRIES = 20000


def check_zip(handle: BinaryIO) -> None:
    handle.seek(0)
    try:
        with zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise ReadError(f"corrupt EPUB (not a readable zip archive: {str(exc)[:80]})") from None
    if len(infos) > MAX_ENTRIES:
        raise ReadError(f"EPUB with {len(infos)} entries looks like a zip bomb; refused")
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos) or 1
    if total > MAX_UNCOMPRESSED or (total > 10 * 1024 * 1024 and total / packed > MAX_RATIO):
        raise ReadError(f"EPUB inflates to {total / 1e6:.0f} MB from {packed / 1e6:.1f} MB; refused as a zip bomb")


def _toc_titles(book) -> dict[str, str]:
    titles: dict[str, str] = {}

    def visit(items):
        for item in items:
            if isinstance(item, tuple) and len(item) == 2:
                section, children = item
                href = getattr(section, "href", None)
                if href:
                    titles.setdefault(href.split("#")[0], clean(section.title or ""))
                visit(children)
            else:
                href = getattr(item, "href", None)
                if href:
                    titles.setdefault(href.split("#")[0], clean(getattr(item, "title", "") or ""))

    try:
        visit(book.toc)
    except Exception:  # noqa: BLE001 - a broken table of contents only loses the headings
        pass
    return titles


# The Dublin Core elements an EPUB's package may carry, as the provenance record names them.
EPUB_FACTS = {"title": "Title", "creator": "Creator", "publisher": "Publisher", "date": "Date",
              "language": "Language", "rights": "License", "source": "Source", "identifier": "Identifier"}


def read_epub(handle: BinaryIO, path: Path) -> Document:
    check_zip(handle)
    import ebooklib
    from ebooklib import epub

    handle.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            book = epub.read_epub(handle, options={"ignore_ncx": False})
        except Exception as exc:  # noqa: BLE001 - ebooklib raises anything on a corrupt file: one ReadError
            raise ReadError(f"corrupt EPUB ({type(exc).__name__}: {str(exc)[:100]})") from None
    title = ""
    try:
        meta = book.get_metadata("DC", "title")
        if meta:
            title = clean(meta[0][0])
    except Exception:  # noqa: BLE001 - a broken title only loses the title
        pass
    facts: dict[str, dict[str, str]] = {}
    for element, name in EPUB_FACTS.items():
        try:
            values = [str(value) for value, _ in book.get_metadata("DC", element) if str(value).strip()]
        except Exception:  # noqa: BLE001 - broken metadata only loses that fact
            continue
        if values:
            facts[name] = fact("; ".join(values), f"the EPUB's package metadata (dc:{element})")
    toc = _toc_titles(book)
    sections = []
    notes: list[str] = []
    items = []
    for entry in book.spine:
        idref = entry[0] if isinstance(entry, tuple) else entry
        item = book.get_item_with_id(idref)
        if item is not None and item.get_type() == ebooklib.ITEM_DOCUMENT:
            items.append(item)
    if not items:
        items = list(book.get_items_of_type(ebooklib.ITEM_DOCUMENT))
    for item in items:
        name = item.get_name()
        chapter = toc.get(name) or toc.get(posixpath.basename(name)) or ""
        # The chapter's own bytes: ebooklib's get_content() rebuilds the page through lxml, which keeps 256 levels
        # of nesting and silently drops what is deeper (text included); kb.readers.html bounds the shape itself.
        html, _ = decode(item.content or item.get_content())
        part = parse_html(html, str(path), chapter or name, kind="epub", base_heading=[chapter] if chapter else None)
        for section in part.sections:
            if not chapter and not section.heading and part.title and part.title != name:
                section.heading = [part.title]
            sections.append(section)
        notes.extend(f"{name}: {note}" for note in part.notes)
    return Document(path=str(path), title=title or path.stem, kind="epub", sections=sections, notes=notes,
                    facts=facts)
