"""The ZIM candidate stage: questions whose words never all appear in one article, stop-word-only questions, the
article path in citations and JSON, bounded work and caches. Real archives made by zimwriterfs, the real
embedder, libzim's own index."""

from __future__ import annotations

import json

import pytest

from kb import zim as zim_search
from kb.readers.zim import open_archive
from kb.zim import ZimShelf, question_words, rank_articles
from tests.conftest import run_appliance
from tests.kb import fixtures

NETWORK = ("To give the machine a fixed address, edit /etc/network/interfaces: write iface eth0 inet static, then "
           "the address, netmask and gateway lines, and restart the networking service.")
PASSWORD = ("The installer asks for the root password. Choose a long one and write it down somewhere safe: "
            "without it, administering the system later needs a rescue boot.")
ARTICLES = {
    "A/sect.network-config.html": ("8.2 Configuring the Network", [("Static address", NETWORK)]),
    "A/sect.install-steps.html": ("4.2 Installing, Step by Step", [("Administrator Password", PASSWORD)]),
    **fixtures.FIRST_AID_ARTICLES,
}
# Its words never all appear in one article ("creek", "sick", "kids" appear nowhere): libzim alone finds nothing.
WORRIED = "is creek water safe for my kids if I add bleach, how many drops per litre, will they get sick"


@pytest.fixture
def handbook(tmp_path):
    return fixtures.make_zim(tmp_path / "handbook.zim", ARTICLES, title="Handbook")


def libzim_matches(path, query: str) -> int:
    from libzim.search import Query, Searcher

    return Searcher(open_archive(path)).search(Query().set_query(query)).getEstimatedMatches()


def test_a_question_whose_words_never_all_appear_in_one_article_still_finds_it(make_kb, handbook):
    assert libzim_matches(handbook, " ".join(question_words(WORRIED))) == 0  # what libzim's AND query gives
    knowledge = make_kb()
    knowledge.add([handbook])
    hits = knowledge.search(WORRIED, k=3)
    assert hits and hits[0].article == "A/Water_purification.html"
    assert "two drops" in hits[0].text and hits[0].kind == "zim"


def test_rare_words_decide_which_articles_are_read(handbook):
    archive = open_archive(handbook)
    articles, weights = rank_articles(archive, "my laptop lost its fixed network address after the update")
    assert articles[0] == "A/sect.network-config.html"
    # Words in no article are dropped (they would empty every AND query); rarer words weigh more.
    assert "laptop" not in weights and "update" not in weights
    assert set(weights) >= {"fixed", "network", "address"}


def test_stop_word_only_questions_find_nothing_and_do_not_crash(make_kb, handbook):
    knowledge = make_kb()
    knowledge.add([handbook])
    for question in ("what is it and how do you do that?", "?!", "the the the", "a an of to"):
        assert knowledge.search(question, k=5) == []
    assert rank_articles(open_archive(handbook), "what is it and how do you do that?") == ([], {})
    assert knowledge.search("zqxv wplk", k=5) == []  # words in no article


def test_an_off_topic_question_abstains(make_kb, handbook):
    knowledge = make_kb()
    knowledge.add([handbook])
    assert knowledge.search("who won the 1998 football world cup", k=5) == []
    assert knowledge.search("recipe for chocolate chip cookies", k=5) == []


def test_dotted_numbers_stay_one_word_and_stop_words_go():
    assert question_words("why is 0.1 + 0.2 not 0.3 in python 3.11") == ["0.1", "0.2", "0.3", "3.11", "python"]
    assert question_words("how do I do it?") == []


def test_the_article_path_is_in_the_citation_and_the_json(make_kb, handbook):
    knowledge = make_kb()
    knowledge.add([handbook])
    hit = knowledge.search("which root password should I choose when installing", k=1)[0]
    assert hit.article == "A/sect.install-steps.html"
    source = hit.source(2)
    assert source.cite(short=True) == "[2] handbook.zim › 4.2 Installing, Step by Step › Administrator Password"
    assert source.as_dict()["article"] == "A/sect.install-steps.html"
    assert hit.as_dict()["article"] == "A/sect.install-steps.html"


@pytest.mark.slow
def test_kb_search_json_gives_the_article_path(handbook):
    assert run_appliance("kb", "add", str(handbook)).returncode == 0
    found = run_appliance("kb", "search", "--json", "set a static ip address on the network card")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert hits[0]["article"] == "A/sect.network-config.html" and hits[0]["path"] == str(handbook)
    assert hits[0]["title"] == "8.2 Configuring the Network"
    text = run_appliance("kb", "search", "set a static ip address on the network card")
    assert text.stdout.splitlines()[0].startswith(f"[1] {handbook} › 8.2 Configuring the Network › Static address")


def test_the_work_per_question_and_the_caches_are_bounded(make_kb, handbook, monkeypatch):
    monkeypatch.setattr(zim_search, "CACHE", 3)
    monkeypatch.setattr(zim_search, "ARTICLE_CACHE", 2)
    monkeypatch.setattr(zim_search, "ARTICLES", 2)
    knowledge = make_kb()
    knowledge.add([handbook])
    asked = []
    for question in ("bleach drops per litre of water", "cool a burn with running water",
                     "generator in the garage carbon monoxide", "root password for the installer"):
        articles, _ = rank_articles(knowledge.zims.archive(str(handbook)), question)
        asked.append(len(articles))
        knowledge.search(question, k=5)
        cached = knowledge.zims.cached()
        assert cached["vectors"] <= 3 and cached["articles"] <= 2
    assert max(asked) <= 2


def test_the_title_index_works_after_the_archive_is_opened(handbook):
    # libzim opens the title index lazily through the /proc/self/fd path the archive was opened by: the shelf
    # keeps that descriptor open as long as the archive.
    from libzim.suggestion import SuggestionSearcher

    shelf = ZimShelf()
    archive = shelf.archive(str(handbook))
    fixtures.make_zim(handbook.parent / "other.zim", {"x.html": ("Other", [("S", "text")])})  # new descriptors
    suggested = list(SuggestionSearcher(archive).suggest("Water purification").getResults(0, 3))
    assert suggested == ["A/Water_purification.html"]
    shelf.close()


def test_section_vectors_are_kept_on_disk_for_a_later_session_and_dropped_with_the_archive(make_kb, handbook,
                                                                                           tmp_path, embedded):
    """A new process (a new KnowledgeBase on the same folder) asking again embeds no section: the vectors come from
    the disk cache, and the hits are the same to the last digit (vectors go through fp16 either way). Removing the
    archive empties that cache; a cache folder that cannot be written only costs embedding again."""
    first = make_kb(tmp_path / "kb")
    first.add([handbook])
    before = [(h.article, h.heading, round(h.score, 6)) for h in first.search(WORRIED, k=3)]
    assert before and embedded  # the sections were embedded once
    cache_files = list((tmp_path / "kb" / "cache").glob("zim-sections-*.sqlite"))
    assert len(cache_files) == 1
    first.close()

    embedded.clear()
    later = make_kb(tmp_path / "kb")
    again = [(h.article, h.heading, round(h.score, 6)) for h in later.search(WORRIED, k=3)]
    assert again == before and embedded == []  # nothing embedded: every section vector came from disk

    later.remove(handbook)
    later.add([handbook])
    embedded.clear()
    later.search(WORRIED, k=3)
    assert embedded  # the removed archive's vectors went with it
    later.close()

    # The cache folder is a file: searching still works, the vectors are only not kept.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "cache").write_text("not a folder")
    embedded.clear()
    unkept = make_kb(blocked)
    unkept.add([handbook])
    hits = unkept.search(WORRIED, k=3)
    assert hits and hits[0].article == "A/Water_purification.html" and embedded
