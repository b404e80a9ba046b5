"""Passages in the prompt within the model's context budget, numbered as the sources are."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.grounding import KBRetriever
from appliance.services import Services
from kb.search import Hit


@dataclass
class _KB:
    hits: list[Hit]

    def search(self, query, k=5):
        return self.hits[:k]


def _hit(n: int, words: int) -> Hit:
    text = " ".join(f"word{n}x{i}" for i in range(words))
    return Hit(score=0.9, path=f"/m/{n}.md", title=f"Manual {n}", heading=f"Part {n}", page=n, snippet=text[:50],
               text=text)


def test_passages_fit_the_context_budget_with_the_real_model():
    services = Services.create()
    model = services.engine.load(None, context=512)
    assert model.context == 512
    retriever = KBRetriever(_KB([_hit(n, 150) for n in range(1, 6)]), max_tokens=128)
    sources, messages = retriever.sources_for("What does part one say?", model)
    prompt_tokens = sum(model.token_count(m["content"]) for m in messages)
    assert prompt_tokens <= 512 - 128
    assert 1 <= len(sources) < 5
    assert [s.number for s in sources] == list(range(1, len(sources) + 1))
    user = messages[-1]["content"]
    for source in sources:
        assert f"[{source.number}] (Manual {source.number}, Part {source.number}, page {source.number})" in user
    assert sources[0].cite() == "[1] /m/1.md, Part 1, page 1"


def test_no_hits_means_no_sources():
    services = Services.create()
    model = services.engine.load(None)
    sources, messages = KBRetriever(_KB([]), max_tokens=64).sources_for("anything", model)
    assert sources == [] and messages[-1]["content"] == "anything"
