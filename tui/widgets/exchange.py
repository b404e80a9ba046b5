"""One question and its streamed answer, with the sources it was grounded in."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Markdown, OptionList, Static
from textual.widgets.option_list import Option

from tui.present import source_label


def source_dict(source: Any) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    if hasattr(source, "as_dict"):
        return source.as_dict()
    return dict(vars(source))


class SourceList(OptionList):
    """The cited passages; select one (Enter or click) to read it."""

    class Chosen(Message):
        def __init__(self, source: dict[str, Any]) -> None:
            super().__init__()
            self.source = source

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sources: list[dict[str, Any]] = []

    def set_sources(self, sources: list[Any]) -> None:
        self.sources = [source_dict(s) for s in sources]
        self.clear_options()
        self.add_options([Option(source_label(s), id=str(i)) for i, s in enumerate(self.sources)])
        self.display = bool(self.sources)
        if self.sources:
            self.highlighted = 0

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.Chosen(self.sources[event.option_index]))


class Exchange(Vertical):
    """A question, the answer as Markdown (streamed through MarkdownStream), a notice, and the sources."""

    def __init__(self, question: str, answer: str = "", *, sources: list[Any] | None = None, notice: str = "",
                 meta: str = "", streaming: bool = False) -> None:
        super().__init__(classes="exchange")
        self.question = question
        self._answer = answer
        self._sources = sources or []
        self._notice = notice
        self._meta = meta
        self._streaming = streaming
        self.stream = None

    def compose(self) -> ComposeResult:
        yield Static(self.question, classes="question", markup=False)
        notice = Static(self._notice, classes="notice", markup=False)
        notice.display = bool(self._notice)
        yield notice
        yield Markdown(self._answer, classes="answer")
        yield SourceList(classes="sources")
        if self._streaming:
            yield Static("thinking…", classes="meta")
        else:
            meta = Static(self._meta, classes="meta", markup=False)
            meta.display = bool(self._meta)
            yield meta

    def on_mount(self) -> None:
        self.query_one(SourceList).set_sources(self._sources)
        if self._streaming:
            self.stream = Markdown.get_stream(self.markdown)

    @property
    def markdown(self) -> Markdown:
        return self.query_one(".answer", Markdown)

    def started(self, sources: list[Any], notice: str) -> None:
        if notice:
            label = self.query_one(".notice", Static)
            label.update(notice)
            label.display = True
        self.query_one(SourceList).set_sources(sources)
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
