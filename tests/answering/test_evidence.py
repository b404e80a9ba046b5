"""The library's own words first, claims checked, loops stopped: with the real embedder, knowledge base and model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.answering.conversation import Passage
from appliance.services import Services
from tests.conftest import run_appliance

DOCS = Path(__file__).resolve().parents[2] / "scripts" / "eval" / "answers" / "docs"
QUESTION = "how many drops of bleach in a gallon of water to make it ok to drink"


@pytest.fixture
def services(appliance_home):
    services = Services.create()
    report = services.kb.add([DOCS / "water.md", DOCS / "burns.html", DOCS / "cold-house.md"])
    assert report.added == 3
    yield services
    services.engine.unload()


def _stored_chunks(services) -> list[str]:
    return [hit.text for hit in services.kb.search(QUESTION, k=50)]


@pytest.mark.slow
def test_quotes_are_verbatim_sentences_of_the_stored_passages(services):
    chunks = _stored_chunks(services)
    for quote_only in (True, False):  # alone, and beside the model's answer (its passages are focused first)
        run = services.conversation().ask(QUESTION, quote_only=quote_only, max_tokens=16)
        list(run.tokens())
        assert run.quotes, "the library answers this question"
        for quote in run.quotes:
            assert any(quote.text in chunk for chunk in chunks), quote.text
        assert any("8 drops" in q.text or "eight drops" in q.text for q in run.quotes)
        assert Path(run.quotes[0].source.path).name == "water.md"


def test_quote_only_never_loads_a_model(services):
    run = services.conversation().ask(QUESTION, quote_only=True)
    assert run.quotes and run.generation is None and services.engine._loaded is None
    # From the command line too: a default model that does not exist does not matter.
    result = run_appliance("ask", "--quote-only", "--json", QUESTION, env={"APPLIANCE_MODEL_DEFAULT": "no-such-model"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"] == "" and data["quotes"] and data["model"] is None


def test_the_support_check_tells_a_copied_sentence_from_an_invented_one(services):
    hits = services.kb.search("is boiling water enough to make it safe", k=3)
    passages = [Passage(hit.source(n), hit.text) for n, hit in enumerate(hits, start=1)]
    sources = [p.source for p in passages]
    copied = ("Boiling is the most reliable way to kill germs, including the parasites that chemical treatment "
              "struggles with.")
    assert any(copied in p.text for p in passages)
    invented = "The moon is made of green cheese and orbits the planet Jupiter every Tuesday."
    first, second = services.evidence.claims(f"{copied} [1] {invented}", passages, sources)
    assert first.text.startswith("Boiling is") and first.supported and first.sources
    assert second.text.startswith("The moon") and not second.supported and second.sources == []


@pytest.mark.slow
def test_a_real_loop_is_stopped_and_said_not_shown(appliance_home):
    # SmolLM2 with greedy sampling and no repeat penalty loops on this prompt; the guard stops it.
    env = {"APPLIANCE_MODEL_REPEAT_PENALTY": "1.0", "APPLIANCE_MODEL_TEMPERATURE": "0"}
    result = run_appliance("ask", "--no-kb", "--json", "--max-tokens", "200", "Repeat the word water forever.",
                           env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["stopped"] == "the model began repeating itself"
    assert "note: stopped: the model began repeating itself" in result.stderr
    words = data["answer"].lower().split()
    assert len(words) < 40 and data["timings"]["tokens"] < 200  # stopped early, the loop not shown
