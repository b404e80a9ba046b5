"""One question and its streamed answer, with the sources it was grounded in."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Markdown, OptionList, Static
from textual.widgets.markdown import MarkdownStream
from textual.widgets.option_list import Option

from appliance.answering.evidence import MARKS_HEADING, UNSUPPORTED_HEADING
from appliance.sanitize import clean
from kb.source import Source
from tui.present import source_label


class SourceList(OptionList):
    """The cited passages; select one (Enter or click) to read it."""

    class Chosen(Message):
        def __init__(self, source: Source) -> None:
            super().__init__()
            self.source = source

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sources: list[Source] = []

    def set_sources(self, sources: list[Source | dict[str, Any]]) -> None:
        """Sources of a live answer, or the dicts of one read back from history."""
        self.sources = [s if isinstance(s, Source) else Source.from_dict(s) for s in sources]
        self.clear_options()
        self.add_options([Option(source_label(s), id=str(i)) for i, s in enumerate(self.sources)])
        self.display = bool(self.sources)
        if self.sources:
            self.highlighted = 0

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.Chosen(self.sources[event.option_index]))


class QuoteList(OptionList):
    """The library's own sentences that best answer the question, first; Enter on one opens its source."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.quotes: list[dict[str, Any]] = []
        self.sources: dict[int, Source] = {}

    def set_quotes(self, quotes: list[Any], sources: list[Source]) -> None:
        self.quotes = [q if isinstance(q, dict) else q.as_dict() for q in quotes]
        self.sources = {s.number: s for s in sources if s.number is not None}
        self.clear_options()
        self.add_options([Option(clean(f"“{' '.join(q['text'].split())}” [{q.get('number')}]"), id=str(i))
                          for i, q in enumerate(self.quotes)])
        self.display = bool(self.quotes)

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        number = self.quotes[event.option_index].get("number")
        source = self.sources.get(number) if number is not None else None
        if source is not None:
            self.post_message(SourceList.Chosen(source))


class Exchange(Vertical):
    """A question; an emergency notice (a question that reads as one, answered by the model alone); the library's
    own sentences (quotes); the model's answer as Markdown (streamed through MarkdownStream); a notice; sentences
    not found in the library; and the sources."""

    def __init__(self, question: str, answer: str = "", *, sources: list[Any] | None = None, notice: str = "",
                 meta: str = "", streaming: bool = False, quotes: list[Any] | None = None,
                 unsupported: list[str] | None = None, emergency: str = "",
                 misplaced: list[str] | None = None) -> None:
        super().__init__(classes="exchange")
        self.question = question
        self._answer = answer
        self._sources = sources or []
        self._notice = notice
        self._emergency = emergency  # the emergency notice (appliance.answering.emergency), above everything else
        self._meta = meta
        self._streaming = streaming
        self._quotes = quotes or []
        self._unsupported = unsupported or []
        self._misplaced = misplaced or []  # supported sentences marked [n] with a passage that does not say them
        self.stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Static(self.question, classes="question", markup=False)
        emergency = Static(self._emergency, classes="emergency", markup=False)
        emergency.display = bool(self._emergency)
        yield emergency
        notice = Static(self._notice, classes="notice", markup=False)
        notice.display = bool(self._notice)
        yield notice
        yield QuoteList(classes="quotes")
        yield Markdown(self._answer, classes="answer")
        unsupported = Static("", classes="unsupported", markup=False)
        unsupported.display = False
        yield unsupported
        yield SourceList(classes="sources")
        if self._streaming:
            yield Static("thinking…", classes="meta")
        else:
            meta = Static(self._meta, classes="meta", markup=False)
            meta.display = bool(self._meta)
            yield meta

    def on_mount(self) -> None:
        sources = self.query_one(SourceList)
        sources.set_sources(self._sources)
        self.query_one(QuoteList).set_quotes(self._quotes, sources.sources)
        self.show_unsupported(self._unsupported, self._misplaced)
        if self._streaming:
            self.stream = Markdown.get_stream(self.markdown)

    def show_unsupported(self, sentences: list[str], misplaced: list[str] | None = None) -> None:
        """The model's sentences no passage supports, then those marked with a passage that does not say them."""
        blocks = []
        if sentences:
            blocks.append(UNSUPPORTED_HEADING + "\n" + "\n".join(f"  - {s}" for s in sentences))
        if misplaced:
            blocks.append(MARKS_HEADING + "\n" + "\n".join(f"  - {note}" for note in misplaced))
        label = self.query_one(".unsupported", Static)
        label.update(clean("\n".join(blocks)))
        label.display = bool(blocks)

    @property
    def markdown(self) -> Markdown:
        return self.query_one(".answer", Markdown)

    def started(self, sources: list[Any], notice: str, quotes: list[Any] | None = None, emergency: str = "") -> None:
        if emergency:
            label = self.query_one(".emergency", Static)
            label.update(clean(emergency))
            label.display = True
        if notice:
            label = self.query_one(".notice", Static)
            label.update(notice)
            label.display = True
        source_list = self.query_one(SourceList)
        source_list.set_sources(sources)
        self.query_one(QuoteList).set_quotes(quotes or [], source_list.sources)
        self.query_one(".meta", Static).update("answering…  (Esc cancels)")

    async def write(self, text: str) -> None:
        if self.stream is not None:
            await self.stream.write(text)

    async def finish(self, text: str, meta: str) -> None:
        if self.stream is not None:
            await self.stream.stop()
            self.stream = None
        # One full update at the end repairs anything half-parsed while streaming (code fences, tables).
        await self.markdown.update(text)
        label = self.query_one(".meta", Static)
        label.update(meta)
        label.display = bool(meta)

    async def abandon(self) -> None:
        if self.stream is not None:
            await self.stream.stop()
            self.stream = None
        await self.remove()
