"""The status line under the chat: offline state, model and license badge, tokens/s, knowledge-base size; and a
second line while the low-power profile is on (battery: fewer threads, shorter answers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from tui.present import kb_label, power_label, tokens_label

if TYPE_CHECKING:
    from textual import getters

    from tui.app import ApplianceApp


class StatusLine(Static):
    """Follows the app's model and knowledge-base state (reactives on the App) and redraws itself."""

    if TYPE_CHECKING:  # DOMNode.app is typed App[object]; this widget runs only in ApplianceApp (no import cycle)
        app = getters.app(ApplianceApp)

    WATCHED = ("model_name", "model_license", "model_state", "model_detail", "tokens_per_s", "kb_stats", "power")

    _lines = 1  # the stylesheet's height

    def on_mount(self) -> None:
        for name in self.WATCHED:
            self.watch(self.app, name, self._changed, init=False)
        self._changed()

    def _changed(self, *_: object) -> None:
        text = self.render_status()
        lines = len(text.plain.splitlines()) or 1
        if lines != self._lines:
            self._lines = lines
            self.styles.height = lines
        self.update(text)

    def render_status(self) -> Text:
        app = self.app
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" ● offline ", style="bold reverse green")
        text.append("  ")
        state = app.model_state
        name = app.model_name or "model"
        if state == "ready":
            text.append(name, style="bold")
            text.append(" ")
            badge_style = "reverse green" if app.model_license not in ("UNKNOWN", "CONFLICT", "") else "reverse yellow"
            if getattr(app, "model_restricted", False):
                badge_style = "reverse yellow"
            text.append(f" {app.model_license or '?'} ", style=badge_style)
        elif state in ("checking", "loading"):
            text.append(f"{name} ", style="bold")
            text.append(app.model_detail or "loading…", style="italic")
        elif state == "failed":
            text.append("no model loaded", style="bold red")
            text.append(" (F3: Models)", style="dim")
        elif state == "needs-consent":
            text.append(f"{name} ", style="bold")
            text.append("waiting for your OK (license)", style="yellow")
        else:
            text.append(f"{name} ", style="bold")
            text.append(app.model_detail or "not loaded", style="dim")
        text.append("  │  ", style="dim")
        text.append(tokens_label(app.tokens_per_s))
        text.append("  │  ", style="dim")
        text.append(kb_label(app.kb_stats))
        power = power_label(app.power)
        if power:  # a line of its own: on 80 columns the first one is already full
            text.append("\n")
            text.append(f" {power}", style="bold yellow")
        return text
