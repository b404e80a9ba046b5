"""The terminal UI. `create_app(services)` builds it (tests reuse it); `run_tui(services)` runs it.

Layout: one screen per area (chat, models, library, help) switched with F1-F4, one stylesheet
(appliance.tcss). Every blocking call (model load, generation, hashing, ingest) runs in a thread worker
and reports back by messages declared next to their sender (Textual's pattern); errors become notifications.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.worker import Worker, WorkerState

from appliance.services import ShellServices
from tui.screens.chat import ChatScreen
from tui.screens.dialogs import ConsentScreen
from tui.screens.help import HelpScreen
from tui.screens.library import LibraryScreen
from tui.screens.models import ModelsScreen

POWER_CHECK_S = 30  # how often the status line reads the power source again (each question reads it too)


class ApplianceApp(App):
    """The appliance's terminal UI. `services` is an `appliance.services.Services` (or a test double)."""

    CSS_PATH = "appliance.tcss"
    TITLE = "appliance"
    ENABLE_COMMAND_PALETTE = False
    MODES = {"chat": ChatScreen, "models": ModelsScreen, "library": LibraryScreen, "help": HelpScreen}
    DEFAULT_MODE = "chat"
    BINDINGS = [
        Binding("f1", "switch_mode('help')", "Help"),
        Binding("f2", "switch_mode('chat')", "Chat"),
        Binding("f3", "switch_mode('models')", "Models"),
        Binding("f4", "switch_mode('library')", "Library"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    # -- messages its workers post (handled here, on the UI thread) ------------------------------------------
    @dataclass
    class ModelLoading(Message, bubble=False):
        """A model is being verified and loaded (`name` may be empty until it is resolved)."""

        name: str

    @dataclass
    class ModelProgress(Message, bubble=False):
        """Hashing progress while a model is verified before load."""

        done: int
        total: int

    @dataclass
    class ModelNeedsConsent(Message, bubble=False):
        """The model's license is unknown or restrictive, or it carries content warnings: ask before first use."""

        entry: Any

    @dataclass
    class ModelReady(Message, bubble=False):
        name: str
        license_id: str
        load_s: float
        restricted: bool = False
        notice: str = ""  # the engine fell back to a safer mode: say so once

    @dataclass
    class ModelFailed(Message, bubble=False):
        error: str

    @dataclass
    class PowerRead(Message, bubble=False):
        """The low-power profile as just read (appliance.system.power.PowerProfile): the status line shows it."""

        profile: Any

    @dataclass
    class KBStats(Message, bubble=False):
        """Fresh knowledge-base figures; `stats` is None when the knowledge base could not be opened (`error`)."""

        stats: dict | None
        documents: list[dict] | None = None
        error: str = ""

    model_name = reactive("")
    model_license = reactive("")
    model_restricted = reactive(False)
    model_state = reactive("idle")  # idle, checking, loading, ready, failed, needs-consent, declined
    model_detail = reactive("")
    tokens_per_s: reactive[float | None] = reactive(None)
    kb_stats: reactive[dict | None] = reactive(None, always_update=True)
    kb_documents: reactive[list | None] = reactive(None, always_update=True)
    kb_available = reactive(False)
    power: reactive[Any] = reactive(None)  # the low-power profile last read (None until then)

    def __init__(self, services: ShellServices, *, preload: bool = True) -> None:
        super().__init__()
        self.services = services
        self.preload = preload
        self.consent_entry: Any = None  # a model waiting for the user's OK before first use
        self.consents = services.consents  # the same record `appliance models accept` writes
        self.first_paint_at: float | None = None
        self._kb_checked = False
        self.engine_notice_shown = ""  # the engine's fall-back notice is said once

    def on_mount(self) -> None:
        # First paint happens before anything slow: the model is verified and loaded after the first refresh.
        self.call_after_refresh(self._after_first_paint)
        self.set_interval(POWER_CHECK_S, self.refresh_power)  # unplugged while open: the status line says so

    def _after_first_paint(self) -> None:
        import time

        self.first_paint_at = time.perf_counter()
        if self.preload:
            self.prepare_model()  # the knowledge base is opened once the model is in (two cores are not many)
        else:
            self.refresh_power()
            self.refresh_kb()

    # -- the model -------------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="model")
    def prepare_model(self, name: str | None = None, consented: bool = False) -> None:
        """Resolve the default (or named) model, ask for consent if its license needs it, verify and load it."""
        services = self.services
        self.post_message(self.ModelLoading(name or ""))
        try:
            threads, _ = self.read_power().limits()  # loaded with the threads a question will ask for
            entry = services.models.resolve(name, services.config.model.default)
            if not consented and self.consents.needed(entry.info, entry.sha256):
                self.post_message(self.ModelNeedsConsent(entry))
                return
            self.post_message(self.ModelLoading(entry.name))
            loaded = services.engine.load(entry.name, progress=lambda done, total: self.post_message(
                self.ModelProgress(done, total)), threads=threads)
        except Exception as exc:  # noqa: BLE001 - a failed load is a notification, the app stays usable
            self.post_message(self.ModelFailed(str(exc)))
            return
        info = loaded.entry.info
        self.post_message(self.ModelReady(loaded.entry.name, info.license.label, loaded.load_s,
                                     restricted=bool(info.consent_reasons()), notice=loaded.notice))

    @on(ModelLoading)
    def _model_loading(self, message: "ApplianceApp.ModelLoading") -> None:
        self.model_state = "checking" if not message.name else "loading"
        if message.name:
            self.model_name = message.name
        self.model_detail = "checking…" if not message.name else "loading…"

    @on(ModelProgress)
    def _model_progress(self, message: "ApplianceApp.ModelProgress") -> None:
        if message.total:
            self.model_detail = f"verifying {100 * message.done // message.total}%"

    @on(ModelReady)
    def _model_ready(self, message: "ApplianceApp.ModelReady") -> None:
        self.model_name = message.name
        self.model_license = message.license_id
        self.model_restricted = message.restricted
        self.model_state = "ready"
        self.model_detail = ""
        if message.notice and message.notice != self.engine_notice_shown:
            self.engine_notice_shown = message.notice
            self.notify(message.notice, severity="warning", title="Engine in safe mode", timeout=15)
        self._kb_after_model()

    def _kb_after_model(self) -> None:
        if not self._kb_checked:
            self._kb_checked = True
            self.refresh_kb()

    @on(ModelFailed)
    def _model_failed(self, message: "ApplianceApp.ModelFailed") -> None:
        self.model_state = "failed"
        self.model_detail = ""
        self._kb_after_model()
        self.notify(message.error, severity="error", title="Model not loaded", timeout=12)

    @on(ModelNeedsConsent)
    def _model_needs_consent(self, message: "ApplianceApp.ModelNeedsConsent") -> None:
        self.consent_entry = message.entry
        self.model_name = message.entry.name
        self.model_state = "needs-consent"
        self._kb_after_model()
        self.ask_consent()

    def ask_consent(self, then: Callable[[], Any] | None = None) -> None:
        """Show the waiting model's license and content warnings; load it (then call `then`) only on OK."""
        entry = self.consent_entry
        if entry is None:
            if then:
                then()
            return

        def decided(accepted: bool | None) -> None:
            if not accepted:
                self.model_state = "declined"
                self.model_detail = "not loaded (license not accepted)"
                return
            try:
                self.consents.give(entry.name, entry.info, "tui", entry.sha256)
            except Exception as exc:  # noqa: BLE001 - the choice still applies to this session
                self.notify(f"Could not remember your choice: {exc}", severity="warning")
            self.consent_entry = None
            self.prepare_model(entry.name, consented=True)
            if then:
                then()

        if not isinstance(self.screen, ConsentScreen):
            self.push_screen(ConsentScreen(entry), decided)

    @on(ModelsScreen.DefaultChanged)
    def _default_changed(self, message: ModelsScreen.DefaultChanged) -> None:
        self.consent_entry = None
        self.tokens_per_s = None
        self.prepare_model(message.name)

    # -- power -----------------------------------------------------------------------------------------------
    def read_power(self) -> Any:
        """The low-power profile now (appliance.system.power.PowerProfile; `.limits()` gives a question's threads and
        max_tokens). Call it from a worker (a few small sysfs reads, `pmset` on macOS); the status line shows it."""
        profile = self.services.power_profile()
        self.post_message(self.PowerRead(profile))
        return profile

    @work(thread=True, exclusive=True, exit_on_error=False, group="power")
    def refresh_power(self) -> None:
        self.read_power()

    @on(PowerRead)
    def _power_read(self, message: "ApplianceApp.PowerRead") -> None:
        self.power = message.profile

    # -- the knowledge base ----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="kb-stats")
    def refresh_kb(self) -> None:
        self._kb_checked = True
        try:
            kb = self.services.kb  # opened on first use: in this worker, never on the UI thread
            if kb is None:
                self.post_message(self.KBStats(None))
                return
            from appliance.answering import field_guide

            self.post_message(self.KBStats(kb.stats(), field_guide.documents(kb)))
        except Exception as exc:  # noqa: BLE001 - any failure of the library becomes a status line, not a crash
            self.post_message(self.KBStats(None, None, str(exc)))
            return
        self._warm_reranker(kb)

    @staticmethod
    def _warm_reranker(kb: Any) -> None:
        """The reranker read (and hashed) in this worker, not in the first question's: only a head start, so
        anything that goes wrong here is left for the first search to name (kb.rerank says it once)."""
        try:
            kb.rerank  # noqa: B018 - the property loads it
        except Exception:  # noqa: BLE001 - see above
            pass

    @on(KBStats)
    def _kb_stats(self, message: "ApplianceApp.KBStats") -> None:
        self.kb_available = message.stats is not None
        self.kb_stats = message.stats
        self.kb_documents = message.documents
        if message.error:
            self.notify(message.error, severity="error", title="Knowledge base not available")

    # -- errors nobody caught --------------------------------------------------------------------------------
    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.notify(str(event.worker.error), severity="error", title=f"{event.worker.group or 'task'} failed")


def create_app(services: ShellServices, *, preload: bool = True) -> ApplianceApp:
    """The app factory, shared by `appliance` and the tests."""
    return ApplianceApp(services, preload=preload)


def run_tui(services: ShellServices) -> None:
    create_app(services).run()
