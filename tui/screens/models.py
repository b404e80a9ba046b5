"""Models: the library with license, commercial use, verified state and location; verify, import, set default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, ProgressBar, Static

from tui.messages import DefaultModelChanged, ModelImported, ModelsListed, VerifyFinished, VerifyProgress
from tui.present import (
    commercial_label, consent_reasons, human_size, license_label, location_label, short_path, verified_label,
)
from tui.screens.dialogs import ConsentScreen, ImportPrompt

COLUMNS = ("Name", "License", "Family", "Commercial", "Verified", "Location")


def describe(entry: Any, default: str) -> str:
    """The details panel for one model: everything the table abbreviates, warnings first and plainly."""
    record = entry.record
    lic = record.get("license") or {}
    lines = []
    reasons = consent_reasons(record)
    for reason in reasons:
        lines.append(f"⚠ {reason}")
    lines.append(f"{entry.name}{'  (default)' if entry.name == default else ''}")
    declared = ", ".join(f"{d.get('value')} (from {d.get('from')})" for d in lic.get("declared", [])) or "nothing"
    lines.append(f"License: {license_label(record)} · family {lic.get('family', 'unknown')} · "
                 f"commercial use: {commercial_label(record)} · declared: {declared}")
    if lic.get("note"):
        lines.append(f"Note: {lic['note']}")
    file = record.get("file") or {}
    lineage = record.get("lineage") or {}
    lines.append(f"File: {short_path(entry.path)} · {human_size(file.get('size'))} · "
                 f"{lineage.get('quantization') or '?'} · sha256 {str(file.get('sha256', ''))[:16]}…")
    return "\n".join(lines)


class ModelsScreen(Screen):
    BINDINGS = [
        Binding("v", "verify", "Verify"),
        Binding("i", "import_model", "Import"),
        Binding("d", "set_default", "Set default"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[Any] = []
        self.default = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="models-body") as body:
            body.border_title = "Models"
            yield DataTable(id="models", cursor_type="row", zebra_stripes=True)
            yield Static("Loading the model library…", id="model-details", markup=False)
            with Horizontal(id="model-progress"):
                yield Label("", id="model-progress-label")
                yield ProgressBar(id="model-progress-bar", show_eta=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        self.query_one("#model-progress").display = False
        self.load_entries()

    def on_screen_resume(self) -> None:
        if self.entries:
            self.load_entries()

    @work(thread=True, exclusive=True, exit_on_error=False, group="models-list")
    def load_entries(self) -> None:
        """library.entries() hashes the bundled model the first time a data dir is used: a worker's job."""
        services = self.app.services
        try:
            entries = services.library.entries()
            for entry in entries:
                entry.record  # read each manifest here, not on the UI thread
            default = services.library.default_name(services.config.model.default)
        except Exception as exc:  # noqa: BLE001
            self.app.call_from_thread(self.notify, str(exc), severity="error", title="Model library")
            return
        self.post_message(ModelsListed(entries, default))

    @on(ModelsListed)
    def _listed(self, message: ModelsListed) -> None:
        self.entries, self.default = message.entries, message.default
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for entry in self.entries:
            try:
                record = entry.record
                cells = (
                    f"{entry.name}{' *' if entry.name == self.default else ''}",
                    license_label(record), (record.get("license") or {}).get("family", "unknown"),
                    commercial_label(record), verified_label(entry), location_label(entry),
                )
            except Exception as exc:  # noqa: BLE001 - a damaged manifest is shown, not fatal
                cells = (entry.name, "UNKNOWN", "?", "?", f"damaged: {exc}"[:30], location_label(entry))
            table.add_row(*cells, key=entry.name)
        if self.entries:
            table.move_cursor(row=min(row, len(self.entries) - 1))
        self._show_details()

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_details()

    def selected(self) -> Any | None:
        table = self.query_one(DataTable)
        if not self.entries or table.cursor_row is None or table.cursor_row >= len(self.entries):
            return None
        return self.entries[table.cursor_row]

    def _show_details(self) -> None:
        details = self.query_one("#model-details", Static)
        entry = self.selected()
        if entry is None:
            details.update("No models registered. Press i to import a .gguf file.")
            return
        try:
            text = describe(entry, self.default)
            warn = bool(consent_reasons(entry.record)) or entry.quarantined or not entry.available
        except Exception as exc:  # noqa: BLE001
            text, warn = f"{entry.name}: the model record cannot be read ({exc})", True
        details.set_class(warn, "warning")
        details.update(text)

    # -- progress --------------------------------------------------------------------------------------------
    def _progress(self, label: str, done: int | None = None, total: int | None = None) -> None:
        self.query_one("#model-progress").display = True
        self.query_one("#model-progress-label", Label).update(label)
        self.query_one("#model-progress-bar", ProgressBar).update(total=total, progress=done or 0)

    def _progress_done(self) -> None:
        self.query_one("#model-progress").display = False

    # -- verify ----------------------------------------------------------------------------------------------
    def action_verify(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        self._progress(f"verifying {entry.name} ", 0, entry.total_size if entry.available else None)
        self.verify(entry.name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="verify")
    def verify(self, name: str) -> None:
        library = self.app.services.library
        try:
            entry = library.resolve(name)
            library.verify(entry, lambda done, total: self.post_message(VerifyProgress(name, done, total)))
        except Exception as exc:  # noqa: BLE001
            self.post_message(VerifyFinished(name, str(exc)))
            return
        self.post_message(VerifyFinished(name))

    @on(VerifyProgress)
    def _verify_progress(self, message: VerifyProgress) -> None:
        self._progress(f"verifying {message.name} ", message.done, message.total)

    @on(VerifyFinished)
    def _verify_finished(self, message: VerifyFinished) -> None:
        self._progress_done()
        if message.error:
            self.notify(message.error, severity="error", title=f"{message.name}: verification failed", timeout=12)
        else:
            self.notify(f"{message.name}: sha256 matches the manifest.", title="Verified")
        self.load_entries()

    # -- import ----------------------------------------------------------------------------------------------
    def action_import_model(self) -> None:
        def chosen(answer: dict | None) -> None:
            if answer:
                self._progress(f"hashing {Path(answer['path']).name} ")
                self.import_model(answer["path"], answer["name"], answer["copy"])

        self.app.push_screen(ImportPrompt(), chosen)

    @work(thread=True, exclusive=True, exit_on_error=False, group="import")
    def import_model(self, path: str, name: str | None, copy: bool) -> None:
        library = self.app.services.library
        try:
            entry = library.register(Path(path).expanduser(), name=name, mode="copy" if copy else "in-place",
                                     progress=lambda done, total: self.post_message(VerifyProgress(
                                         Path(path).name, done, total)))
        except Exception as exc:  # noqa: BLE001
            self.post_message(ModelImported(error=str(exc)))
            return
        self.post_message(ModelImported(entry.name))

    @on(ModelImported)
    def _imported(self, message: ModelImported) -> None:
        self._progress_done()
        if message.error:
            self.notify(message.error, severity="error", title="Import failed", timeout=12)
            return
        self.notify(f"{message.name} is in the library.", title="Imported")
        self.load_entries()

    # -- default ---------------------------------------------------------------------------------------------
    def action_set_default(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        if consent_reasons(entry.record) and not self.app.consents.given(entry.sha256):
            def decided(accepted: bool | None) -> None:
                if accepted:
                    self.app.consents.give(entry.sha256, entry.name)
                    self.make_default(entry.name)

            self.app.push_screen(ConsentScreen(entry), decided)
            return
        self.make_default(entry.name)

    def make_default(self, name: str) -> None:
        services = self.app.services
        try:
            setter = getattr(services.library, "set_default", None)
            if callable(setter):
                setter(name)
            from appliance.config import Config, set_value

            set_value(services.paths.config, "model.default", name)
            services.config.model.default = Config.load(services.paths.config).model.default
        except Exception as exc:  # noqa: BLE001
            self.notify(str(exc), severity="error", title="Default not changed")
            return
        self.notify(f"{name} is now the default model; loading it.", title="Default model")
        self.app.post_message(DefaultModelChanged(name))
        self.load_entries()
