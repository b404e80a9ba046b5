"""Fixtures for the terminal UI tests: real services (the real default model), a fake answerer for UI
mechanics only, a fake knowledge base for progress mechanics, and tiny GGUF files written by the `gguf` package."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
from textual.widgets import Input

from appliance.answering.rules import Decision
from appliance.services import Services
from kb.source import Source


async def wait_for(pilot, predicate: Callable[[], Any], timeout: float = 120, what: str = "condition") -> None:
    """Let the app run until `predicate()` is true (the real model can take a while on a busy 2-core box)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.05)


async def ask(pilot, question: str) -> None:
    """Type a question into the chat prompt and press Enter."""
    prompt = pilot.app.screen.query_one("#prompt", Input)
    prompt.value = question
    prompt.focus()
    await pilot.press("enter")


def notifications(app) -> list[Any]:
    return list(app._notifications)


# -- a fake answerer: for streaming and cancel mechanics, never the only test of a feature ---------------------
class FakeRun:
    """An answer with fixed pieces: implements what the shells read (appliance.answering.conversation.AnswerView)
    and the serializer the history records."""

    model_name = "fake-model"
    engine_notice = ""

    def __init__(self, question: str, pieces: list[str], delay: float, sources: list[Source], notice: str = ""):
        self.question, self.pieces, self.delay = question, pieces, delay
        self.sources, self.notice = sources, notice
        self.quotes: list = []
        self.emergency = None
        self._cancel = threading.Event()
        self.cancelled = False
        self.text = ""
        self.finished = threading.Event()
        self.stopped = ""
        self.refused = None
        self.unsupported: list[str] = []
        self.misplaced: list[str] = []
        self.decision = Decision()

    @property
    def timings(self) -> dict:
        return {"load_s": 0.1, "first_token_s": 0.01, "tokens": len(self.pieces), "tokens_per_s": 50.0}

    def tokens(self):
        out = []
        try:
            for piece in self.pieces:
                if self._cancel.is_set():
                    self.cancelled = True
                    break
                if self.delay:
                    time.sleep(self.delay)
                out.append(piece)
                yield piece
        finally:
            self.text = "".join(out)
            self.finished.set()

    def cancel(self) -> None:
        self._cancel.set()

    def as_dict(self) -> dict:
        return {
            "question": self.question, "answer": self.text, "notice": self.notice or None,
            "cancelled": self.cancelled,
            "model": {"name": self.model_name, "sha256": "0" * 64, "license": "Apache-2.0"},
            "sources": [s.as_dict() for s in self.sources],
            "timings": self.timings,
        }


class FakeAnswerer:
    """Stands in for the model: answers with fixed pieces. `calls` holds (question, earlier turns shown)."""

    def __init__(self, pieces: list[str], delay: float = 0.0, sources: list[Source] | None = None,
                 error: str | None = None):
        self.pieces, self.delay, self.sources, self.error = pieces, delay, sources or [], error
        self.calls: list[tuple[str, Any]] = []
        self.runs: list[FakeRun] = []

    def ask(self, question: str, earlier: list[dict]) -> FakeRun:
        self.calls.append((question, earlier))
        if self.error:
            from appliance.errors import ApplianceError

            raise ApplianceError(self.error)
        run = FakeRun(question, list(self.pieces), self.delay, list(self.sources))
        self.runs.append(run)
        return run


class FakeConversation:
    """appliance.answering.conversation.Conversation with the model replaced: earlier turns and records go to the real
    History, exactly as the core does."""

    def __init__(self, history, answerer: FakeAnswerer, conversation_id: int | None = None):
        self.history, self.answerer, self.id = history, answerer, conversation_id

    def ask(self, question: str, **_: Any) -> FakeRun:
        earlier = self.history.chat_messages(self.id, 6) if self.id is not None else []
        return self.answerer.ask(question, earlier)

    def record(self, run: FakeRun) -> int:
        self.id = self.history.record_exchange(run.question, run.as_dict(), self.id)
        return self.id


ANSWER_PIECES = ["Boil ", "water ", "for ", "**one ", "minute**", ".\n\n", "- let ", "it ", "cool\n", "- store ",
                 "it ", "covered"]
SOURCES = [
    Source("/library/water.md", "Water", "Purifying water", None, "Boil clear water for one minute.", 0.9, number=1),
    Source("/library/field-guide.pdf", "Field guide", "Chapter 3", 12, "Cover stored water.", 0.7, number=2),
]


class FakeServices:
    """The services the TUI is typed against (appliance.services.ShellServices): the real ones (paths, config,
    history, the model library, consents ...) with the model, through the conversation, and the knowledge base
    replaced."""

    def __init__(self, real: Services, answerer: Any = None, kb: Any = None):
        self.real, self.answerer, self.kb = real, answerer, kb
        self.paths, self.config = real.paths, real.config

    def __getattr__(self, name: str) -> Any:  # library, engine, history, consents, rules, power_profile ...
        return getattr(self.real, name)

    def conversation(self, conversation_id: int | None = None) -> Any:
        if self.answerer is None:
            return self.real.conversation(conversation_id)
        return FakeConversation(self.real.history, self.answerer, conversation_id)


def with_fakes(services: Services, answerer: Any = None, kb: Any = None) -> FakeServices:
    return FakeServices(services, answerer, kb)


@pytest.fixture
def services() -> Services:
    return Services.create()


@pytest.fixture
def fake_services(services) -> FakeServices:
    return with_fakes(services, FakeAnswerer(ANSWER_PIECES, sources=SOURCES))


# -- a fake knowledge base, for ingest-progress mechanics ------------------------------------------------------
class FakeKB:
    def __init__(self, files: int = 40, delay: float = 0.05):
        self.files, self.delay = files, delay
        self.directory = Path("/appliance-home/kb")  # where the field guide would be (it is not in this one)
        self.docs: list[dict] = [{"path": "/library/water.md", "title": "Water", "kind": "md", "chunks": 3,
                                  "added": 0}]
        self.removed: list[str] = []
        self.release = threading.Event()

    def add(self, paths, progress=None, cancel=None):
        done = 0
        for done in range(1, self.files + 1):
            if cancel is not None and cancel.is_set():
                break
            time.sleep(self.delay)
            if progress:
                progress(SimpleNamespace(files_done=done, files_total=self.files, chunks_done=done * 2,
                                         current=f"/in/file{done}.txt", rate=20.0, eta_s=1.0))
        self.docs.append({"path": str(paths[0]), "title": Path(paths[0]).name, "kind": "txt", "chunks": done * 2,
                          "added": 0})
        return SimpleNamespace(added=done, skipped=0, replaced=0, chunks=done * 2, failed=[])

    def remove(self, path):
        self.removed.append(path)
        self.docs = [d for d in self.docs if d["path"] != path]
        return 3

    def documents(self):
        return list(self.docs)

    def stats(self):
        return {"documents": len(self.docs), "chunks": sum(d["chunks"] for d in self.docs), "zims": 0,
                "size_bytes": 4096}


# -- tiny GGUF files -------------------------------------------------------------------------------------------
def write_tiny_gguf(path: Path, license: str | None = None, name: str = "tiny") -> Path:
    """A small, well-formed GGUF (one tensor) with or without a declared license."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(64)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(1)
    if license:
        writer.add_license(license)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_unknown_gguf(tmp_path) -> Path:
    return write_tiny_gguf(tmp_path / "mystery.gguf", license=None, name="mystery")


# -- async tests (modules with `pytestmark = pytest.mark.anyio`) run on asyncio through anyio's pytest plugin ----
@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
