"""Chat: ask at the bottom, answers stream in as Markdown with their sources; Escape cancels."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState

from appliance.answering.evidence import mark_note
from appliance.errors import ConfirmationNeeded, RuleRefusal
from appliance.models.library import slug
from appliance.paths import atomic_write_text
from appliance.sanitize import clean, clean_line
from tui.screens.dialogs import ConfirmScreen, ConversationsScreen, SourceScreen
from tui.widgets.exchange import Exchange, SourceList
from tui.widgets.status import StatusLine

if TYPE_CHECKING:
    from textual import getters

    from appliance.answering.conversation import AnswerView
    from tui.app import ApplianceApp

WELCOME = """\
Ask a question below and press Enter. Answers come from the local model and,
when it has something relevant, from your own library (F4), with sources.

Esc cancels an answer · Ctrl+N new conversation · Ctrl+O past conversations
Ctrl+S export to Markdown · F1 help · F3 models · Ctrl+Q quit"""

NEW_TITLE = "New conversation"


@dataclass
class Pending:
    request: int
    question: str
    cancel: threading.Event
    exchange: Exchange
    run: Any = None  # the AnswerRun, set by the worker thread once the model starts


def answer_meta(run: AnswerView) -> str:
    timings = run.timings
    parts = [run.model_name]
    if timings.get("tokens"):
        parts.append(f"{timings['tokens']} tokens")
    if timings.get("tokens_per_s"):
        parts.append(f"{timings['tokens_per_s']:.1f} tok/s")
    if run.cancelled:
        parts.append("cancelled")
    return " · ".join(p for p in parts if p)


class ChatScreen(Screen):
    if TYPE_CHECKING:  # DOMNode.app is typed App[object]; this screen runs only in ApplianceApp (no import cycle)
        app = getters.app(ApplianceApp)

    # -- messages its answer worker posts ---------------------------------------------------------------------
    @dataclass
    class AnswerStarted(Message, bubble=False):
        """The model is about to stream: the sources it was given, the library's own sentences, any notice."""

        request: int
        sources: list
        notice: str
        quotes: list
        emergency: str = ""  # appliance.answering.emergency's notice, shown above the answer

    @dataclass
    class AnswerToken(Message, bubble=False):
        request: int
        text: str

    @dataclass
    class AnswerDone(Message, bubble=False):
        """Generation ended (finished or cancelled): the typed run (AnswerView), read, never serialized."""

        request: int
        run: AnswerView
        conversation_id: int | None
        saved_error: str = ""

    @dataclass
    class AnswerFailed(Message, bubble=False):
        request: int
        question: str
        error: str

    @dataclass
    class AnswerRefused(Message, bubble=False):
        """One of the owner's rules refused the question (nothing was loaded) or a passage, or the owner said no
        to a rule that asks for a confirmation (the dialog opens while the worker waits: _confirm_in_dialog)."""

        request: int
        question: str
        rule: str
        message: str

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", show=False),
        Binding("ctrl+n", "new", "New"),
        Binding("ctrl+o", "conversations", "History"),
        Binding("ctrl+s", "export", "Export"),
        Binding("pageup", "scroll_log(-1)", "Scroll up", show=False),
        Binding("pagedown", "scroll_log(1)", "Scroll down", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.conversation: Any = None  # appliance.answering.conversation.Conversation: the core this screen calls
        self.pending: Pending | None = None
        self.requests = 0

    @property
    def conversation_id(self) -> int | None:
        return self.conversation.id if self.conversation is not None else None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="log", can_focus=False) as log:  # Tab goes prompt -> sources; PgUp/PgDn scroll
            log.border_title = NEW_TITLE
            yield Static(WELCOME, id="welcome")
        yield StatusLine(id="status")
        yield Input(placeholder="Ask a question and press Enter", id="prompt")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.conversation = self.app.services.conversation()
        self.query_one("#prompt", Input).focus()

    @property
    def log_view(self) -> VerticalScroll:
        return self.query_one("#log", VerticalScroll)

    @property
    def prompt(self) -> Input:
        return self.query_one("#prompt", Input)

    # -- asking ----------------------------------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    async def submit(self, event: Input.Submitted) -> None:
        question = event.value.strip()
        if not question:
            return
        if self.pending is not None:
            self.notify("Still answering the last question; Esc cancels it.", severity="warning")
            return
        if self.app.consent_entry is not None:  # the model's license must be shown before its first use
            self.app.ask_consent(lambda: self.call_later(self.start, question))
            return
        await self.start(question)

    async def start(self, question: str) -> None:
        if self.pending is not None:
            return
        self.prompt.value = ""
        for welcome in self.query("#welcome"):
            await welcome.remove()
        exchange = Exchange(clean(question), streaming=True)
        await self.log_view.mount(exchange)
        self.log_view.anchor()
        self.requests += 1
        self.pending = Pending(self.requests, question, threading.Event(), exchange)
        self.answer(self.conversation, self.pending)

    @work(thread=True, exclusive=True, exit_on_error=False, group="answer")
    def answer(self, conversation: Any, pending: Pending) -> None:
        """Runs in a thread: ask within the conversation (load if needed, retrieve, stream), then record it.
        Talks back only through messages."""
        request = pending.request
        try:
            # The power source is read at each question (unplugged since the last one: fewer threads, shorter
            # answers, as `appliance ask` does).
            threads, max_tokens = self.app.read_power().limits()
            run = conversation.ask(pending.question, threads=threads, max_tokens=max_tokens,
                                   confirm=lambda exc: self._confirm_in_dialog(exc, pending))
        except RuleRefusal as exc:
            self.post_message(self.AnswerRefused(request, pending.question, exc.rule, str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
            self.post_message(self.AnswerFailed(request, pending.question, str(exc)))
            return
        pending.run = run
        if pending.cancel.is_set():
            run.cancel()
        self.post_message(self.AnswerStarted(request, list(run.sources), run.notice, list(run.quotes),
                                             run.emergency.text if run.emergency is not None else ""))
        try:
            for piece in run.tokens():
                self.post_message(self.AnswerToken(request, piece))
        except Exception as exc:  # noqa: BLE001 - any engine failure ends this answer with a message
            self.post_message(self.AnswerFailed(request, pending.question, str(exc)))
            return
        saved, error = None, ""
        if not run.cancelled:
            try:
                saved = conversation.record(run)
            except Exception as exc:  # noqa: BLE001 - the answer was delivered; say it was not saved
                error = str(exc)
        self.post_message(self.AnswerDone(request, run, saved, error))

    def _confirm_in_dialog(self, exc: ConfirmationNeeded, pending: Pending) -> bool:
        """Conversation.ask's `confirm`, from the answer worker's thread: the dialog opens on the app's loop and
        this thread waits for the owner's answer (Esc on the chat cancels the wait: no)."""
        answer: dict[str, bool] = {}
        done = threading.Event()

        def answered(yes: bool | None) -> None:
            answer["yes"] = bool(yes)
            done.set()

        self.app.call_from_thread(self.app.push_screen, ConfirmScreen(clean_line(f"{exc}. Ask anyway?"),
                                                                      yes="Ask anyway"), answered)
        while not done.wait(0.1):
            if pending.cancel.is_set():
                return False
        return answer["yes"]

    def _current(self, request: int) -> Pending | None:
        return self.pending if self.pending is not None and self.pending.request == request else None

    @on(AnswerStarted)
    def _started(self, message: "ChatScreen.AnswerStarted") -> None:
        if pending := self._current(message.request):
            pending.exchange.started(message.sources, message.notice, message.quotes, message.emergency)

    @on(AnswerToken)
    async def _token(self, message: "ChatScreen.AnswerToken") -> None:
        if pending := self._current(message.request):
            await pending.exchange.write(clean(message.text))

    @on(AnswerDone)
    async def _done(self, message: "ChatScreen.AnswerDone") -> None:
        pending = self._current(message.request)
        if pending is None:
            return
        self.pending = None
        run = message.run
        await pending.exchange.finish(clean(run.text), clean_line(answer_meta(run)))
        pending.exchange.show_unsupported(run.unsupported, run.misplaced)
        if run.stopped:
            self.notify(f"Stopped: {run.stopped}.", severity="warning", title="Answer cut short")
        if run.refused is not None:
            self.notify(clean_line(f"Rule {run.refused.rule!r}: {run.refused.message or run.refused.why}"),
                        severity="warning", title="The rest of the answer was withheld", timeout=15)
        for match in run.decision.warnings:
            self.notify(clean_line(f"Rule {match.rule!r}: {match.message or match.why}"), severity="warning",
                        title="Owner's rule")
        timings = run.timings
        if timings.get("tokens_per_s"):
            self.app.tokens_per_s = timings["tokens_per_s"]
        if message.conversation_id is not None and self.log_view.border_title == NEW_TITLE:
            self.log_view.border_title = clean_line(pending.question[:70])
        if message.saved_error:
            self.notify(f"Not saved to history: {message.saved_error}", severity="warning")
        if run.engine_notice and run.engine_notice != self.app.engine_notice_shown:
            self.app.engine_notice_shown = run.engine_notice
            self.notify(run.engine_notice, severity="warning", title="Engine in safe mode", timeout=15)

    @on(AnswerFailed)
    async def _failed(self, message: "ChatScreen.AnswerFailed") -> None:
        pending = self._current(message.request)
        if pending is None:
            return
        self.pending = None
        await pending.exchange.abandon()
        if not self.prompt.value:
            self.prompt.value = message.question
        self.notify(message.error, severity="error", title="Could not answer", timeout=10)

    @on(AnswerRefused)
    async def _refused(self, message: "ChatScreen.AnswerRefused") -> None:
        """A refusal (or a no in the confirmation dialog) is a notice, and the question stays in the prompt."""
        pending = self._current(message.request)
        if pending is None:
            return
        self.pending = None
        await pending.exchange.abandon()
        if not self.query(Exchange):
            await self.log_view.mount(Static(WELCOME, id="welcome"))
        self._put_back(message.question)
        self.notify(clean_line(message.message), severity="warning", title="Refused by the owner's rules",
                    timeout=10)

    def _put_back(self, question: str) -> None:
        self.prompt.value = question
        self.prompt.cursor_position = len(question)
        self.prompt.focus()

    @on(Worker.StateChanged)
    async def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "answer" and event.state == WorkerState.ERROR:
            event.stop()
        if event.worker.group == "answer" and event.state == WorkerState.ERROR and self.pending is not None:
            pending, self.pending = self.pending, None
            await pending.exchange.abandon()
            self.prompt.value = self.prompt.value or pending.question
            self.notify(str(event.worker.error), severity="error", title="Could not answer")

    async def action_cancel(self) -> None:
        """Stop the answer being generated and put the question back in the prompt."""
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        pending.cancel.set()
        if pending.run is not None:
            pending.run.cancel()
        await pending.exchange.abandon()
        self.prompt.value = pending.question
        self.prompt.cursor_position = len(pending.question)
        self.prompt.focus()
        if not self.query(Exchange):
            await self.log_view.mount(Static(WELCOME, id="welcome"))

    def action_scroll_log(self, direction: int) -> None:
        if direction < 0:
            self.log_view.scroll_page_up(animate=False)
        else:
            self.log_view.scroll_page_down(animate=False)

    # -- sources ---------------------------------------------------------------------------------------------
    @on(SourceList.Chosen)
    def _show_source(self, message: SourceList.Chosen) -> None:
        self.app.push_screen(SourceScreen(message.source))

    # -- conversations ---------------------------------------------------------------------------------------
    async def action_new(self) -> None:
        await self.action_cancel()
        self.prompt.value = ""
        await self.clear()
        await self.log_view.mount(Static(WELCOME, id="welcome"))
        self.prompt.focus()

    async def clear(self) -> None:
        await self.log_view.remove_children()
        self.conversation = self.app.services.conversation()
        self.log_view.border_title = NEW_TITLE

    def action_conversations(self) -> None:
        history = self.app.services.history

        async def chosen(conversation_id: int | None) -> None:
            if conversation_id is not None:
                await self.open_conversation(conversation_id)
            elif self.conversation_id is not None and history.conversation(self.conversation_id) is None:
                await self.action_new()  # the open conversation was deleted

        self.app.push_screen(ConversationsScreen(history), chosen)

    async def open_conversation(self, conversation_id: int) -> None:
        history = self.app.services.history
        conversation = history.conversation(conversation_id)
        if conversation is None:
            self.notify(f"Conversation {conversation_id} no longer exists.", severity="warning")
            return
        await self.action_cancel()
        await self.clear()
        exchanges, question = [], None
        for message in history.messages(conversation_id):
            if message["role"] == "user":
                question = message["content"]
            elif question is not None:
                exchanges.append(Exchange(clean(question), clean(message["content"]), sources=message["sources"],
                                          quotes=message["details"].get("quotes") or [],
                                          unsupported=[c["sentence"] for c in message["details"].get("claims")
                                                       or [] if not c.get("supported")],
                                          misplaced=[mark_note(c["sentence"], c["wrong_marks"], c["sources"])
                                                     for c in message["details"].get("claims") or []
                                                     if c.get("wrong_marks")],
                                          meta=message.get("model") or ""))
                question = None
        await self.log_view.mount_all(exchanges)
        self.conversation = self.app.services.conversation(conversation_id)
        self.log_view.border_title = clean_line(conversation["title"][:70])
        self.log_view.anchor()
        self.prompt.focus()

    def action_export(self) -> None:
        if self.conversation_id is None:
            self.notify("Nothing to export yet: ask something first.", severity="warning")
            return
        services = self.app.services
        try:
            text = services.history.export_markdown(self.conversation_id)
            conversation = services.history.conversation(self.conversation_id) or {"title": "conversation"}
            folder = services.paths.home / "exports"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{slug(conversation['title'])[:40]}-{self.conversation_id}.md"
            atomic_write_text(target, text)
        except Exception as exc:  # noqa: BLE001 - a failed export is a notification, not a crash
            self.notify(str(exc), severity="error", title="Export failed")
            return
        self.notify(f"Saved to {target}", title="Exported", timeout=8)
