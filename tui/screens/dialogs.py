"""Small modal dialogs: a model's license warning, a cited passage, a text prompt, a yes/no question,
and the list of past conversations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Markdown, OptionList, Static
from textual.widgets.option_list import Option

from appliance.sanitize import clean, clean_line
from kb.source import Source
from tui.present import consent_reasons, license_label, location_label


class ConsentScreen(ModalScreen[bool]):
    """Shown before a model with an unknown or restrictive license, or content warnings, is first used."""

    BINDINGS = [Binding("escape", "dismiss(False)", "Not now")]

    def __init__(self, entry: Any) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        record = self.entry.record
        lines = [f"- {reason}" for reason in consent_reasons(record)]
        note = (record.get("license") or {}).get("note")
        body = "\n".join(lines + ([f"\nLicense note: {note}"] if note else []))
        with Vertical(classes="dialog warning"):
            yield Label(f"Before you use {self.entry.name}", classes="dialog-title")
            yield Static(f"License: {license_label(record)}   Location: {location_label(self.entry)}",
                         classes="dialog-line", markup=False)
            yield Static(body, classes="dialog-body", markup=False)
            yield Static("You are responsible for using this model within its terms. Use it anyway?",
                         classes="dialog-line")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Use it", id="accept", variant="warning")
                yield Button("Not now", id="decline")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "accept")


class SourceScreen(ModalScreen[None]):
    """The passage behind one citation: file, section, page, and the text the model was given."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source

    def compose(self) -> ComposeResult:
        s = self.source
        with Vertical(classes="dialog source"):
            yield Label(clean_line(f"[{s.number}] {s.title}".strip()), classes="dialog-title", markup=False)
            yield Static(clean_line(s.location()), classes="dialog-line", markup=False)
            with VerticalScroll(classes="dialog-scroll"):
                yield Markdown(clean(s.snippet) or "_(no passage text was stored)_")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close")

    @on(Button.Pressed)
    def _close(self) -> None:
        self.dismiss()


class TextPrompt(ModalScreen[str | None]):
    """Ask for one line of text (a path, a name); Enter accepts, Escape cancels."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, placeholder: str = "", value: str = "", hint: str = "") -> None:
        super().__init__()
        self.prompt_title, self.placeholder, self.value, self.hint = title, placeholder, value, hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.prompt_title, classes="dialog-title")
            if self.hint:
                yield Static(self.hint, classes="dialog-line", markup=False)
            yield Input(value=self.value, placeholder=self.placeholder, id="text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one("#text", Input).value.strip() or None if event.button.id == "ok" else None)


class ImportPrompt(ModalScreen[dict | None]):
    """Import a GGUF file: its path, an optional name, and whether to copy it into the data folder."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Import a model file (.gguf)", classes="dialog-title")
            yield Input(placeholder="/media/usb/model.Q4_K_M.gguf", id="path")
            yield Input(placeholder="name in the library (optional)", id="name")
            yield Checkbox("Copy into the data folder (otherwise used where it is)", id="copy")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Import", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def _result(self) -> dict | None:
        path = self.query_one("#path", Input).value.strip()
        if not path:
            return None
        return {"path": path, "name": self.query_one("#name", Input).value.strip() or None,
                "copy": self.query_one("#copy", Checkbox).value}

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.dismiss(self._result())

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self._result() if event.button.id == "ok" else None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("escape", "dismiss(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-line", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, id="yes", variant="error")
                yield Button("Cancel", id="no")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


class ConversationsScreen(ModalScreen[int | None]):
    """Past conversations from the shared SQLite history: open, rename, delete."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("r", "rename", "Rename"),
        Binding("delete,d", "delete", "Delete"),
    ]

    def __init__(self, history: Any) -> None:
        super().__init__()
        self.history = history
        self.rows: list[dict] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog conversations"):
            yield Label("Conversations", classes="dialog-title")
            yield OptionList(id="conversation-list")
            yield Static("Enter open · r rename · d delete · Esc close", classes="dialog-line hint")

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        self.rows = self.history.conversations(limit=500)
        options = self.query_one(OptionList)
        highlighted = options.highlighted
        options.clear_options()
        if not self.rows:
            options.add_option(Option("No conversations yet.", disabled=True))
            return
        options.add_options([
            Option(clean_line(f"{row['title'][:60]}  ({row['messages'] // 2} Q, {_when(row['updated'])})"),
                   id=str(row["id"]))
            for row in self.rows
        ])
        options.highlighted = min(highlighted or 0, len(self.rows) - 1)

    def _current(self) -> dict | None:
        index = self.query_one(OptionList).highlighted
        return self.rows[index] if self.rows and index is not None and index < len(self.rows) else None

    @on(OptionList.OptionSelected)
    def _open(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.dismiss(int(event.option.id))

    def action_rename(self) -> None:
        row = self._current()
        if row is None:
            return

        def done(title: str | None) -> None:
            if title:
                try:
                    self.history.rename_conversation(row["id"], title)
                except Exception as exc:  # noqa: BLE001 - a failed rename is a notification, not a crash
                    self.notify(str(exc), severity="error")
                self.reload()

        self.app.push_screen(TextPrompt("Rename conversation", value=row["title"]), done)

    def action_delete(self) -> None:
        row = self._current()
        if row is None:
            return

        def done(yes: bool | None) -> None:
            if yes:
                try:
                    self.history.delete_conversation(row["id"])
                except Exception as exc:  # noqa: BLE001 - a failed delete is a notification, not a crash
                    self.notify(str(exc), severity="error")
                self.reload()

        self.app.push_screen(ConfirmScreen(f"Delete “{row['title'][:60]}” and its answers?", yes="Delete"), done)
