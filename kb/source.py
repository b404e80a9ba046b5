"""A source: where a passage came from, and the one way a citation is written.

Used by search results, answers, history, the CLI and the TUI alike. A file source cites as
`[2] /home/me/manuals/first-aid.pdf, Bleeding > Pressure, page 12`; a passage inside a ZIM archive as
`[3] handbook.zim › Installing, Step by Step › Administrator Password` (its article path, e.g.
`A/sect.installation.html`, is kept in `article` so a script can open it in Kiwix). `short=True` gives the compact
form the TUI shows (file name only, `·` between parts, `p. 12`).

Text here comes from files: print it through appliance.sanitize, never raw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any


@dataclass
class Source:
    path: str
    title: str = ""
    section: str = ""  # heading path, "Water > Purifying water"
    page: int | None = None
    snippet: str = ""
    score: float | None = None
    number: int | None = None  # the [n] it had in the prompt, when it was shown to a model
    article: str = ""  # inside an archive (ZIM): the article's path, e.g. "A/sect.network-config.html"
    # What the source file states of itself (its provenance record, kb.provenance): the title of the whole work
    # (a ZIM's M/Title), its publisher and license; "" where the file does not say. sha256: of the file's bytes.
    work: str = ""
    publisher: str = ""
    license: str = ""
    sha256: str = ""

    def location(self, short: bool = False) -> str:
        where = PurePath(self.path).name if short else self.path
        if self.article:
            return " › ".join(part for part in (where, self.title or self.article, self.section) if part)
        parts = [where]
        if self.section:
            parts.append(self.section)
        if self.page is not None:
            parts.append(f"p. {self.page}" if short else f"page {self.page}")
        return (" · " if short else ", ").join(parts)

    def cite(self, short: bool = False) -> str:
        where = self.location(short)
        return f"[{self.number}] {where}" if self.number is not None else where

    def provenance(self) -> str:
        """`"Wikipedia Medicine", published by Kiwix, license CC-BY-SA`: what its file states, only what it does
        (a work title the citation already shows is not repeated)."""
        parts = []
        if self.work and self.work not in (self.title, PurePath(self.path).name):
            parts.append(f'"{self.work}"')
        if self.publisher:
            parts.append(f"published by {self.publisher}")
        if self.license:
            parts.append(f"license {self.license}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "path": self.path, "title": self.title, "section": self.section,
                "page": self.page, "article": self.article or None, "snippet": self.snippet, "score": self.score,
                "work": self.work or None, "publisher": self.publisher or None, "license": self.license or None,
                "source_sha256": self.sha256 or None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Source":
        """From `as_dict()` output, or an older history row that lacks some keys."""
        page = data.get("page")
        score = data.get("score")
        number = data.get("number")
        return cls(path=str(data.get("path") or "?"), title=str(data.get("title") or ""),
                   section=str(data.get("section") or data.get("heading") or ""),
                   page=page if isinstance(page, int) else None, snippet=str(data.get("snippet") or ""),
                   score=float(score) if isinstance(score, (int, float)) else None,
                   number=number if isinstance(number, int) else None, article=str(data.get("article") or ""),
                   work=str(data.get("work") or ""), publisher=str(data.get("publisher") or ""),
                   license=str(data.get("license") or ""), sha256=str(data.get("source_sha256") or ""))
