"""ZIM archives (Kiwix) through libzim: the HTML articles, each read by the HTML reader under its title.

libzim takes only a path, so an archive is opened as a regular file first (kb.files.open_regular) and libzim is
given that descriptor's /proc/self/fd path: a FIFO or a device named `.zim` is never handed to it, and what it
opens is what was checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

from kb.document import Document, Section
from kb.errors import ReadError
from kb.files import descriptor_path, open_regular
from kb.readers.html import parse_html


def open_archive(path: Path, handle: BinaryIO | None = None):
    """A libzim Archive on `path` (or on the already opened `handle`). Raises ReadError."""
    if handle is None:
        with open_regular(path) as opened:
            return open_archive(path, opened)
    from libzim.reader import Archive

    try:
        return Archive(descriptor_path(handle))
    except FileNotFoundError:
        raise ReadError("vanished before it could be read") from None
    except Exception as exc:  # noqa: BLE001 - libzim raises anything on a corrupt file: one ReadError
        raise ReadError(f"corrupt ZIM ({str(exc)[:100]})") from None


def archive_title(archive, path: Path) -> str:
    try:
        return archive.get_metadata("Title").decode("utf-8", "replace").strip() or path.stem
    except Exception:  # noqa: BLE001 - broken metadata only loses the title
        return path.stem


def article_sections(entry, notes: list[str] | None = None, limit: int | None = None) -> list[Section]:
    """The article's sections under its title; what the HTML reader noted (a flattened nesting ...) goes to
    `notes`, prefixed with the article's path. `limit`: only the first that many bytes of its HTML are read."""
    item = entry.get_item()
    content = item.content
    html = bytes(content[:limit] if limit is not None else content).decode("utf-8", "replace")
    title = entry.title or entry.path
    document = parse_html(html, entry.path, title, kind="zim")
    if notes is not None:
        notes.extend(f"{entry.path}: {note}" for note in document.notes)
    # Every section is under the article's title; an h1 repeating it is dropped by the HTML reader.
    page_title = document.title or title
    sections = []
    for section in document.sections:
        heading = section.heading
        if not heading or heading[0] != page_title:
            heading = [page_title] + heading
        sections.append(Section(heading=heading, paragraphs=section.paragraphs))
    return sections


def iter_articles(archive, notes: list[str] | None = None) -> Iterator[tuple[str, list[Section]]]:
    """(article path, sections) for every HTML article, redirects skipped; the reader's notes go to `notes`."""
    for index in range(archive.entry_count):
        entry = archive._get_entry_by_id(index)
        if entry.is_redirect:
            continue
        try:
            if not entry.get_item().mimetype.startswith("text/html"):
                continue
            yield entry.path, article_sections(entry, notes)
        except Exception:  # noqa: BLE001 - one broken article is skipped, the rest are read
            continue


def read_zim(path: Path, handle: BinaryIO | None = None) -> Document:
    """The whole archive as one Document (for small ZIMs ingested on request)."""
    archive = open_archive(path, handle)
    notes: list[str] = []
    sections = [s for _, article in iter_articles(archive, notes) for s in article]
    if len(notes) > 8:  # one line each for a few articles; a count for many
        notes = notes[:8] + [f"and {len(notes) - 8:,} more articles with notes"]
    return Document(path=str(path), title=archive_title(archive, path), kind="zim", sections=sections, notes=notes)
