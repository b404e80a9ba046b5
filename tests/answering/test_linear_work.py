"""Work linear in the input (issue 24) on the answering side: the owner's rules on long texts, the answer gate on a
long streamed answer, and the sanitizer, measured with tests/work.py (4x the input may cost at most 8x the time).

Found: AnswerGate searched all the held text again at every piece and copied it (`held += piece`): a run-on answer
of 32,000 pieces took 6.4 s (8,000: 0.35 s, x18); now 0.01 s.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from appliance.answering.rules import AnswerGate, Rule, RuleBook
from appliance.sanitize import clean, clean_line
from tests.work import assert_linear

pytestmark = pytest.mark.timeout(600)

# derandomize: the same drawn shapes on every run, so a suite passes or fails on the tree, not on the draw
WORK = settings(max_examples=12, deadline=timedelta(seconds=30), database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PIECES = ["word ", "w{i} ", ". ", "! ", "\n", ")", "\"", "]", " ", "pipe", "bomb", "pipe bomb ", "make ", "gun ",
          "\x1b[2J", "\x9b", "\u202e", "\t", "é", "a"]
BOOK = RuleBook([
    Rule(name="words", action="warn", words=("pipe bomb", "explosive", "tripwire"), places=("question", "answer")),
    Rule(name="pattern", action="warn", patterns=(r"make\s+\w+\s+gun",), places=("question", "answer")),
])
REFUSING = RuleBook([Rule(name="stop", action="refuse", words=("forbidden",), places=("answer",))])


def units():
    return st.lists(st.sampled_from(PIECES), min_size=1, max_size=5).map("".join)


def gate_stream(text: str) -> str:
    """The text streamed into the answer gate in pieces of 5 characters, as a model's tokens arrive."""
    gate = AnswerGate(BOOK)
    out = [gate.feed(text[start:start + 5]) for start in range(0, len(text), 5)]
    out.append(gate.finish())
    return "".join(out)


@WORK
@given(unit=units())
@example(unit="word ")  # a run-on answer: no sentence end at all
@example(unit=")")
def test_the_answer_gate_rules_and_sanitizer_work_is_linear(unit):
    assert_linear(gate_stream, unit)
    assert_linear(lambda text: BOOK.check("question", text), unit)
    assert_linear(clean, unit)
    assert_linear(clean_line, unit)


def test_the_gate_releases_everything_it_was_given_and_finds_an_end_split_across_pieces():
    text = "First sentence. " + "word " * 3000 + "end." + ")" * 40 + " Last one"
    assert gate_stream(text) == text  # nothing lost, nothing added, whatever the pieces
    gate = AnswerGate(BOOK)
    assert gate.feed("One sentence") == "" and gate.feed(".") == "" and gate.feed(" Two") == "One sentence. "


def test_the_gate_still_refuses_a_sentence_behind_many_closing_marks():
    """An end hidden behind more closing marks than the gate looks back over is found later, and the text is
    checked all the same before it is released."""
    gate = AnswerGate(REFUSING)
    released = gate.feed("It is forbidden." + ")" * 40) + gate.feed(" More text. ") + gate.finish()
    assert "forbidden" not in released and gate.refusal is not None
