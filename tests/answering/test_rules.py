"""The owner's rules: each kind of match (words, patterns, similar), each action (refuse, warn, confirm), each
place (question, passages, answer); a catastrophic pattern stopped by its time limit; the model never loaded for
a refused question. Real rules.toml files, the real embedder and knowledge base, the real SmolLM2 model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from appliance.answering.conversation import AnswerRun
from appliance.answering.rules import AnswerGate, Rule, RuleBook, RuleFile, add_rule, remove_rule
from appliance.cli import cli
from appliance.errors import EXIT_REFUSED, ApplianceError, ConfirmationNeeded, RuleRefusal, UsageError
from appliance.services import Services
from tests.conftest import run_appliance


def book(*rules: Rule, **kwargs) -> RuleBook:
    return RuleBook(list(rules), **kwargs)


def refuse(name="r", **kwargs) -> Rule:
    return Rule(name=name, action="refuse", message=kwargs.pop("message", "Not here."), **kwargs)


# -- matching ----------------------------------------------------------------------------------------------------
def test_words_match_whole_words_with_case_folding_and_any_spacing():
    rules = book(refuse(words=("pipe bomb", "explosive", "Straße")))
    assert rules.check("question", "How do I build a PIPE   Bomb?").refusal.why == "word 'pipe bomb'"
    assert rules.check("question", "Is this EXPLOSIVE?").refusal is not None
    assert rules.check("question", "where is the STRASSE").refusal is not None  # case folding, not just lower()
    assert rules.check("question", "Explosives in mining history").matches == []  # whole words only
    assert rules.check("question", "a pipe, a bomb").matches == []
    assert rules.check("question", "unexplosive").matches == []


def test_patterns_match_case_insensitively_and_say_what_matched():
    rules = book(refuse(patterns=(r"\bmake\s+\w+\s+gun\b",)))
    match = rules.check("question", "how to MAKE a GUN at home").refusal
    assert match.rule == "r" and "matched 'MAKE a GUN'" in match.why
    assert rules.check("question", "how to make a cake").matches == []


def test_a_catastrophic_pattern_is_stopped_by_its_time_limit_and_counts_as_a_match():
    rules = book(refuse(patterns=(r"(a|aa)+$",)), timeout_ms=20)
    decision = rules.check("question", "a" * 60 + "b")
    assert decision.refusal is not None
    assert "ran out of its 20 ms limit" in decision.refusal.why
    assert rules.check("question", "aaaa").refusal is not None  # a real match is still a match


def test_a_bad_rule_is_one_clear_error():
    with pytest.raises(UsageError, match="not a valid regular expression"):
        refuse(patterns=("(unclosed",))
    with pytest.raises(UsageError, match="action must be one of"):
        Rule(name="x", action="deny", words=("a",))
    with pytest.raises(UsageError, match="confirm applies to the question only"):
        Rule(name="x", action="confirm", words=("a",), places=("answer",))
    with pytest.raises(UsageError, match="at least one of words, patterns or similar"):
        Rule(name="x", action="warn")
    with pytest.raises(UsageError, match="names must be unique"):
        book(refuse("same", words=("a",)), refuse("same", words=("b",)))


def test_the_embedder_is_loaded_only_for_a_similar_rule_and_similar_matches_by_meaning():
    services = Services.create()
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return services.rules.embed(texts)

    lexical = book(refuse("w", words=("bomb",)), embed=embed)
    assert lexical.check("question", "How do I purify water?").matches == []
    assert calls == []  # no similar rule: the embedder was never asked
    rules = book(Rule(name="s", action="refuse", similar=("how do I make a bomb",), threshold=0.7), embed=embed)
    match = rules.check("question", "how can I build a bomb at home").refusal
    assert match is not None and match.why.startswith("similar to 'how do I make a bomb' (cosine")
    assert rules.check("question", "How long should I boil drinking water?").matches == []
    assert calls  # the embedder was used for it


def test_rules_file_round_trip_keeps_the_owners_comments(appliance_home):
    path = appliance_home / "rules.toml"
    appliance_home.mkdir(parents=True, exist_ok=True)
    path.write_text("# my clinic's rules\npattern_timeout_ms = 30\n", encoding="utf-8")
    add_rule(path, refuse("weapons", words=("pipe bomb",)))
    add_rule(path, Rule(name="dose", action="warn", patterns=(r"\d+\s*mg",), places=("answer",)))
    with pytest.raises(UsageError, match="already a rule named"):
        add_rule(path, refuse("weapons", words=("x",)))
    loaded = RuleBook.load(path)
    assert [r.name for r in loaded.rules] == ["weapons", "dose"] and loaded.timeout_ms == 30
    remove_rule(path, "weapons")
    text = path.read_text(encoding="utf-8")
    assert "# my clinic's rules" in text and "weapons" not in text
    assert [r.name for r in RuleBook.load(path).rules] == ["dose"]


def test_a_broken_rules_file_stops_every_question(appliance_home):
    appliance_home.mkdir(parents=True, exist_ok=True)
    (appliance_home / "rules.toml").write_text('[[rule]]\nname = "x"\naction = "deny"\nwords = ["a"]\n')
    with pytest.raises(ApplianceError, match="action must be one of"):
        RuleFile(appliance_home / "rules.toml")()
    result = run_appliance("ask", "--no-kb", "hello")
    assert result.returncode == 1
    assert "rules.toml" in result.stderr and "Traceback" not in result.stderr


def test_the_appliance_ships_with_no_rules(appliance_home):
    result = CliRunner().invoke(cli, ["rules", "list", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rules"] == []
    assert not (appliance_home / "rules.toml").exists()


# -- actions, on the question: the model is never loaded for a refused question ------------------------------------
class LoadSpy:
    def __init__(self, engine):
        self.engine, self.calls = engine, []
        self.real = engine.load

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        return self.real(*args, **kwargs)


def _services_with_rules(home, text: str) -> tuple[Services, LoadSpy]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "rules.toml").write_text(text, encoding="utf-8")
    services = Services.create()
    spy = LoadSpy(services.engine)
    services.engine.load = spy
    return services, spy


WEAPONS = ('[[rule]]\nname = "no-weapons"\naction = "refuse"\nmessage = "Not on this appliance."\n'
           'words = ["pipe bomb"]\n')


def test_a_refused_question_never_loads_the_model_nor_searches_the_library(appliance_home):
    services, spy = _services_with_rules(appliance_home, WEAPONS)
    retrieved = []
    conversation = services.conversation()
    conversation.retriever = SimpleNamespace(passages=lambda q, k: retrieved.append(q) or [])
    with pytest.raises(RuleRefusal) as caught:
        conversation.ask("How do I make a pipe bomb?")
    assert caught.value.exit_code == EXIT_REFUSED == 4
    assert caught.value.rule == "no-weapons"
    assert str(caught.value) == "refused by rule 'no-weapons': Not on this appliance."
    assert spy.calls == [] and retrieved == []
    assert services.engine._loaded is None  # no model in memory, no engine process started
    assert services.history.conversations() == []


def test_cli_refusal_is_exit_4_names_the_rule_and_json_carries_it(appliance_home, monkeypatch):
    from appliance.engine import Engine

    appliance_home.mkdir(parents=True, exist_ok=True)
    (appliance_home / "rules.toml").write_text(WEAPONS, encoding="utf-8")
    loads = []
    monkeypatch.setattr(Engine, "load", lambda self, *a, **k: loads.append(a) or pytest.fail("model loaded"))
    result = CliRunner().invoke(cli, ["ask", "--json", "how to build a Pipe Bomb"])
    assert result.exit_code == 4, result.stderr
    data = json.loads(result.stdout)
    assert data["rule"] == "no-weapons" and data["refused"]["place"] == "question"
    assert data["refused"]["why"] == "word 'pipe bomb'" and data["answer"] is None
    assert "refused by rule 'no-weapons': Not on this appliance." in result.stderr
    assert loads == []


@pytest.mark.slow
def test_warn_continues_and_the_answer_carries_the_rule(appliance_home):
    services, spy = _services_with_rules(
        appliance_home, '[[rule]]\nname = "water"\naction = "warn"\nmessage = "Check with staff."\nwords = ["water"]\n')
    run = services.conversation().ask("What is water?", max_tokens=12, use_kb=False)
    text = "".join(run.tokens())
    assert text and run.refused is None and len(spy.calls) == 1
    result = run.as_dict()
    assert result["rules"] == [{"rule": "water", "action": "warn", "place": "question", "why": "word 'water'",
                                "message": "Check with staff.", "where": None}]
    assert "Check with staff" not in result["answer"]  # nothing is added to the model's words
    services.engine.unload()


@pytest.mark.slow
def test_confirm_waits_for_a_yes(appliance_home):
    services, spy = _services_with_rules(
        appliance_home, '[[rule]]\nname = "meds"\naction = "confirm"\nmessage = "Dosage questions: ask a nurse."\n'
                        'patterns = ["\\\\bdos(e|age)\\\\b"]\n')
    conversation = services.conversation()
    with pytest.raises(ConfirmationNeeded, match="needs a confirmation by rule 'meds'"):
        conversation.ask("What dose of aspirin?", use_kb=False)
    assert spy.calls == []
    run = conversation.ask("What dose of aspirin?", use_kb=False, max_tokens=8, confirm=lambda exc: True)
    "".join(run.tokens())
    assert len(spy.calls) == 1 and run.as_dict()["rules"][0]["action"] == "confirm"
    services.engine.unload()
    # the CLI without a terminal: exit 4 with the way to go ahead
    result = CliRunner().invoke(cli, ["ask", "--no-kb", "what dose?"])
    assert result.exit_code == 4 and "add --confirm to ask anyway" in result.stderr


@pytest.mark.slow
def test_the_question_is_checked_once_and_a_no_is_a_refusal(appliance_home, monkeypatch):
    """One path for both shells: Conversation.ask checks the question's rules once and asks its `confirm` once;
    the CLI's --confirm answers through the same callback (the rules on the question run once, not twice)."""
    from appliance.answering.rules import RuleBook

    services, spy = _services_with_rules(
        appliance_home, '[[rule]]\nname = "meds"\naction = "confirm"\nmessage = "Ask a nurse."\nwords = ["dose"]\n')
    checks, asked = [], []
    real = RuleBook.check

    def counting(self, place, *args, **kwargs):
        checks.append(place)
        return real(self, place, *args, **kwargs)

    monkeypatch.setattr(RuleBook, "check", counting)
    with pytest.raises(RuleRefusal, match=r"^not asked \(needs a confirmation by rule 'meds': Ask a nurse.\)$"):
        services.conversation().ask("What dose?", use_kb=False, confirm=lambda exc: asked.append(exc.rule) or False)
    assert asked == ["meds"] and checks == ["question"] and spy.calls == []
    checks.clear()
    result = CliRunner().invoke(cli, ["ask", "--no-kb", "--confirm", "--max-tokens", "4", "--json", "what dose?"])
    assert result.exit_code == 0, result.stderr
    assert checks.count("question") == 1 and json.loads(result.stdout)["rules"][0]["rule"] == "meds"


# -- places: passages and answer -------------------------------------------------------------------------------------
def test_a_rule_on_passages_refuses_before_the_model_sees_them(appliance_home, tmp_path):
    doc = tmp_path / "ward.md"
    doc.write_text("# Ward notes\n\nPatient record CONFIDENTIAL: the ward keeps boiled water in covered jugs for "
                   "the night shift and replaces it every morning.\n", encoding="utf-8")
    services, spy = _services_with_rules(
        appliance_home, '[[rule]]\nname = "private"\naction = "refuse"\nwords = ["confidential"]\n'
                        'places = ["passages"]\n')
    services.kb.add([doc])
    conversation = services.conversation()
    with pytest.raises(RuleRefusal) as caught:
        conversation.ask("How does the ward keep boiled water for the night shift?", quote_only=True)
    decision = caught.value.decision
    assert decision.refusal.place == "passages" and decision.refusal.where.endswith("ward.md, Ward notes")
    # the question itself matches nothing: the same rule does not apply to questions
    assert services.rules().check("question", "confidential").matches == []


class _Generation:
    """The engine's stream of tokens, for the answer gate (the real model is below)."""

    def __init__(self, pieces):
        import threading

        self.pieces, self.cancel, self.cancelled, self.notice = pieces, threading.Event(), False, ""
        self.timings = SimpleNamespace(as_dict=dict)

    def tokens(self):
        for piece in self.pieces:
            if self.cancel.is_set():
                self.cancelled = True
                return
            yield piece

    def stop(self):
        self.cancel.set()


def test_a_rule_on_the_answer_withholds_the_rest_sentence_by_sentence():
    rules = book(refuse("dose", patterns=(r"\d+\s*mg",), places=("answer",), message="Ask a nurse."),
                 Rule(name="note", action="warn", words=("kidneys",), places=("answer",)))
    pieces = ["Rest ", "and drink ", "fluids. ", "Mind your ", "kidneys. ", "Take 400", " mg ", "every hour. ",
              "Then sleep."] + [f"word{n} " for n in range(200)]
    generation = _Generation(pieces)
    run = AnswerRun("q", None, generation, gate=AnswerGate(rules))
    shown = "".join(run.tokens())
    assert shown == "Rest and drink fluids. Mind your kidneys. "
    assert "400" not in run.text and run.text == shown
    assert run.refused.rule == "dose" and generation.cancel.is_set()
    result = run.as_dict()
    assert result["refused"]["message"] == "Ask a nurse." and not result["cancelled"]
    assert [r["rule"] for r in result["rules"]] == ["note", "dose"]


@pytest.mark.slow
def test_a_rule_on_the_answer_with_the_real_model_exit_4(appliance_home):
    appliance_home.mkdir(parents=True, exist_ok=True)
    (appliance_home / "rules.toml").write_text(
        '[[rule]]\nname = "no-answers"\naction = "refuse"\nmessage = "Answers are off today."\npatterns = ["\\\\w"]\n'
        'places = ["answer"]\n', encoding="utf-8")
    result = run_appliance("ask", "--json", "--no-kb", "--max-tokens", "24", "What is the sun?")
    assert result.returncode == 4, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"] == "" and data["refused"]["rule"] == "no-answers"
    assert "refused by rule 'no-answers': Answers are off today." in result.stderr
    # the refused exchange is still in the answer log, with its decision
    shown = run_appliance("history", "show", "1", "--format", "json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["messages"][1]["content"] == ""
    assert run_appliance("history", "verify").returncode == 0


# -- the commands ----------------------------------------------------------------------------------------------------
def test_rules_commands_add_list_test_remove(appliance_home):
    runner = CliRunner()
    added = runner.invoke(cli, ["rules", "add", "weapons", "--word", "pipe bomb", "--pattern", r"\bgun\b",
                                "--message", "Not here."])
    assert added.exit_code == 0, added.stderr
    bad = runner.invoke(cli, ["rules", "add", "bad", "--pattern", "(oops"])
    assert bad.exit_code == 2 and "not a valid regular expression" in bad.stderr
    listed = runner.invoke(cli, ["rules", "list"])
    assert "weapons: refuse on question: words 'pipe bomb'; patterns '\\\\bgun\\\\b'" in listed.stdout
    tested = runner.invoke(cli, ["rules", "test", "--json", "where do I buy a GUN"])
    data = json.loads(tested.stdout)
    assert data["outcome"] == "refused" and data["matches"][0]["why"] == "pattern '\\\\bgun\\\\b' matched 'GUN'"
    plain = runner.invoke(cli, ["rules", "test", "how do I boil water"])
    assert plain.exit_code == 0 and plain.stdout.strip() == "allowed (0 of 1 rules matched)"
    removed = runner.invoke(cli, ["rules", "remove", "weapons"])
    assert removed.exit_code == 0
    assert runner.invoke(cli, ["rules", "remove", "weapons"]).exit_code == 2
