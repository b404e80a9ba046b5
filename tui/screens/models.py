"""Models: the library with license, commercial use, verified state and location; verify, import, set default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, ProgressBar, Static

from appliance.sanitize import clean, clean_line
from tui.present import human_size, location_label, short_path, verified_label
from tui.screens.dialogs import ConsentScreen, ImportPrompt

if TYPE_CHECKING:
    from textual import getters

    from tui.app import ApplianceApp

COLUMNS = ("Name", "License", "Family", "Commercial", "Verified", "Location")


def describe(entry: Any, default: str) -> str:
    """The details panel for one model: everything the table abbreviates, warnings first and plainly; what the
    file declares, what its bytes establish and what you asserted are said apart."""
    info = entry.info
    lic, est = info.license, info.established
    lines = [f"⚠ {reason}" for reason in info.consent_reasons()]
    lines.append(f"{entry.name}{'  (default)' if entry.name == default else ''}")
    declared = ", ".join(f"{d.value} (from {d.origin})" for d in lic.declared) or "nothing"
    lines.append(f"License: {lic.label} ({lic.basis}) · family {lic.family} · commercial use: {lic.commercial} · "
                 f"declared: {declared}")
    if lic.established:
        lines.append(f"Established by its bytes: {lic.established.id}"
                     + (f" (text: {lic.established.text})" if lic.established.text else ""))
    if lic.user_asserted:
        lines.append(f"Yours: {lic.user_asserted.id}" + (f" ({lic.user_asserted.note})" if lic.user_asserted.note
                                                          else ""))
    if lic.note:
        lines.append(f"Note: {lic.note}")
    if est and est.statement:
        lines.append(f"Established: {est.statement} ({len(est.evidence)} evidence source(s); "
                     f"appliance models show {entry.name})")
    elif est:
        lines.append(f"Catalog: {est.note}")
    lines.append(f"File: {short_path(entry.path)} · {human_size(info.file.total_size)} · "
                 f"{info.lineage.quantization or '?'} · sha256 {info.file.sha256[:16]}…")
    return "\n".join(clean(line) for line in lines)


class ModelsScreen(Screen):
    if TYPE_CHECKING:  # DOMNode.app is typed App[object]; this screen runs only in ApplianceApp (no import cycle)
        app = getters.app(ApplianceApp)

    # -- messages it and its workers post --------------------------------------------------------------------
    @dataclass
    class DefaultChanged(Message, bubble=False):
        """The user chose another default model: the app loads it."""

        name: str

    @dataclass
    class ModelsListed(Message, bubble=False):
        entries: list
        default: str

    @dataclass
    class VerifyProgress(Message, bubble=False):
        name: str
        done: int
        total: int

    @dataclass
    class VerifyFinished(Message, bubble=False):
        name: str
        error: str = ""

    @dataclass
    class ModelImported(Message, bubble=False):
        name: str = ""
        error: str = ""

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
            entries = services.models.entries()
            for entry in entries:
                try:
                    _ = entry.info  # read each manifest here, not on the UI thread
                except Exception:  # noqa: BLE001 - a damaged manifest is shown in the list, not fatal
                    pass
            default = services.models.default_name(services.config.model.default)
        except Exception as exc:  # noqa: BLE001 - an unreadable library is shown, not a crash
            self.app.call_from_thread(self.notify, str(exc), severity="error", title="Model library")
            return
        self.post_message(self.ModelsListed(entries, default))

    @on(ModelsListed)
    def _listed(self, message: "ModelsScreen.ModelsListed") -> None:
        self.entries, self.default = message.entries, message.default
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for entry in self.entries:
            try:
                lic = entry.info.license
                cells = (
                    f"{entry.name}{' *' if entry.name == self.default else ''}",
                    clean_line(lic.label), clean_line(lic.family), lic.commercial, verified_label(entry),
                    clean_line(location_label(entry)),
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
            warn = bool(entry.info.consent_reasons()) or entry.quarantined or not entry.available
        except Exception as exc:  # noqa: BLE001 - a damaged entry is described as such, not a crash
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
        library = self.app.services.models
        try:
            entry = library.resolve(name)
            library.verify(entry, lambda done, total: self.post_message(self.VerifyProgress(name, done, total)))
        except Exception as exc:  # noqa: BLE001 - a failed check is a notification, not a crash
            self.post_message(self.VerifyFinished(name, str(exc)))
            return
        self.post_message(self.VerifyFinished(name))

    @on(VerifyProgress)
    def _verify_progress(self, message: "ModelsScreen.VerifyProgress") -> None:
        self._progress(f"verifying {message.name} ", message.done, message.total)

    @on(VerifyFinished)
    def _verify_finished(self, message: "ModelsScreen.VerifyFinished") -> None:
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
        library = self.app.services.models
        try:
            entry = library.register(Path(path).expanduser(), name=name, mode="copy" if copy else "in-place",
                                     progress=lambda done, total: self.post_message(self.VerifyProgress(
                                         Path(path).name, done, total)))
        except Exception as exc:  # noqa: BLE001 - a refused import is a notification, not a crash
            self.post_message(self.ModelImported(error=str(exc)))
            return
        self.post_message(self.ModelImported(entry.name))

    @on(ModelImported)
    def _imported(self, message: "ModelsScreen.ModelImported") -> None:
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
        consents = self.app.consents
        if consents.needed(entry.info, entry.sha256):
            def decided(accepted: bool | None) -> None:
                if accepted:
                    try:
                        consents.give(entry.name, entry.info, "tui", entry.sha256)
                    except Exception as exc:  # noqa: BLE001 - the choice still applies to this session
                        self.notify(f"Could not remember your choice: {exc}", severity="warning")
                    self.make_default(entry.name)

            self.app.push_screen(ConsentScreen(entry), decided)
            return
        self.make_default(entry.name)

    def make_default(self, name: str) -> None:
        services = self.app.services
        try:
            services.set_default_model(name)
        except Exception as exc:  # noqa: BLE001 - a refused default is a notification, not a crash
            self.notify(str(exc), severity="error", title="Default not changed")
            return
        self.notify(f"{name} is now the default model; loading it.", title="Default model")
        self.app.post_message(self.DefaultChanged(name))
        self.load_entries()
