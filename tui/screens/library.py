"""Library: the knowledge base's documents and ZIM archives; add a file or folder (with progress), remove."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, ProgressBar, Static

from appliance.sanitize import clean_line
from tui.present import guide_text, human_size, short_path
from tui.screens.dialogs import ConfirmScreen, TextPrompt

if TYPE_CHECKING:
    from textual import getters

    from tui.app import ApplianceApp

KB_UNAVAILABLE = ("The knowledge base could not be opened (the notification says why).\n"
                  "Chat still works: the model answers alone, without sources.")
EMPTY = "The library is empty. Press a to add a file or a folder (txt, md, html, pdf, epub, zim)."


def progress_text(progress: Any) -> str:
    parts = [f"{progress.files_done}/{progress.files_total} files", f"{progress.chunks_done} chunks"]
    if getattr(progress, "rate", None):
        parts.append(f"{progress.rate:.1f} chunks/s")
    if getattr(progress, "eta_s", None) is not None:
        parts.append(f"about {progress.eta_s:.0f} s left")
    current = getattr(progress, "current", "")
    if current:
        parts.append(Path(str(current)).name)
    stage, inside, of = getattr(progress, "stage", ""), getattr(progress, "file_chunks_done", 0), \
        getattr(progress, "file_chunks", 0)
    if stage:  # within a large file: what is being done to it, and how far the embedding is
        parts.append(f"{stage} {inside}/{of}" if of else stage)
    return " · ".join(parts)


def report_text(report: Any) -> str:
    text = (f"{report.added} added, {report.replaced} replaced, {report.skipped} unchanged, "
            f"{report.chunks} chunks")
    if report.failed:
        text += f"; {len(report.failed)} failed: " + "; ".join(f"{Path(p).name}: {why}" for p, why in report.failed[:3])
    return text


def kind_text(doc: dict) -> str:
    """The Kind column: the format, and the state when the source is not what was added ("zim CHANGED, not
    searched"), as kb.provenance named it."""
    kind = str(doc.get("kind", ""))
    state = doc.get("state") or {}
    if not state.get("fix"):
        return kind
    return f"{kind} {str(state.get('state', '')).upper()}" + ("" if state.get("searched", True) else ", not searched")


def _added(value: Any) -> str:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d")
    return str(value or "")[:10]


class LibraryScreen(Screen):
    if TYPE_CHECKING:  # DOMNode.app is typed App[object]; this screen runs only in ApplianceApp (no import cycle)
        app = getters.app(ApplianceApp)

    # -- messages its ingest worker posts ---------------------------------------------------------------------
    @dataclass
    class IngestUpdate(Message, bubble=False):
        progress: Any

    @dataclass
    class IngestFinished(Message, bubble=False):
        report: Any
        cancelled: bool

    @dataclass
    class IngestFailed(Message, bubble=False):
        error: str

    BINDINGS = [
        Binding("a", "add", "Add"),
        Binding("r,delete", "remove", "Remove"),
        Binding("escape", "stop", "Stop adding", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.documents: list[dict] = []
        self.cancel_ingest: threading.Event | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="library-body") as body:
            body.border_title = "Library"
            yield Static("", id="kb-summary", markup=False)
            yield Static("", id="kb-guide", markup=False)
            yield DataTable(id="documents", cursor_type="row", zebra_stripes=True)
            yield Static(KB_UNAVAILABLE, id="kb-empty", markup=False)
            with Horizontal(id="ingest"):
                yield ProgressBar(id="ingest-bar", show_eta=False)
                yield Label("", id="ingest-label", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("Title", "Kind", "Chunks", "Added", "Path")
        self.query_one("#ingest").display = False
        self.query_one("#kb-guide").display = False
        self.watch(self.app, "kb_documents", self._refresh, init=False)
        self.watch(self.app, "kb_stats", self._refresh, init=False)
        self._refresh()
        self.app.refresh_kb()

    def _refresh(self, *_: Any) -> None:
        app = self.app
        stats = app.kb_stats
        summary = self.query_one("#kb-summary", Static)
        empty = self.query_one("#kb-empty", Static)
        table = self.query_one(DataTable)
        if stats is None:
            summary.update("")
            empty.update(KB_UNAVAILABLE)
            empty.display, table.display = True, False
            return
        summary.update(f"{stats.get('documents', 0)} documents · {stats.get('zims', 0)} ZIM archives · "
                       f"{stats.get('chunks', 0)} chunks · {human_size(stats.get('size_bytes'))}")
        self.documents = list(app.kb_documents or [])
        guide = self.query_one("#kb-guide", Static)
        listing = next((doc["field_guide"] for doc in self.documents if "field_guide" in doc), None)
        guide.update(guide_text(listing) if listing else "")
        guide.display = listing is not None
        empty.update(EMPTY)
        empty.display, table.display = not self.documents, bool(self.documents)
        row = table.cursor_row
        table.clear()
        for doc in self.documents:
            table.add_row(clean_line(str(doc.get("title") or Path(str(doc.get("path"))).name)[:40]),
                          kind_text(doc), str(doc.get("chunks", "")), _added(doc.get("added")),
                          clean_line(short_path(doc.get("path", ""))),
                          key=str(doc.get("path")))
        if self.documents:
            table.move_cursor(row=min(row or 0, len(self.documents) - 1))

    # -- add -------------------------------------------------------------------------------------------------
    def action_add(self) -> None:
        if not self.app.kb_available:
            self.notify(KB_UNAVAILABLE, severity="warning")
            return
        if self.cancel_ingest is not None:
            self.notify("Already adding files; Esc stops it.", severity="warning")
            return

        def chosen(path: str | None) -> None:
            if path:
                self.start_ingest([Path(path).expanduser()])

        self.app.push_screen(TextPrompt("Add to the library", "~/Documents/manuals",
                                        hint="A file or a folder (everything readable inside is added)."), chosen)

    def start_ingest(self, paths: list[Path]) -> None:
        self.cancel_ingest = threading.Event()
        self.query_one("#ingest").display = True
        self.query_one("#ingest-bar", ProgressBar).update(total=None, progress=0)
        self.query_one("#ingest-label", Label).update(f"reading {paths[0].name}…")
        self.ingest(paths, self.cancel_ingest)

    @work(thread=True, exclusive=True, exit_on_error=False, group="ingest")
    def ingest(self, paths: list[Path], cancel: threading.Event) -> None:
        try:
            kb = self.app.services.kb
            report = kb.add(paths, progress=lambda p: self.post_message(self.IngestUpdate(p)), cancel=cancel)
        except Exception as exc:  # noqa: BLE001 - a failed add is a notification, not a crash
            self.post_message(self.IngestFailed(str(exc)))
            return
        self.post_message(self.IngestFinished(report, cancel.is_set()))

    @on(IngestUpdate)
    def _ingest_update(self, message: "LibraryScreen.IngestUpdate") -> None:
        progress = message.progress
        done = getattr(progress, "fraction", progress.files_done)  # moves within a large file too
        self.query_one("#ingest-bar", ProgressBar).update(total=max(progress.files_total, 1), progress=done)
        self.query_one("#ingest-label", Label).update(progress_text(progress))

    @on(IngestFinished)
    def _ingest_finished(self, message: "LibraryScreen.IngestFinished") -> None:
        self.cancel_ingest = None
        self.query_one("#ingest").display = False
        self.query_one("#kb-guide").display = False
        title = "Stopped adding" if message.cancelled else "Added to the library"
        self.notify(report_text(message.report), title=title, timeout=10,
                    severity="warning" if message.report.failed else "information")
        self.app.refresh_kb()

    @on(IngestFailed)
    def _ingest_failed(self, message: "LibraryScreen.IngestFailed") -> None:
        self.cancel_ingest = None
        self.query_one("#ingest").display = False
        self.query_one("#kb-guide").display = False
        self.notify(message.error, severity="error", title="Could not add", timeout=12)
        self.app.refresh_kb()

    def action_stop(self) -> None:
        if self.cancel_ingest is not None:
            self.cancel_ingest.set()
            self.query_one("#ingest-label", Label).update("stopping after the current file…")

    # -- remove ----------------------------------------------------------------------------------------------
    def action_remove(self) -> None:
        table = self.query_one(DataTable)
        if not self.documents or table.cursor_row is None or table.cursor_row >= len(self.documents):
            return
        doc = self.documents[table.cursor_row]

        def decided(yes: bool | None) -> None:
            if yes:
                self.remove_document(str(doc["path"]))

        self.app.push_screen(ConfirmScreen(f"Remove {clean_line(short_path(doc['path']))} from the library?\n"
                                           "(The file itself is not touched.)", yes="Remove"), decided)

    @work(thread=True, exclusive=True, exit_on_error=False, group="kb-remove")
    def remove_document(self, path: str) -> None:
        try:
            removed = self.app.services.kb.remove(path)
        except Exception as exc:  # noqa: BLE001 - a failed removal is a notification, not a crash
            self.app.call_from_thread(self.notify, str(exc), severity="error", title="Could not remove")
            return
        self.app.call_from_thread(self.notify, f"Removed {removed} chunks of {Path(path).name}.", title="Removed")
        self.app.call_from_thread(self.app.refresh_kb)
