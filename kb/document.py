"""What every reader produces: a Document of Sections, each with its heading path and (where the format has
pages) a page number. Chunking never crosses a Section."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Section:
    heading: list[str]  # heading path, outermost first
    paragraphs: list[str]
    page: int | None = None

    @property
    def words(self) -> int:
        return sum(len(p.split()) for p in self.paragraphs)


@dataclass
class Document:
    path: str
    title: str
    kind: str  # txt, md, html, pdf, epub, zim
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "decoded as cp1252"

    @property
    def words(self) -> int:
        return sum(s.words for s in self.sections)
