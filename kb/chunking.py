"""Structure-aware chunking: about 150 words a chunk, never across a section, the heading path kept with it.

The embedder reads 256 tokens at most (about 190 English words), so a chunk of up to ~200 words plus its
heading fits. Paragraphs are packed whole; a paragraph longer than a chunk is split at sentence ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb.document import Document

TARGET_WORDS = 150
MAX_WORDS = 200
MIN_WORDS = 40  # a shorter tail is merged into the chunk before it (within the same section)

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass
class Chunk:
    heading: list[str]
    text: str
    page: int | None = None

    @property
    def heading_text(self) -> str:
        return " > ".join(self.heading)


def _pieces(paragraph: str) -> list[str]:
    """A paragraph, split into sentence groups of at most MAX_WORDS words."""
    words = paragraph.split()
    if len(words) <= MAX_WORDS:
        return [paragraph]
    out: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in _SENTENCE.split(paragraph):
        n = len(sentence.split())
        if n > MAX_WORDS:  # no sentence ends (a table, code): cut by words
            if current:
                out.append(" ".join(current))
                current, count = [], 0
            w = sentence.split()
            for start in range(0, len(w), TARGET_WORDS):
                out.append(" ".join(w[start:start + TARGET_WORDS]))
            continue
        if count + n > TARGET_WORDS and current:
            out.append(" ".join(current))
            current, count = [], 0
        current.append(sentence)
        count += n
    if current:
        out.append(" ".join(current))
    return out


def chunk_document(document: Document) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in document.sections:
        packed: list[list[str]] = []
        current: list[str] = []
        count = 0
        for paragraph in section.paragraphs:
            for piece in _pieces(paragraph):
                n = len(piece.split())
                if current and count + n > TARGET_WORDS:
                    packed.append(current)
                    current, count = [], 0
                current.append(piece)
                count += n
        if current:
            if packed and count < MIN_WORDS and sum(len(p.split()) for p in packed[-1]) + count <= MAX_WORDS:
                packed[-1].extend(current)
            else:
                packed.append(current)
        for group in packed:
            chunks.append(Chunk(heading=list(section.heading), text="\n".join(group), page=section.page))
    return chunks


def embedding_text(title: str, chunk: Chunk) -> str:
    """What the embedder sees: where the chunk sits, then the chunk."""
    context = " > ".join([title] + [h for h in chunk.heading if h != title]) if title else chunk.heading_text
    return f"{context}\n{chunk.text}" if context else chunk.text
