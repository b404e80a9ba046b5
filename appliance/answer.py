"""Answer a question: (retrieve) -> prompt -> stream -> result with model, sources and timings.

The knowledge-base part is optional: with no retriever (or `use_kb=False`) the model answers alone and
`sources` is empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

from appliance.engine import Engine, Generation, LoadedModel
from appliance.errors import UsageError
from appliance.models.verify import Progress

SYSTEM_PROMPT = (
    "You are a careful assistant running offline on the user's own computer. "
    "Answer clearly and briefly. If you are not sure, say so."
)


@dataclass
class Source:
    """One passage shown to the model, numbered as it was in the prompt."""

    number: int
    path: str
    title: str = ""
    section: str = ""
    page: int | None = None
    snippet: str = ""
    score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number, "path": self.path, "title": self.title, "section": self.section,
            "page": self.page, "snippet": self.snippet, "score": self.score,
        }

    def cite(self) -> str:
        parts = [self.path]
        if self.section:
            parts.append(self.section)
        if self.page is not None:
            parts.append(f"page {self.page}")
        return f"[{self.number}] " + ", ".join(parts)


_CITATION = re.compile(r"\[(\d{1,3})\]")


class Retriever(Protocol):
    def sources_for(self, question: str, model: LoadedModel) -> tuple[list[Source], list[dict]]:
        """Return the numbered sources and the chat messages that ground the answer in them."""


@dataclass
class AnswerRun:
    question: str
    model: LoadedModel
    generation: Generation
    sources: list[Source] = field(default_factory=list)
    notice: str = ""  # e.g. "The library has nothing on this." shown before any model text

    def tokens(self) -> Iterator[str]:
        yield from self.generation.tokens()

    def cancel(self) -> None:
        self.generation.stop()

    @property
    def text(self) -> str:
        return self.generation.text

    @property
    def cited(self) -> list[Source]:
        """The sources the answer refers to as [n], in their numbered order."""
        numbers = {int(n) for n in _CITATION.findall(self.generation.text)}
        return [source for source in self.sources if source.number in numbers]

    def as_dict(self) -> dict[str, Any]:
        entry = self.model.entry
        cited = self.cited
        return {
            "question": self.question,
            "answer": self.generation.text,
            "notice": self.notice or None,
            "engine_notice": self.generation.notice or self.model.notice or None,
            "cancelled": self.generation.cancelled,
            "model": {"name": entry.name, "sha256": entry.sha256, "license": entry.license_id},
            "sources": [source.as_dict() | {"cited": source in cited} for source in self.sources],
            "timings": self.generation.timings.as_dict(),
        }


def plain_messages(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


class Answerer:
    def __init__(self, engine: Engine, retriever: Retriever | None = None):
        self.engine = engine
        self.retriever = retriever

    def ask(
        self,
        question: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        use_kb: bool = True,
        history: list[dict] | None = None,
        progress: Progress | None = None,
        threads: int | None = None,
    ) -> AnswerRun:
        question = (question or "").strip()
        if not question:
            raise UsageError("the question is empty; ask something, e.g. appliance ask \"How do I purify water?\"")
        loaded = self.engine.load(model, progress=progress, threads=threads)
        sources: list[Source] = []
        notice = ""
        if use_kb and self.retriever is not None:
            sources, messages = self.retriever.sources_for(question, loaded)
            if not sources:
                notice = "The library has nothing on this; answering from the model alone."
        else:
            messages = plain_messages(question)
        if history:
            messages = messages[:1] + history + messages[1:]
        limit = max_tokens or self.engine.config.model.max_tokens
        return AnswerRun(question, loaded, loaded.generate(messages, limit), sources, notice)
