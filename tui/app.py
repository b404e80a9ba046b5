"""The terminal UI: a chat screen that streams answers from the appliance's services.

Every blocking call (model load, generation) runs in a thread worker and reports back by messages.
"""

from __future__ import annotations

from textual import on, work
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Header, Input, Markdown, Static


class ChatApp(App):
    """First screen: ask a question, watch the answer stream in."""

    TITLE = "appliance"
    SUB_TITLE = "offline"
    CSS = """
    #log { height: 1fr; padding: 0 1; }
    #status { height: 1; background: $panel; padding: 0 1; }
    .question { color: $accent; text-style: bold; margin-top: 1; }
    """
    BINDINGS = [("escape", "cancel", "Cancel answer"), ("ctrl+q", "quit", "Quit")]

    class Token(Message):
        def __init__(self, widget: Markdown, text: str) -> None:
            super().__init__()
            self.widget, self.text = widget, text

    class Done(Message):
        def __init__(self, widget: Markdown, result: dict) -> None:
            super().__init__()
            self.widget, self.result = widget, result

    class Failed(Message):
        def __init__(self, error: str, question: str) -> None:
            super().__init__()
            self.error, self.question = error, question

    def __init__(self, services) -> None:
        super().__init__()
        self.services = services
        self.current_run = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="log")
        yield Static("offline · no model loaded yet", id="status")
        yield Input(placeholder="Ask a question and press Enter", id="prompt")
        yield Footer()

    @on(Input.Submitted, "#prompt")
    async def submit(self, event: Input.Submitted) -> None:
        question = event.value.strip()
        if not question or self.current_run is not None:
            return
        event.input.value = ""
        log = self.query_one("#log", VerticalScroll)
        await log.mount(Static(question, classes="question"))
        answer = Markdown("")
        await log.mount(answer)
        log.scroll_end(animate=False)
        self.current_run = True
        self.answer(question, answer)

    @work(thread=True, exclusive=True, exit_on_error=False, group="answer")
    def answer(self, question: str, widget: Markdown) -> None:
        try:
            run = self.services.answerer.ask(question)
            self.current_run = run
            for piece in run.tokens():
                self.post_message(self.Token(widget, piece))
            self.post_message(self.Done(widget, run.as_dict()))
        except Exception as exc:  # shown as a notification; the app stays usable
            self.post_message(self.Failed(str(exc), question))

    @on(Token)
    async def on_token(self, message: Token) -> None:
        await message.widget.append(message.text)
        self.query_one("#log", VerticalScroll).scroll_end(animate=False)

    @on(Done)
    def on_done(self, message: Done) -> None:
        self.current_run = None
        result = message.result
        message.widget.update(result["answer"])
        timings = result["timings"]
        self.query_one("#status", Static).update(
            f"offline · {result['model']['name']} · {result['model']['license']} · "
            f"{timings['tokens_per_s'] or 0:.1f} tokens/s"
        )

    @on(Failed)
    def on_failed(self, message: Failed) -> None:
        self.current_run = None
        self.notify(message.error, severity="error", title="Could not answer")
        self.query_one("#prompt", Input).value = message.question

    def action_cancel(self) -> None:
        run = self.current_run
        if run is not None and run is not True:
            run.cancel()


def run_tui(services) -> None:
    ChatApp(services).run()
