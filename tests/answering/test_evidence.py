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


def test_a_sentence_with_an_invented_number_or_setting_is_not_supported(services):
    """A claim that reads like its passage but names a number, setting or command no passage contains is marked
    not found in the library (with what is missing); the same claim with the passage's own number stands."""
    hits = services.kb.search("how long do I boil water at high altitude", k=3)
    passages = [Passage(hit.source(n), hit.text) for n, hit in enumerate(hits, start=1)]
    sources = [p.source for p in passages]
    assert any("3 minutes" in p.text for p in passages)
    right = "Above 2,000 metres, keep it at a rolling boil for 3 minutes."
    wrong = "Above 2,000 metres, keep it at a rolling boil for 30 minutes."
    command = "Above 2,000 metres, run `boil --minutes 3` and keep the water at a rolling boil."
    kept, invented, named = services.evidence.claims(f"{right} [1] {wrong} [1]\n{command}", passages, sources)
    assert kept.supported and kept.sources and kept.missing == []
    assert not invented.supported and invented.sources == [] and invented.missing == ["30"]
    assert not named.supported and named.missing == ["boil --minutes 3"]
    assert invented.score > 0.8  # by meaning alone it would have passed: the number is what is wrong


def test_the_quote_is_the_sentence_that_says_what_to_do(appliance_home):
    """Of two sentences about as close to the question, the one with the setting to change is quoted first (the
    real embedder): the person reads the command, not only a restatement of the topic."""
    from kb.source import Source

    texts = ["The server keeps recently used table pages in a shared memory cache, and a larger cache means fewer "
             "reads from disk. The cache is sized when the server starts and cannot grow while it runs. To make the "
             "cache larger, set shared_buffers = 4GB in postgresql.conf and restart the server.",
             "Memory for sorting is separate from the page cache. Each sort can use up to work_mem before it spills."]
    passages = [Passage(Source(f"/docs/{n}.md", "Tuning", "Memory", None, text, 0.5, number=n + 1), text)
                for n, text in enumerate(texts)]
    services = Services.create()
    quotes = services.evidence.quotes("how do I give the database more memory for caching?", passages,
                                      [p.source for p in passages], k=3)
    assert "shared_buffers = 4GB" in quotes[0].text and quotes[0].source.number == 1
    assert any(q.text.startswith("The server keeps") for q in quotes)  # the context is still shown after it


@pytest.mark.slow
def test_a_real_loop_is_stopped_and_said_not_shown(appliance_home):
    # SmolLM2 with greedy sampling and no repeat penalty loops on this prompt with the avx512 and the avx2 builds
    # alike ("Repeat the word water forever." looped with avx2 only: greedy decoding follows the kernels' rounding);
    # the guard stops it.
    env = {"APPLIANCE_MODEL_REPEAT_PENALTY": "1.0", "APPLIANCE_MODEL_TEMPERATURE": "0"}
    result = run_appliance("ask", "--no-kb", "--json", "--max-tokens", "200", "List the word water one hundred times.",
                           env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["stopped"] == "the model began repeating itself"
    assert "note: stopped: the model began repeating itself" in result.stderr
    words = data["answer"].lower().split()
    assert len(words) < 40 and data["timings"]["tokens"] < 200  # stopped early, the loop not shown


def test_a_sentence_wrapped_over_lines_is_one_unit_and_a_table_row_stays_apart():
    """A manual's prose wrapped at its line width is one sentence (so it is quoted whole); a definition's term, a
    table's cells and a command line keep their own lines."""
    from appliance.answering.evidence import sentences

    text = ("Cleans the working tree by recursively removing files that are not\n"
            "under version control, starting from the current directory.\n"
            "noclobber\nSame as -C .\n"
            "dpkg -L package_name\nlist contents of an installed package\n"
            "If set, the return value of a pipeline is the value of the last\n"
            "(rightmost) command to exit with a non-zero status.")
    assert [text[a:b] for a, b in sentences(text)] == [
        "Cleans the working tree by recursively removing files that are not\nunder version control, starting from "
        "the current directory.",
        "noclobber", "Same as -C .", "dpkg -L package_name", "list contents of an installed package",
        "If set, the return value of a pipeline is the value of the last\n(rightmost) command to exit with a "
        "non-zero status."]


def test_a_quote_is_shown_on_one_line_and_kept_verbatim():
    from appliance.answering.evidence import Quote
    from kb.source import Source

    text = "dpkg -L package_name\nlist contents of an installed package"
    quote = Quote(Source("/docs/ch02.html", number=2), text, 0.6)
    assert quote.line == "dpkg -L package_name list contents of an installed package"
    assert quote.as_dict()["text"] == quote.text  # --json keeps the library's exact words


def test_a_quote_that_names_nothing_to_act_on_goes_on_to_the_step_with_the_command(appliance_home):
    """The sentence closest to the question often only announces the steps; its quote goes on, verbatim, to the
    step that names the command (the real embedder picks the sentence)."""
    from kb.source import Source

    text = ("Forgetting the administrator password is not the end of the system. With physical access to the "
            "machine, getting back in is relatively easy with the following steps. Restart it and interrupt the "
            "boot loader. Boot with the kernel parameter init=/bin/sh and set a new password with passwd root.")
    other = "A strong password has many characters and is not used for any other account."
    passages = [Passage(Source(f"/docs/{n}.md", "Admin", "Passwords", None, t, 0.5, number=n + 1), t)
                for n, t in enumerate([text, other])]
    quotes = Services.create().evidence.quotes("forgot the admin password, how do I get back into my computer",
                                               passages, [p.source for p in passages], k=3)
    carried = [q for q in quotes if "init=/bin/sh" in q.text]
    assert carried and carried[0].text in text and "following steps" in carried[0].text
    assert not any(q.text in carried[0].text for q in quotes if q is not carried[0])  # nothing quoted twice


def test_a_quote_that_names_the_command_is_not_extended():
    from appliance.answering.evidence import with_context

    passage = "Run dpkg -L foo to list its files. The list can be long. Pipe it through less --quit-at-eof."
    assert with_context(passage, "Run dpkg -L foo to list its files.") == "Run dpkg -L foo to list its files."
    assert with_context(passage, "The list can be long.") == "The list can be long. Pipe it through less --quit-at-eof."
    assert with_context(passage, "The list can be long.", limit=8) == "The list can be long."
    assert with_context(passage, "not in the passage") == "not in the passage"


def test_a_mark_naming_a_passage_that_does_not_say_it_is_caught(services):
    """The model's [n] after a sentence is checked against the passages that support it: a copied sentence marked
    with another passage's number has that mark named as wrong, and its right passage given."""
    hits = services.kb.search("is boiling water enough to make it safe", k=3)
    passages = [Passage(hit.source(n), hit.text) for n, hit in enumerate(hits, start=1)]
    sources = [p.source for p in passages]
    copied = ("Boiling is the most reliable way to kill germs, including the parasites that chemical treatment "
              "struggles with.")
    holder = next(p.source.number for p in passages if copied in p.text)
    other = next(p.source.number for p in passages if copied not in p.text
                 and not any(s in p.text for s in ("Boiling is the most reliable", "kill germs")))
    right, wrong = services.evidence.claims(f"{copied} [{holder}]\n{copied[:-1]}, always. [{other}]", passages,
                                            sources)
    assert right.supported and right.marked == [holder] and right.wrong_marks == []
    assert wrong.supported and wrong.marked == [other] and wrong.wrong_marks == [other]
    assert holder in wrong.sources and wrong.as_dict()["wrong_marks"] == [other]
