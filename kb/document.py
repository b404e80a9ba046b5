"""What every reader produces: a Document of Sections, each with its heading path and (where the format has
pages) a page number. Chunking never crosses a Section."""

from __future__ import annotations

from dataclasses import dataclass, field

FACT_CHARS = 1000  # a fact a file states about itself is kept up to this long


def fact(value: str, where: str) -> dict[str, str]:
    """One fact a file states about itself, with where it was read (the text as the file has it, bounded; it is
    sanitized when shown)."""
    text = " ".join(str(value).split())
    return {"value": text[:FACT_CHARS] + (" ..." if len(text) > FACT_CHARS else ""), "from": where}


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
    # What the file says about itself (a PDF's document information, an EPUB's OPF metadata): name ->
    # {"value": text, "from": where in the file it was read}; kept in the source's provenance record.
    facts: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def words(self) -> int:
        return sum(s.words for s in self.sections)
