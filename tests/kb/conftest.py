"""Knowledge-base fixtures: a KnowledgeBase on the real pinned embedder, and a small real-format library."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.models import packs
from kb import KnowledgeBase
from kb.embedder import Embedder
from tests.kb import fixtures


@pytest.fixture(scope="session")
def embedder_files() -> tuple[Path, Path]:
    return packs.EMBEDDER_ONNX.locate(), packs.EMBEDDER_TOKENIZER.locate()


@pytest.fixture(scope="session")
def reranker_files() -> tuple[Path, Path]:
    """The reranker pack's weights and tokenizer (session scope: found before tests/conftest.py hides the packs
    folder; the set-up installs the pack, so CI has it)."""
    return packs.RERANKER.locate("weights"), packs.RERANKER.locate("tokenizer")


@pytest.fixture
def make_kb(tmp_path, embedder_files):
    opened = []

    def make(directory: Path | None = None) -> KnowledgeBase:
        knowledge = KnowledgeBase(directory or tmp_path / "kb", *embedder_files)
        opened.append(knowledge)
        return knowledge

    yield make
    for knowledge in opened:
        try:
            knowledge.close()
        except Exception:  # noqa: BLE001 - closing at teardown is best effort
            pass


@pytest.fixture
def library(tmp_path) -> Path:
    """A small library in every format (the ZIM is added by the tests that need zimwriterfs)."""
    root = tmp_path / "library"
    (root / "manuals").mkdir(parents=True)
    (root / "manuals" / "water.md").write_text(
        f"# Water\n\nBasics of safe water.\n\n## Purifying with bleach\n\n{fixtures.WATER}\n\n"
        "## Boiling\n\nBring water to a rolling boil for one minute; three minutes above 2000 metres.\n")
    (root / "manuals" / "car.txt").write_text(f"CAR REPAIR\n\nJUMP STARTING\n\n{fixtures.BATTERY}\n")
    (root / "first-aid.html").write_text(
        "<html><head><title>First aid</title></head><body><nav>Home | Index</nav><h1>First aid</h1>"
        f"<h2>Burns</h2><p>{fixtures.BURN}</p><footer>copyright</footer></body></html>")
    fixtures.make_pdf(root / "power.pdf", [("Generators", fixtures.GENERATOR),
                                           ("Batteries", "Store lead-acid batteries charged and away from frost.")])
    fixtures.make_epub(root / "shelter.epub", [("Knots", "The bowline makes a fixed loop that does not slip."),
                                               ("Tarps", "Pitch a tarp as an A-frame between two trees.")])
    return root


@pytest.fixture
def embedded(monkeypatch):
    """Every text the real embedder embeds, in order (it still embeds them)."""
    texts: list[str] = []
    real = Embedder.embed

    def counting(self, batch, batch_size=4):
        texts.extend(batch)
        return real(self, batch, batch_size)

    monkeypatch.setattr(Embedder, "embed", counting)
    return texts
