"""ZIM archives made by zimwriterfs: registered and searched through libzim's own index, or ingested whole."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_appliance
from tests.kb import fixtures

ARTICLES = {
    "Water_purification.html": ("Water purification", [("Chemical disinfection", fixtures.WATER),
                                                        ("Boiling", "Boil clear water for one minute.")]),
    "Burn.html": ("Burn", [("First aid", fixtures.BURN), ("Degrees", "Burns are graded by depth: first, second, "
                                                                      "third degree.")]),
    "Generator.html": ("Portable generator", [("Safety", fixtures.GENERATOR)]),
}


@pytest.fixture
def wiki(tmp_path):
    return fixtures.make_zim(tmp_path / "wiki.zim", ARTICLES)


def test_registered_zim_is_searched_through_its_own_index(make_kb, wiki):
    knowledge = make_kb()
    report = knowledge.add([wiki])
    assert report.registered == 1 and report.added == 1 and report.chunks == 0
    assert knowledge.stats()["zims"] == 1 and knowledge.stats()["chunks"] == 0
    (row,) = knowledge.documents()
    assert row["kind"] == "zim" and row["title"] == "Test Wiki" and row["mode"] == "registered"
    hits = knowledge.search("how many drops of bleach per litre to purify water", k=3)
    assert hits and hits[0].path == str(wiki) and hits[0].kind == "zim"
    assert hits[0].title == "Water purification"
    assert hits[0].heading == "Water purification > Chemical disinfection"
    assert "two drops" in hits[0].text
    assert knowledge.search("who won the 1998 football world cup") == []
    assert knowledge.add([wiki]).skipped == 1


def test_zim_and_local_files_are_ranked_together(make_kb, wiki, library):
    knowledge = make_kb()
    knowledge.add([wiki, library / "first-aid.html"])
    hits = knowledge.search("cool a burn with running water", k=4)
    paths = {h.path for h in hits}
    assert str(wiki) in paths and str(library / "first-aid.html") in paths


def test_small_zim_fully_ingested_on_request(make_kb, wiki):
    knowledge = make_kb()
    report = knowledge.add([wiki], full_zim=True)
    assert report.added == 1 and report.chunks >= 5 and report.registered == 0
    (row,) = knowledge.documents()
    assert row["mode"] == "ingested" and row["chunks"] == report.chunks
    hits = knowledge.search("carbon monoxide from a generator in the garage", k=1)
    assert hits[0].heading == "Portable generator > Safety" and "vector" in hits[0].sources


def test_removing_a_registered_zim(make_kb, wiki):
    knowledge = make_kb()
    knowledge.add([wiki])
    assert knowledge.remove(wiki) == 0
    assert knowledge.documents() == [] and knowledge.search("bleach water") == []


def test_a_zim_that_is_not_a_zim_fails_cleanly(make_kb, tmp_path):
    fake = tmp_path / "fake.zim"
    fake.write_bytes(b"not a zim archive at all" * 100)
    report = make_kb().add([fake])
    assert len(report.failed) == 1 and "corrupt ZIM" in report.failed[0][1]


def test_a_zim_hit_names_its_article(make_kb, wiki):
    knowledge = make_kb()
    knowledge.add([wiki])
    hit = knowledge.search("how many drops of bleach per litre to purify water", k=1)[0]
    assert hit.article == "Water_purification.html" and hit.title == "Water purification"
    source = hit.source(3)
    assert (source.path, source.article, source.title, source.section) == (
        str(wiki), "Water_purification.html", "Water purification", "Chemical disinfection")
    assert source.cite() == f"[3] {wiki} › Water purification › Chemical disinfection"
    assert source.cite(short=True) == "[3] wiki.zim › Water purification › Chemical disinfection"


@pytest.mark.slow
def test_kb_search_shows_and_names_zim_articles(wiki):
    assert run_appliance("kb", "add", str(wiki)).returncode == 0
    found = run_appliance("kb", "search", "--json", "bleach drops per litre of water")
    hits = json.loads(found.stdout)["hits"]
    assert hits[0]["article"] == "Water_purification.html" and hits[0]["kind"] == "zim"
    text = run_appliance("kb", "search", "bleach drops per litre of water")
    assert text.stdout.splitlines()[0].startswith(f"[1] {wiki} › Water purification › Chemical disinfection  (")
