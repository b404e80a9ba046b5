"""The unseen answer and retrieval set (scripts/eval/unseen/) and the measures the evals add for it.

The set must not flatter: a fixed split into a tuning half and a held-back half balanced by kind, every answerable
question naming its document, section and key fact, and a key fact that really stands in that document (checked here
on real files the test writes; the eval checks it on the installed manuals before it scores anything).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNSEEN = ROOT / "scripts" / "eval" / "unseen"


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


answers_eval = load("answers_eval_under_test", ROOT / "scripts" / "eval" / "answers_eval.py")
corpus = load("unseen_corpus_under_test", UNSEEN / "corpus.py")
QUESTIONS = json.loads((UNSEEN / "questions.json").read_text())


def test_the_set_is_large_enough_and_every_answerable_question_names_its_page_and_fact():
    assert len(QUESTIONS) >= 50
    assert len({q["id"] for q in QUESTIONS}) == len(QUESTIONS)
    for q in QUESTIONS:
        assert q["half"] in ("tuning", "heldback")
        if q["kind"] == "answerable":
            assert q["docs"] and q["doc"] == q["docs"][0] and q["section"] and q["facts"], q["id"]
        else:
            assert q["kind"] == "offtopic" and not q["docs"] and not q["facts"] and q["style"] == "unanswerable"


def test_the_halves_are_balanced_by_kind():
    styles = Counter((q["half"], q["style"]) for q in QUESTIONS)
    for style in ("paraphrase", "conceptual", "rare-token", "unanswerable"):
        tuning, heldback = styles[("tuning", style)], styles[("heldback", style)]
        assert tuning and heldback, style
        assert abs(tuning - heldback) <= 1, (style, tuning, heldback)


def test_a_question_avoids_most_of_its_key_fact_words():
    """Paraphrases: the key fact (the command, the setting) is not typed in the question itself."""
    leaks = [q["id"] for q in QUESTIONS if q["facts"] and q["style"] == "paraphrase"
             and all(f.lower() in q["q"].lower() for f in q["facts"])]
    assert leaks == []


def test_mostly_copied_counts_20_word_windows_found_verbatim():
    passage = ("To stop tracking a file that is currently tracked, use git rm --cached and add a pattern to the "
               "ignore file so that the file is not picked up again by a later git add of the whole directory tree.")
    copied = ("To stop tracking a file that is currently tracked, use git rm --cached and add a pattern to the "
              "ignore file.")
    written = ("Run git rm --cached on the file: git forgets it but keeps your copy, and the ignore pattern then "
               "stops it coming back when you add everything again later on.")
    assert answers_eval.mostly_copied(copied, [passage])
    assert not answers_eval.mostly_copied(written, [passage])
    assert not answers_eval.mostly_copied("git rm --cached", [passage])  # shorter than one window


def test_scaffolding_is_found_anywhere_in_the_answer():
    assert answers_eval.has_scaffolding("] Use trap [Passage 2 (Bash > Builtins)] to clean up.")
    assert answers_eval.has_scaffolding("As Passage 1 (Shell Builtins) says, use trap.")
    assert answers_eval.has_scaffolding("Use trap. [passage 3")
    assert answers_eval.has_scaffolding("Source [1] (git-gc(1), git-gc(1) Manual Page > CONFIGURATION)\nStore ...")
    assert not answers_eval.has_scaffolding("Use trap with EXIT [1]; the passage says so.")


def test_the_right_document_is_matched_by_path_suffix_or_file_name():
    assert answers_eval.is_right("/usr/share/doc/git-doc/git-gc.html", ["git-doc/git-gc.html"])
    assert not answers_eval.is_right("/usr/share/doc/git-doc/git-gc.html", ["git-doc/gc.html"])
    assert not answers_eval.is_right("/usr/share/doc/postgresql-doc-15/html/index.html", ["git-doc/index.html"])
    assert answers_eval.is_right("/x/answers/docs/water.md", ["water.md"])


def test_load_questions_picks_one_half(tmp_path):
    class Args:
        set, half = "unseen", "heldback"

    held = answers_eval.load_questions(Args)
    assert held and all(q["half"] == "heldback" for q in held)
    Args.half = "both"
    assert len(answers_eval.load_questions(Args)) == len(QUESTIONS)
    Args.set = "own"  # the project's own set stays the default and keeps its one `doc` per question
    own = answers_eval.load_questions(Args)
    assert len(own) == 85 and all(q["docs"] == ([q["doc"]] if q["doc"] else []) for q in own)


def test_a_key_fact_missing_from_its_document_is_reported(tmp_path):
    page = tmp_path / "git-doc" / "git-gc.html"
    page.parent.mkdir()
    page.write_text("<html><body><h1>git gc</h1><p>Reflog entries older than 90 days are removed.</p></body></html>")
    good = {"id": "g", "docs": ["git-doc/git-gc.html"], "facts": ["90 days"]}
    bad = {"id": "b", "docs": ["git-doc/git-gc.html"], "facts": ["2 weeks"]}
    absent = {"id": "a", "docs": ["git-doc/git-clean.html"], "facts": ["git clean"]}
    problems = corpus.fact_problems([good, bad, absent, {"id": "u", "docs": [], "facts": []}], [page])
    assert [p.split(":")[0] for p in problems] == ["b", "a"]


def test_the_question_documents_come_first(tmp_path, monkeypatch):
    share = tmp_path / "doc"
    (share / "git-doc").mkdir(parents=True)
    for name in ("git-a.html", "git-b.html", "git-gc.html"):
        (share / "git-doc" / name).write_text("<p>x</p>")
    monkeypatch.setattr(corpus, "SHARE", share)
    monkeypatch.setattr(corpus, "REFERENCE", tmp_path / "none")
    ordered = corpus.all_documents(tmp_path / "cache", ["git-doc/git-gc.html"])
    assert ordered[0].name == "git-gc.html" and len(ordered) == 3
