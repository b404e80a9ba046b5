"""Messages that cross widget and screen boundaries. Thread workers post these; handlers run on the UI thread.

They do not bubble: each goes to the screen (or the app) that started the work and is handled there once.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message


# -- the model ------------------------------------------------------------------------------------------------
class ModelLoading(Message, bubble=False):
    """A model is being verified and loaded (`name` may be empty until it is resolved)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class ModelProgress(Message, bubble=False):
    """Hashing progress while a model is verified before load."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total


class ModelNeedsConsent(Message, bubble=False):
    """The model's license is unknown or restrictive, or it carries content warnings: ask before first use."""

    def __init__(self, entry: Any) -> None:
        super().__init__()
        self.entry = entry


class ModelReady(Message, bubble=False):
    def __init__(self, name: str, license_id: str, load_s: float, restricted: bool = False, notice: str = "") -> None:
        super().__init__()
        self.name, self.license_id, self.load_s, self.restricted = name, license_id, load_s, restricted
        self.notice = notice  # the engine fell back to a safer mode: say so once


class ModelFailed(Message, bubble=False):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class DefaultModelChanged(Message, bubble=False):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


# -- answers --------------------------------------------------------------------------------------------------
class AnswerStarted(Message, bubble=False):
    """The model is about to stream: the sources it was given and any notice to show first."""

    def __init__(self, request: int, sources: list, notice: str) -> None:
        super().__init__()
        self.request, self.sources, self.notice = request, sources, notice


class AnswerToken(Message, bubble=False):
    def __init__(self, request: int, text: str) -> None:
        super().__init__()
        self.request, self.text = request, text


class AnswerDone(Message, bubble=False):
    """Generation ended (finished or cancelled). `result` is `AnswerRun.as_dict()`."""

    def __init__(self, request: int, result: dict, conversation_id: int | None, saved_error: str = "") -> None:
        super().__init__()
        self.request, self.result, self.conversation_id, self.saved_error = request, result, conversation_id, saved_error


class AnswerFailed(Message, bubble=False):
    def __init__(self, request: int, question: str, error: str) -> None:
        super().__init__()
        self.request, self.question, self.error = request, question, error


# -- conversations --------------------------------------------------------------------------------------------
class ConversationLoaded(Message, bubble=False):
    def __init__(self, conversation_id: int, title: str, messages: list[dict]) -> None:
        super().__init__()
        self.conversation_id, self.title, self.messages = conversation_id, title, messages


# -- the knowledge base ---------------------------------------------------------------------------------------
class KBStats(Message, bubble=False):
    """Fresh knowledge-base figures; `stats` is None when this build has no knowledge base."""

    def __init__(self, stats: dict | None, documents: list[dict] | None = None, error: str = "") -> None:
        super().__init__()
        self.stats, self.documents, self.error = stats, documents, error


class IngestUpdate(Message, bubble=False):
    def __init__(self, progress: Any) -> None:
        super().__init__()
        self.progress = progress


class IngestFinished(Message, bubble=False):
    def __init__(self, report: Any, cancelled: bool) -> None:
        super().__init__()
        self.report, self.cancelled = report, cancelled


class IngestFailed(Message, bubble=False):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


# -- the model library ----------------------------------------------------------------------------------------
class ModelsListed(Message, bubble=False):
    def __init__(self, entries: list, default: str) -> None:
        super().__init__()
        self.entries, self.default = entries, default


class VerifyProgress(Message, bubble=False):
    def __init__(self, name: str, done: int, total: int) -> None:
        super().__init__()
        self.name, self.done, self.total = name, done, total


class VerifyFinished(Message, bubble=False):
    def __init__(self, name: str, error: str = "") -> None:
        super().__init__()
        self.name, self.error = name, error


class ModelImported(Message, bubble=False):
    def __init__(self, name: str = "", error: str = "") -> None:
        super().__init__()
        self.name, self.error = name, error
