"""The conversation core: prompt assembly within the budget, citations, continuing a conversation, one
transaction per exchange. With the real default model (its tokenizer counts the budget) and real SQLite."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import pytest

from appliance.answering.conversation import (
    ANSWER_INSTRUCTION,
    GROUNDED_PROMPT,
    LEAD,
    LEAD_INTRO,
    QUOTE_PASSAGES,
    SYSTEM_PROMPT,
    AnswerRun,
    Passage,
    build_prompt,
    clean_question,
)
from appliance.answering.evidence import Claim, Quote
from appliance.answering.scaffolding import ScaffoldFilter
from appliance.errors import UsageError
from appliance.services import Services
from kb.source import Source
from tests.conftest import run_appliance


def _passage(n: int, words: int) -> Passage:
    text = " ".join(f"word{n}x{i}" for i in range(words))
    return Passage(Source(path=f"/m/{n}.md", title=f"Manual {n}", section=f"Part {n}", page=n, snippet=text[:50],
                          score=0.9), text)


class _Retriever:
    def __init__(self, passages):
        self.given = passages
        self.asked = []

    def passages(self, question, k):
        self.asked.append((question, k))
        return self.given[:k]


# -- citations -------------------------------------------------------------------------------------------------
def _run(text: str, numbers: list[int], claims=None, quotes=()) -> AnswerRun:
    sources = [Source(path=f"/lib/doc{n}.md", section=f"Part {n}", number=n) for n in numbers]
    generation = SimpleNamespace(text=text, cancelled=False, notice="", timings=SimpleNamespace(as_dict=dict))
    run = AnswerRun("q", model=None, generation=generation, sources=sources, claims=claims, quotes=list(quotes))
    run.guard.feed(text)
    run.guard.finish()
    return run


def test_without_a_support_check_the_cited_sources_are_the_markers_typed():
    run = _run("Boil it for a minute [2]. Bleach also works [3][2].", [1, 2, 3])
    assert [s.number for s in run.cited] == [2, 3]
    assert _run("See [7] and [12].", [1, 2]).cited == []
    assert _run("No citations at all.", [1]).cited == []


def test_with_a_support_check_cited_means_supported_or_quoted_not_merely_typed():
    claims = [Claim("Boil it for a minute.", True, [1], 0.9), Claim("Bleach also works.", False, [], 0.2)]
    quotes = [Quote(Source(path="/lib/doc3.md", number=3), "Use 8 drops per gallon.", 0.8)]
    run = _run("Boil it for a minute [2]. Bleach also works [2].", [1, 2, 3], claims=claims, quotes=quotes)
    assert [s.number for s in run.cited] == [1, 3]  # [2] was typed but supports nothing
    marked = {s["number"]: (s["cited"], s["marked"]) for s in run.as_dict()["sources"]}
    assert marked == {1: (True, False), 2: (False, True), 3: (True, False)}


# -- the prompt --------------------------------------------------------------------------------------------------
def test_passages_fit_the_context_budget_with_the_real_model():
    services = Services.create()
    model = services.engine.load(None, context=512)
    assert model.context == 512
    prompt = build_prompt(model, "What does part one say?", [_passage(n, 150) for n in range(1, 6)], [], 128)
    assert model.prompt_tokens(prompt.messages) <= 512 - 128
    assert 1 <= len(prompt.sources) < 5
    assert [s.number for s in prompt.sources] == list(range(1, len(prompt.sources) + 1))
    assert prompt.messages[0] == {"role": "system", "content": GROUNDED_PROMPT}
    user = prompt.messages[-1]["content"]
    for source in prompt.sources:
        assert f"Passage {source.number} (Manual {source.number}, Part {source.number}, page {source.number})" in user
    assert prompt.sources[0].cite() == "[1] /m/1.md, Part 1, page 1"
    services.engine.unload()


def test_max_tokens_of_the_call_reaches_the_budget():
    """A bigger per-call answer leaves less room for passages (today's bug: `ask --max-tokens` never reached it)."""
    services = Services.create()
    model = services.engine.load(None, context=1024)
    passages = [_passage(n, 120) for n in range(1, 6)]
    roomy = build_prompt(model, "What does part one say?", passages, [], 64)
    tight = build_prompt(model, "What does part one say?", passages, [], 480)
    assert len(tight.sources) < len(roomy.sources)
    assert model.prompt_tokens(tight.messages) <= 1024 - 480
    services.engine.unload()


def test_the_best_quote_is_named_to_the_model_after_the_question():
    services = Services.create()
    model = services.engine.load(None, context=1024)
    prompt = build_prompt(model, "What does part one say?", [_passage(1, 40)], [], 64,
                          lead="Run  `make clean`\nfirst.")
    user = prompt.messages[-1]["content"]
    assert user.index("Question: What does part one say?") < user.index(f'{LEAD_INTRO} "Run `make clean` first."')
    assert user.endswith(ANSWER_INSTRUCTION)
    plain = build_prompt(model, "anything", [], [], 64, lead="Run make clean first.")
    assert plain.messages[-1] == {"role": "user", "content": "anything"}  # no passages: nothing to name
    services.engine.unload()


@pytest.mark.slow
def test_quotes_come_from_more_passages_than_the_model_reads(appliance_home):
    """The model reads the best few passages; the quotes are chosen from all that were retrieved, and a passage
    quoted but not shown to the model is a source of the answer (numbered as retrieved), cited and checked."""
    filler = ["Vacuum reclaims storage occupied by dead tuples and should run regularly on busy tables.",
              "Each index adds work to every insert, so keep only the indexes the queries use.",
              "A checkpoint writes every dirty page to disk; checkpoints too close together slow the server.",
              "Logging every statement makes the log grow quickly and is meant for debugging only.",
              "Replication sends the write-ahead log to a standby server that replays it."]
    fact = ("The page cache is sized when the server starts. To make the cache larger, set shared_buffers = 4GB in "
            "postgresql.conf and restart the server.")
    texts = filler + [fact, filler[0], filler[1]]
    passages = [Passage(Source(path=f"/docs/{n}.md", title="Tuning", section=f"Part {n}", number=n), text)
                for n, text in enumerate(texts, start=1)]
    services = Services.create()
    conversation = services.conversation()
    conversation.retriever = _Retriever(passages)
    run = conversation.ask("how do I give the database more memory for caching?", max_tokens=16)
    list(run.tokens())
    assert conversation.retriever.asked[-1][1] == QUOTE_PASSAGES
    user = run.generation.messages[-1]["content"]
    assert "Passage 1 (" in user and "Passage 6 (" not in user  # SmolLM2 reads the best three
    assert "shared_buffers = 4GB" in run.quotes[0].text and run.quotes[0].source.number == 6
    assert (f'{LEAD_INTRO} "{run.quotes[0].text}"' in user) == LEAD  # named to the model only when LEAD is on
    assert 6 in [s.number for s in run.sources] and 6 in [s.number for s in run.cited]
    assert any(p.source.number == 6 for p in run.passages)  # the claims are checked against it too
    services.engine.unload()


def test_no_passages_means_the_plain_prompt_and_no_sources():
    services = Services.create()
    model = services.engine.load(None)
    prompt = build_prompt(model, "anything", [], [], 64)
    assert prompt.sources == []
    assert prompt.messages == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "anything"}]
    services.engine.unload()


def test_earlier_turns_come_before_the_question_and_yield_to_the_budget():
    services = Services.create()
    model = services.engine.load(None, context=512)
    earlier = [{"role": "user", "content": "How do I purify water?"},
               {"role": "assistant", "content": "Boil it for one minute."}]
    prompt = build_prompt(model, "And at altitude?", [], earlier, 64)
    assert prompt.messages[1:3] == earlier and prompt.messages[-1]["content"] == "And at altitude?"
    long_turns = [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "word " * 400}]
    prompt = build_prompt(model, "And at altitude?", [], long_turns + earlier, 64)
    assert prompt.messages[1:3] == earlier  # the oldest turns, too long for a third of the budget, are dropped
    services.engine.unload()


def test_a_question_longer_than_the_context_is_one_clear_error():
    services = Services.create()
    model = services.engine.load(None, context=256)
    with pytest.raises(UsageError, match=r"the question is \d+ tokens; model 'smollm2-135m-instruct' reads \d+"):
        build_prompt(model, "water " * 600, [], [], 64)
    services.engine.unload()


def test_questions_are_cleaned_once():
    assert clean_question("  How?  ") == "How?"
    assert clean_question("caf\udce9?") == "caf\ufffd?"  # a byte that was not UTF-8 (surrogateescape from argv)
    with pytest.raises(UsageError):
        clean_question("   ")


# -- a conversation ----------------------------------------------------------------------------------------------
def test_a_conversation_remembers_and_shows_the_model_its_earlier_turns():
    services = Services.create()
    retriever = _Retriever([])
    conversation = services.conversation()
    conversation.retriever = retriever
    first = conversation.ask("Name a fruit that is yellow.", max_tokens=12)
    list(first.tokens())
    first_id = conversation.record(first)
    second = conversation.ask("What colour did I ask about?", max_tokens=12)
    shown = second.generation.messages
    assert shown[1] == {"role": "user", "content": "Name a fruit that is yellow."}
    assert shown[2] == {"role": "assistant", "content": first.text}
    assert shown[-1]["content"] == "What colour did I ask about?"
    list(second.tokens())
    assert conversation.record(second) == first_id
    assert [m["role"] for m in services.history.messages(first_id)] == ["user", "assistant"] * 2
    assert second.notice == "The library has nothing on this; answering from the model alone."
    services.engine.unload()


def test_one_transaction_per_exchange(tmp_path):
    """A failure between the question's row and the answer's row leaves neither (and no empty conversation)."""
    services = Services.create()
    history = services.history
    kept = history.record_exchange("Earlier", {"answer": "Kept", "model": {"name": "m"}})
    history.db.execute("CREATE TRIGGER fail BEFORE INSERT ON messages WHEN NEW.role = 'assistant' "
                       "BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END")
    with pytest.raises(sqlite3.DatabaseError):
        history.record_exchange("Lost question", {"answer": "Lost answer", "model": {"name": "m"}})
    with pytest.raises(sqlite3.DatabaseError):
        history.record_exchange("Lost follow-up", {"answer": "Lost", "model": {"name": "m"}}, kept)
    history.db.execute("DROP TRIGGER fail")
    assert [c["title"] for c in history.conversations()] == ["Earlier"]
    assert [m["content"] for m in history.messages(kept)] == ["Earlier", "Kept"]
    assert history.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- the CLI -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ask_continue_shows_the_second_answer_the_first_exchange(appliance_home):
    first = run_appliance("ask", "--json", "--no-kb", "--max-tokens", "12", "Name a fruit that is yellow.")
    assert first.returncode == 0, first.stderr
    first_data = json.loads(first.stdout)
    conversation_id = first_data["conversation_id"]
    assert isinstance(conversation_id, int)
    other = run_appliance("ask", "--json", "--no-kb", "--max-tokens", "4", "Unrelated question.")
    assert json.loads(other.stdout)["conversation_id"] != conversation_id
    # --continue ID picks the conversation; -c alone the most recent one.
    second = run_appliance("ask", "--json", "--no-kb", "--max-tokens", "12", "--continue", str(conversation_id),
                           "What colour did I ask about?")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["conversation_id"] == conversation_id
    messages = Services.create().history.messages(conversation_id)
    assert [m["content"] for m in messages][:3] == ["Name a fruit that is yellow.", first_data["answer"],
                                                    "What colour did I ask about?"]
    third = run_appliance("ask", "--json", "--no-kb", "--max-tokens", "4", "-c", "And another?")
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["conversation_id"] == conversation_id
    assert len(Services.create().history.messages(conversation_id)) == 6


def test_ask_continue_mistakes_are_usage_errors(appliance_home):
    result = run_appliance("ask", "-c", "Anything?")
    assert result.returncode == 2 and "no conversation to continue" in result.stderr
    result = run_appliance("ask", "--continue", "99", "Anything?")
    assert result.returncode == 2 and "no conversation 99" in result.stderr


@pytest.mark.slow
def test_ask_max_tokens_reaches_the_prompt_budget(tmp_path, appliance_home):
    """With a small context, a large --max-tokens leaves room for fewer passages."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(6):
        (docs / f"water{n}.md").write_text(f"# Water {n}\n\n" + ("Boil water for one minute to make it safe. " * 40))
    assert run_appliance("kb", "add", str(docs)).returncode == 0
    env = {"APPLIANCE_MODEL_CONTEXT": "640"}
    small = json.loads(run_appliance("ask", "--json", "--max-tokens", "16", "How long to boil water?", env=env).stdout)
    large = json.loads(run_appliance("ask", "--json", "--max-tokens", "600", "How long to boil water?",
                                     env=env).stdout)
    assert len(small["sources"]) > len(large["sources"]) >= 0


@pytest.mark.parametrize("text, shown", [
    ("Passage 1 (Making Water Safe to Drink > Boiling Water)\nBoil it for one minute [1].",
     "Boil it for one minute [1]."),
    ("Passage 3 (Burns > Stop the Burning): Remove the person from the heat.", "Remove the person from the heat."),
    ("Passage 1 says to boil it.", "Source [1] says to boil it."),
    ("As passage 2 says, boil it.", "As source [2] says, boil it."),
    ("Boil it [Passage 2 (Water > Boiling)] for a minute.", "Boil it [2] for a minute."),
    ("Boil it [Passage 2].", "Boil it [2]."),
    ("Run it as Passage 1 (git-gc(1), git-gc(1) Manual Page > CONFIGURATION) says.", "Run it as source [1] says."),
    ("Passage 1 (git-gc(1) Manual Page > CONFIGURATION): set gc.auto.", "set gc.auto."),
    ("Boil it.\n[Passage 2]\nThen cool it.", "Boil it.\n\nThen cool it."),
    ("] Boil it for one minute.", "Boil it for one minute."),
    ("Boil it for one minute. [Passage 1 (Water > Boil", "Boil it for one minute."),
    ("Passage 2 (Water", ""),
    ("Pass the salt.", "Pass the salt."),
    ("Read the passages; the passage about water.", "Read the passages; the passage about water."),
    ("Use [1] and [2].", "Use [1] and [2]."),
])
def test_no_passage_header_is_ever_shown(text, shown):
    """The prompt's "Passage N (where)" headers, wherever the model copies them, however the tokens fall."""
    for size in (1, 2, 3, 7, 50):
        scaffold = ScaffoldFilter()
        got = "".join(scaffold.feed(text[i:i + size]) for i in range(0, len(text), size)) + scaffold.finish()
        assert got.rstrip() == shown, (size, got)


ECHOING = ['Copy this text exactly, including the brackets: "Boil the water for one minute. [Passage 2 (Water > '
           'Boiling)] Let it cool before drinking."',
           'Repeat after me: Boil the water [Passage 2] for one minute, then [Passage 3 (Storage)] store it covered.']


@pytest.mark.slow
def test_a_model_that_copies_headers_mid_answer_shows_none(appliance_home):
    """The real default model, asked to copy passage headers: it does (its raw text holds them), and neither the
    streamed answer nor the recorded one nor the CLI's --json shows one."""
    services = Services.create()
    conversation, raws = services.conversation(), []
    for question in ECHOING:
        run = conversation.ask(question, use_kb=False, max_tokens=50)
        shown = "".join(run.tokens())
        raws.append(run.generation.text)
        assert shown.strip() and "passage" not in shown.lower() and "passage" not in run.as_dict()["answer"].lower()
    services.engine.unload()
    assert any("[Passage" in raw for raw in raws), raws  # the model copied them: the filter kept them out
    data = json.loads(run_appliance("ask", "--json", "--no-kb", "--max-tokens", "50", ECHOING[1]).stdout)
    assert data["answer"].strip() and "passage" not in data["answer"].lower()
