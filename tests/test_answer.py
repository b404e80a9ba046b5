"""Which numbered passages an answer cites."""

from __future__ import annotations

from types import SimpleNamespace

from appliance.answer import AnswerRun, Source


def _run(text: str, numbers: list[int]) -> AnswerRun:
    sources = [Source(number=n, path=f"/lib/doc{n}.md", section=f"Part {n}") for n in numbers]
    return AnswerRun("q", model=None, generation=SimpleNamespace(text=text), sources=sources)


def test_cited_sources_are_the_ones_the_text_refers_to():
    run = _run("Boil it for a minute [2]. Bleach also works [3][2].", [1, 2, 3])
    assert [s.number for s in run.cited] == [2, 3]


def test_numbers_that_name_no_passage_are_ignored():
    assert _run("See [7] and [12].", [1, 2]).cited == []
    assert _run("No citations at all.", [1]).cited == []
