"""The repetition guard: loops are stopped and not shown, ordinary text streams through unchanged."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.answering.repetition import RepetitionGuard, script_of


def stream(text: str, question: str = "How do I purify water?", size: int = 3) -> tuple[RepetitionGuard, str]:
    guard = RepetitionGuard(question)
    shown = ""
    for i in range(0, len(text), size):
        shown += guard.feed(text[i:i + size])
        if guard.stopped:
            break
    shown += guard.finish()
    return guard, shown


def test_ordinary_text_passes_through_whole():
    text = ("Boil clear water for one minute. At altitudes above 2,000 metres, boil it for three minutes. "
            "Let it cool, and store it in a clean, covered container. Boil clear water for one minute, then cool.")
    guard, shown = stream(text)
    assert not guard.stopped and shown == text and guard.answer == text


def test_a_phrase_said_twice_is_released_once_the_text_moves_on():
    text = ("Use the bleach that is sold for disinfecting water. Only use the bleach that is sold for disinfecting "
            "water, never scented bleach, and wait thirty minutes before drinking.")
    guard, shown = stream(text)
    assert not guard.stopped and shown == text


def test_the_answer_is_loop_is_stopped_and_not_shown():
    text = "The answer is: " * 40
    guard, shown = stream(text)
    assert guard.stopped == "the model began repeating itself"
    assert shown.count("The answer is:") <= 3
    assert guard.answer == shown


def test_a_repeated_sentence_loop_is_cut_after_its_first_occurrence():
    sentence = "Water is essential for life and must be purified before drinking. "
    guard, shown = stream("Here is what to do. " + sentence * 6)
    assert guard.stopped
    assert shown.count("essential for life") == 1
    assert guard.answer.strip().endswith("drinking.")


def test_a_tail_loop_without_spaces_is_stopped():
    guard, shown = stream("Result: " + "的" * 60, question="结果是什么")
    assert guard.stopped and len(shown) < 30


def test_drifting_into_another_script_is_stopped():
    guard, shown = stream("Boil the water. "
                          + "Кипятите воду в течение минуты, затем охладите её и храните в чистой посуде.")
    assert guard.stopped == "the model drifted into another language"
    assert shown.startswith("Boil the water.") and "Кипятите воду в течение минуты, затем" not in shown
    assert script_of("Кипятите") == "CYRILLIC" and script_of("water") == "LATIN"


def test_a_question_in_another_language_is_answered_in_it():
    guard, shown = stream("Кипятите воду одну минуту, затем охладите.", question="Как очистить воду?")
    assert not guard.stopped and shown.startswith("Кипятите")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab .\n", max_size=40), st.text(alphabet="ab .\n", min_size=1, max_size=12),
       st.integers(0, 12), st.sampled_from(["", "\n", "a"]), st.integers(0, 200))
def test_the_tail_scan_finds_what_the_tail_regex_finds(base, unit, copies, suffix, floor):
    from appliance.answering.repetition import _TAIL_REPEAT, tail_repeat

    text = base + unit * copies + suffix
    floor = min(floor, len(text))
    match = _TAIL_REPEAT.search(text, floor)
    assert tail_repeat(text, floor) == ((match.start(), len(match.group(1)), match.end()) if match else None)
