"""A registered ZIM's titles and section headings, embedded once at registration: a question in plain words that
shares no word with its article still reaches it. Real archives made by zimwriterfs, real SQLite, the real
pinned embedder."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading

import pytest

from kb import zim as zim_search
from kb.readers.zim import open_archive
from kb.zim import question_words
from tests.kb import fixtures

SHOPT = "A/shopt.html"
ARTICLES = {
    SHOPT: ("The shopt builtin", [
        ("Dotglob", "When this option is set, Bash includes filenames beginning with a period in the results of "
                    "filename expansion. The filenames . and .. must always be matched explicitly."),
        ("Nullglob", "If set, a pattern that matches nothing expands to a null string, rather than itself.")]),
    "A/ls.html": ("Listing", [("Names of files", "A file whose name starts with a letter is listed by ls. The star "
                                                 "picks up names; files do start.")]),
    **fixtures.FIRST_AID_ARTICLES,
}
# Not one of its words is in the shopt article (its title, headings or text): libzim's index cannot reach it.
PLAIN = "the star doesn't pick up files whose names start with a dot"


@pytest.fixture
def manual(tmp_path):
    return fixtures.make_zim(tmp_path / "manual.zim", ARTICLES, title="Manual")


def rows(directory, table: str) -> int:
    db = sqlite3.connect(directory / "text.sqlite")
    try:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


def test_a_question_sharing_no_word_with_its_article_finds_it_through_a_heading(make_kb, manual, monkeypatch):
    from libzim.search import Query, Searcher

    searcher = Searcher(open_archive(manual))
    for word in question_words(PLAIN):
        found = list(searcher.search(Query().set_query(word)).getResults(0, 50))
        assert SHOPT not in found, word
    knowledge = make_kb()
    report = knowledge.add([manual])
    # Each article's title, and each section's heading path: 5 articles, 6 sections, and the welcome page.
    assert report.registered == 1 and report.headings == 12
    (note,) = [n for p, n in report.notes if p == str(manual)]
    assert "12 titles and section headings embedded" in note and "only" not in note
    hits = knowledge.search(PLAIN, k=5)
    found = [hit for hit in hits if hit.article == SHOPT]
    assert found and found[0].heading == "The shopt builtin > Dotglob" and found[0].sources == ["heading"]
    assert "period" in found[0].text

    # The same library with the heading vectors left out: libzim's index alone never reaches the article.
    monkeypatch.setattr(zim_search, "USE_HEADINGS", False)
    knowledge.zims.drop_caches(disk=True)
    assert all(hit.article != SHOPT for hit in knowledge.search(PLAIN, k=5, floor=False))


def test_an_off_topic_question_still_abstains(make_kb, manual):
    knowledge = make_kb()
    knowledge.add([manual])
    assert knowledge.search("who won the 1998 football world cup", k=5) == []


def test_an_unchanged_archive_registered_again_embeds_nothing(make_kb, manual, embedded, tmp_path):
    knowledge = make_kb(tmp_path / "kb")
    assert knowledge.add([manual]).headings == 12
    assert len(embedded) == 12
    assert any(text.startswith("The shopt builtin > Dotglob\nWhen this option is set") for text in embedded)
    assert any(text.startswith("Listing\nA file whose name") for text in embedded)  # a title, with its lead
    embedded.clear()
    again = knowledge.add([manual])
    assert again.skipped == 1 and again.headings == 0 and embedded == []
    knowledge.close()
    later = make_kb(tmp_path / "kb")  # a later session: the same
    assert later.add([manual]).headings == 0 and embedded == []
    os.utime(manual)  # touched, not changed: re-hashed, still nothing embedded
    assert later.add([manual]).skipped == 1 and embedded == []
    assert rows(tmp_path / "kb", "zim_headings") == 12


def test_removing_the_archive_removes_its_heading_rows(make_kb, manual, tmp_path):
    other = fixtures.make_zim(tmp_path / "other.zim", {"x.html": ("Knots", [("Bowline", "A fixed loop.")])},
                              title="Other")
    knowledge = make_kb(tmp_path / "kb")
    knowledge.add([manual, other])
    assert rows(tmp_path / "kb", "zim_headings") == 12 + 3 and rows(tmp_path / "kb", "zim_heading_sets") == 2
    knowledge.remove(manual)
    assert rows(tmp_path / "kb", "zim_headings") == 3 and rows(tmp_path / "kb", "zim_heading_sets") == 1
    assert all(hit.article != SHOPT for hit in knowledge.search(PLAIN, k=5, floor=False))
    # A copy at another path is the same archive: removing one keeps the rows the other still uses.
    copy = tmp_path / "copy.zim"
    shutil.copyfile(other, copy)
    knowledge.add([copy])
    knowledge.remove(other)
    assert rows(tmp_path / "kb", "zim_headings") == 3
    knowledge.remove(copy)
    assert rows(tmp_path / "kb", "zim_headings") == 0 and rows(tmp_path / "kb", "zim_heading_sets") == 0


def test_a_truncated_zim_fails_with_one_clear_line_and_loses_nothing(make_kb, manual, tmp_path):
    knowledge = make_kb(tmp_path / "kb")
    knowledge.add([manual])
    cut = tmp_path / "cut.zim"
    cut.write_bytes(manual.read_bytes()[: manual.stat().st_size // 2])
    report = knowledge.add([cut])
    (failed,) = report.failed
    assert failed[0] == str(cut) and "corrupt ZIM" in failed[1] and "\n" not in failed[1]
    assert report.registered == 0 and report.headings == 0
    assert [d["path"] for d in knowledge.documents()] == [str(manual)]
    assert rows(tmp_path / "kb", "zim_headings") == 12  # the other archive's rows are all there
    assert any(hit.article == SHOPT for hit in knowledge.search(PLAIN, k=5))


def test_registration_reports_progress_and_a_cancel_goes_on_where_it_stopped(make_kb, manual, monkeypatch,
                                                                             embedded, tmp_path):
    monkeypatch.setattr("kb.ingest.HEADING_GROUP", 4)
    knowledge = make_kb(tmp_path / "kb")
    cancel = threading.Event()
    seen = []

    def progress(p) -> None:
        if p.stage == "titles and headings":
            seen.append((p.file_chunks_done, p.file_chunks))
            if p.file_chunks_done >= 2:
                cancel.set()  # after the first groups are in

    report = knowledge.add([manual], progress=progress, cancel=cancel)
    assert report.cancelled and report.registered == 0 and knowledge.documents() == []
    assert seen[0] == (0, seen[0][1]) and seen[0][1] >= 5  # a bar over the archive's articles
    written = rows(tmp_path / "kb", "zim_headings")
    assert 0 < written < 12 and knowledge.search(PLAIN, k=5) == []  # not registered: not searched
    embedded.clear()
    seen.clear()
    resumed = knowledge.add([manual], progress=lambda p: seen.append((p.file_chunks_done, p.file_chunks))
                            if p.stage == "titles and headings" else None)
    assert resumed.registered == 1 and resumed.headings == 12 - written and len(embedded) == 12 - written
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)  # the bar only moves forward
    assert rows(tmp_path / "kb", "zim_headings") == 12
    assert any(hit.article == SHOPT for hit in knowledge.search(PLAIN, k=5))


def test_beyond_the_limit_only_titles_and_the_report_says_so(make_kb, manual, monkeypatch, tmp_path):
    monkeypatch.setattr(zim_search, "HEADINGS", 8)
    knowledge = make_kb(tmp_path / "kb")
    report = knowledge.add([manual])
    assert report.headings == 8 and rows(tmp_path / "kb", "zim_headings") == 8
    (note,) = [n for p, n in report.notes if p == str(manual)]
    assert "more than 8 entries" in note and "titles only for the rest" in note
    db = sqlite3.connect(tmp_path / "kb" / "text.sqlite")
    titles = db.execute("SELECT count(*) FROM zim_headings WHERE section=''").fetchone()[0]
    db.close()
    assert titles == 6  # every article's title, the headings only as far as the limit allows
    assert "titles only" in knowledge.documents()[0]["notes"]


def test_an_older_library_opens_and_its_archive_gets_headings_when_registered_again(make_kb, manual, tmp_path):
    knowledge = make_kb(tmp_path / "kb")
    knowledge.add([manual])
    knowledge.close()
    db = sqlite3.connect(tmp_path / "kb" / "text.sqlite")  # the store as schema 2 left it
    db.executescript("DROP TABLE zim_headings; DROP TABLE zim_heading_sets; PRAGMA user_version=2;")
    db.close()
    older = make_kb(tmp_path / "kb")
    assert older.store.db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert rows(tmp_path / "kb", "zim_headings") == 0
    assert all(hit.article != SHOPT for hit in older.search(PLAIN, k=5, floor=False))  # libzim's index alone
    assert older.search("how many drops of bleach per litre to purify water", k=1)[0].article == (
        "A/Water_purification.html")
    report = older.add([manual])
    assert report.skipped == 1 and report.registered == 0 and report.headings == 12
    assert any(hit.article == SHOPT for hit in older.search(PLAIN, k=5))


def test_a_set_made_another_way_is_made_again(make_kb, manual, monkeypatch, embedded):
    knowledge = make_kb()
    lead = zim_search.LEAD_WORDS
    monkeypatch.setattr(zim_search, "LEAD_WORDS", 0)
    assert knowledge.add([manual]).headings == 12
    assert "The shopt builtin > Dotglob" in embedded  # the heading alone
    monkeypatch.setattr(zim_search, "LEAD_WORDS", lead)
    embedded.clear()
    again = knowledge.add([manual])
    assert again.skipped == 1 and again.headings == 12 and len(embedded) == 12
    assert knowledge.add([manual]).headings == 0
