"""Help: the keys, where the data lives, and what works offline (everything)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Markdown

from tui.present import short_path

if TYPE_CHECKING:
    from textual import getters

    from tui.app import ApplianceApp

KEYS = """\
## Keys

Everywhere
- **F1** help · **F2** chat · **F3** models · **F4** library · **Ctrl+Q** quit
- **Tab** / **Shift+Tab** move between parts of the screen; the mouse works too

Chat
- **Enter** asks the question in the prompt
- **Esc** cancels the answer being written and puts the question back in the prompt
- **Ctrl+N** new conversation · **Ctrl+O** past conversations (Enter open, r rename, d delete)
- **Ctrl+S** exports the conversation to Markdown · **PgUp** / **PgDn** scroll the answers
- **Tab** to an answer's sources, then **Enter** (or a click) shows the cited passage

Models
- **v** verify the selected model's file (sha256) · **i** import a .gguf file · **d** make it the default

Library
- **a** add a file or a folder · **r** remove the selected document · **Esc** stop adding
"""

OFFLINE = """\
## What works offline

Everything on these screens: asking, the knowledge base, verifying and importing models, history and export.
The appliance makes no network connection. Only an explicit download command on the command line
(`appliance models download ...`, where available) goes online, and only when you run it.

The status line shows **offline**, the model in use, its license, the speed of the last answer in tokens
per second, and how many documents the library holds.
"""


class HelpScreen(Screen):
    if TYPE_CHECKING:  # DOMNode.app is typed App[object]; this screen runs only in ApplianceApp (no import cycle)
        app = getters.app(ApplianceApp)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(self.text())
        yield Footer(compact=True)

    def text(self) -> str:
        paths = self.app.services.paths
        where = f"""\
## Where your data lives

Everything is in `{short_path(paths.home)}` (set `APPLIANCE_HOME` to move it):
- settings: `{short_path(paths.config)}`
- model records and copied models: `{short_path(paths.models)}`
- conversations, shared with `appliance ask`: `{short_path(paths.history)}`
- knowledge base: `{short_path(paths.kb)}`
- exported conversations: `{short_path(paths.home / "exports")}`
- llama.cpp's log: `{short_path(paths.llama_log)}`
"""
        return KEYS + "\n" + where + "\n" + OFFLINE
