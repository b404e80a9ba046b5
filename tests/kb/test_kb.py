"""The KnowledgeBase on real parts: ingest every format, search, skip, replace, remove, bad input, threads."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest

import kb.knowledge_base as knowledge_base
from kb import Hit, IngestProgress, KBError, Source
from kb.embedder import Embedder
from kb.search import Candidate, by_cosine, fuse, lexical_only, rrf


@pytest.fixture
def filled(make_kb, library):
    knowledge = make_kb()
    report = knowledge.add([library])
    assert report.failed == [] and report.added == 5
    return knowledge


def test_ingest_every_format_and_search_finds_the_right_file(filled, library):
    kinds = {d["kind"] for d in filled.documents()}
    assert kinds == {"md", "txt", "html", "pdf", "epub"}
    cases = {
        "how many drops of bleach to make water safe to drink": ("water.md", "Water > Purifying with bleach", None),
        "my hand got burned on the stove what do i do": ("first-aid.html", "First aid > Burns", None),
        "car won't start, battery dead, how to connect jumper cables": ("car.txt", "JUMP STARTING", None),
        "is it safe to run the generator in the garage": ("power.pdf", "Generators", 1),
        "which knot makes a loop that doesn't slip": ("shelter.epub", "Knots", None),
    }
    for query, (name, heading, page) in cases.items():
        hits = filled.search(query, k=3)
        assert hits, query
        top = hits[0]
        assert isinstance(top, Hit)
        assert top.path.endswith(name), (query, [h.path for h in hits])
        assert top.heading == heading and top.page == page
        assert top.snippet and top.snippet in top.text or top.snippet.rstrip(" .") in top.text
        assert 0 < top.score <= 1


def test_unanswerable_question_returns_nothing(filled):
    assert filled.search("who won the football world cup in 1998", k=5) == []
    assert filled.search("what is the capital city of peru", k=5) == []


def test_documents_and_stats(filled, embedder_files):
    documents = filled.documents()
    assert {"path", "title", "kind", "chunks", "added"} <= set(documents[0])
    stats = filled.stats()
    assert stats["documents"] == 5 and stats["chunks"] == sum(d["chunks"] for d in documents)
    assert stats["zims"] == 0 and stats["size_bytes"] > 0
    # The embedder files are recorded by sha256 with the vectors they made.
    from kb.embedder import sha256_of

    assert stats["embedder"] == {"model": sha256_of(embedder_files[0]), "tokenizer": sha256_of(embedder_files[1])}
    assert filled.verify()["ok"]


def test_unchanged_files_are_skipped_and_changed_ones_replaced(filled, library):
    again = filled.add([library])
    assert (again.added, again.skipped, again.replaced, again.chunks) == (0, 5, 0, 0)
    note = library / "manuals" / "car.txt"
    note.write_text("CAR REPAIR\n\nTYRES\n\nTo change a flat tyre, loosen the wheel nuts before jacking up the car.\n")
    changed = filled.add([library])
    assert (changed.replaced, changed.skipped) == (1, 4)
    assert not filled.search("connect the red jumper cable to the dead battery", k=5) or \
        all(not h.path.endswith("car.txt") for h in filled.search("connect the red jumper cable", k=5))
    hits = filled.search("how do I change a flat tyre", k=1)
    assert hits and hits[0].path.endswith("car.txt") and hits[0].heading == "TYRES"
    assert len([d for d in filled.documents() if d["path"].endswith("car.txt")]) == 1
    assert filled.verify()["ok"]


def test_remove_a_file_and_a_directory(filled, library):
    chunks = next(d["chunks"] for d in filled.documents() if d["path"].endswith("power.pdf"))
    assert filled.remove(library / "power.pdf") == chunks
    assert all(not h.path.endswith("power.pdf") for h in filled.search("generator carbon monoxide garage", k=5))
    assert filled.remove(library / "manuals") > 0
    assert {d["kind"] for d in filled.documents()} == {"html", "epub"}
    with pytest.raises(KBError, match="not in the knowledge base"):
        filled.remove(library / "nothing-here.txt")
    assert filled.verify()["ok"]


def test_one_long_file_cannot_fill_the_top(make_kb, tmp_path, library):
    long = tmp_path / "long" / "bleach-book.md"
    long.parent.mkdir()
    sections = "\n\n".join(f"## Bleach note {i}\n\nUnscented chlorine bleach disinfects water: drops of bleach per "
                           f"litre of water, case {i}." for i in range(12))
    long.write_text(f"# Bleach book\n\n{sections}\n")
    knowledge = make_kb()
    knowledge.add([long, library / "manuals" / "water.md"])
    hits = knowledge.search("how much bleach per litre of water", k=3)
    assert len(hits) == 3
    assert any(h.path.endswith("water.md") for h in hits)
    assert sum(h.path.endswith("bleach-book.md") for h in hits) == 2


def test_bad_inputs_are_reported_and_the_rest_is_ingested(make_kb, tmp_path, library):
    from tests.kb import fixtures

    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copy(library / "manuals" / "water.md", batch / "good.md")
    (batch / "junk.txt").write_bytes(bytes(range(256)) * 40)
    (batch / "latin1.txt").write_bytes("R\xe9chaud: never use a stove inside the tent.".encode("latin-1"))
    (batch / "broken.pdf").write_bytes(b"%PDF-1.7\n%%EOF garbage")
    fixtures.encrypt_pdf(library / "power.pdf", batch / "locked.pdf")
    fixtures.make_zip_bomb(batch / "bomb.epub", megabytes=320)
    (batch / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    knowledge = make_kb()
    report = knowledge.add([batch, empty, tmp_path / "missing.md"])
    failed = dict(report.failed)
    assert set(failed) == {str(batch / "junk.txt"), str(batch / "broken.pdf"), str(batch / "locked.pdf"),
                           str(batch / "bomb.epub"), str(empty), str(tmp_path / "missing.md")}
    assert "binary" in failed[str(batch / "junk.txt")]
    assert "encrypted" in failed[str(batch / "locked.pdf")]
    assert "zip bomb" in failed[str(batch / "bomb.epub")]
    assert "no supported files" in failed[str(empty)]
    assert "no such file" in failed[str(tmp_path / "missing.md")]
    assert report.added == 2 and report.ignored == 1
    assert any("not UTF-8" in note for _, note in report.notes)
    assert {d["path"] for d in knowledge.documents()} == {str(batch / "good.md"), str(batch / "latin1.txt")}
    assert knowledge.verify()["ok"]


def test_a_file_that_vanishes_mid_ingest_is_reported(make_kb, tmp_path, library):
    batch = tmp_path / "batch"
    batch.mkdir()
    for name in ("a.md", "b.md", "c.md"):
        shutil.copy(library / "manuals" / "water.md", batch / name)
    knowledge = make_kb()

    def progress(p: IngestProgress):
        if p.current.endswith("a.md") and (batch / "b.md").exists():
            (batch / "b.md").unlink()

    report = knowledge.add([batch], progress=progress)
    assert report.failed == [(str(batch / "b.md"), "vanished before it could be read")]
    assert report.added == 2 and knowledge.verify()["ok"]


def test_a_full_disk_writes_nothing_half(make_kb, library, tmp_path):
    knowledge = make_kb()
    knowledge.add([library / "manuals" / "water.md"])
    before = knowledge.stats()["chunks"]
    # Cap the database at its current size: the next write fails with SQLite's real "database or disk is full".
    pages = knowledge.store.db.execute("PRAGMA page_count").fetchone()[0]
    knowledge.store.db.execute(f"PRAGMA max_page_count={pages + 1}")
    report = knowledge.add([library])
    assert report.failed and all("disk is full" in reason for _, reason in report.failed)
    assert report.stopped and "the disk is full" in report.stopped
    assert report.added + report.skipped + len(report.failed) + len(report.not_added) == 5
    assert len(knowledge.documents()) == 1 + report.added
    assert knowledge.stats()["chunks"] == before + report.chunks
    check = knowledge.verify()
    assert check["ok"], check
    knowledge.store.db.execute("PRAGMA max_page_count=1073741823")
    retry = knowledge.add([library])
    assert retry.failed == [] and len(knowledge.documents()) == 5


def test_progress_reports_files_chunks_rate(make_kb, library):
    seen: list[IngestProgress] = []
    knowledge = make_kb()
    knowledge.add([library], progress=seen.append)
    assert seen[-1].files_done == seen[-1].files_total == 5
    assert seen[-1].chunks_done == knowledge.stats()["chunks"]
    assert max(p.rate for p in seen) > 0
    assert any(p.eta_s is not None for p in seen)


def test_cancel_stops_between_files(make_kb, library):
    cancel = threading.Event()
    knowledge = make_kb()

    def progress(p: IngestProgress):
        if p.files_done >= 2:
            cancel.set()

    report = knowledge.add([library], progress=progress, cancel=cancel)
    assert report.cancelled and 0 < len(knowledge.documents()) < 5
    assert knowledge.pending()
    assert knowledge.verify()["ok"]
    resumed = knowledge.add([])
    assert not resumed.cancelled and len(knowledge.documents()) == 5 and knowledge.pending() == []


def test_usable_from_another_thread(make_kb, library):
    knowledge = make_kb()
    results = {}

    def worker():
        results["report"] = knowledge.add([library / "first-aid.html"])
        results["hits"] = knowledge.search("burn under cool running water")
        results["docs"] = knowledge.documents()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert results["report"].added == 1 and results["hits"] and len(results["docs"]) == 1
    assert knowledge.search("burn under cool running water")[0].path == results["hits"][0].path


def test_a_kb_built_with_another_embedder_is_refused(make_kb, library):
    knowledge = make_kb()
    knowledge.add([library / "first-aid.html"])
    knowledge.store.set_meta("embedder", json.dumps({"model": "0" * 64, "tokenizer": "1" * 64}))
    knowledge.close()
    reopened = make_kb()
    with pytest.raises(KBError, match="another embedder"):
        reopened.search("burns")


def test_embedder_pads_to_the_longest_and_masks_padding(embedder_files):
    embedder = Embedder(*embedder_files)
    query = "purify water"
    alone = embedder.embed_query(query)
    batched = embedder.embed([query, "a much longer sentence " * 30])[0]
    assert np.allclose(alone, batched, atol=1e-4)
    assert abs(float(np.linalg.norm(alone)) - 1) < 1e-4
    encoding = embedder.tokenizer.encode(query)
    assert len(encoding.ids) < 10  # not padded to 256
    assert len(embedder.tokenizer.encode("word " * 1000).ids) == 256
    similar, unrelated = embedder.embed(["how to disinfect drinking water", "the stock market fell today"])
    assert float(similar @ alone) > float(unrelated @ alone) + 0.2


def test_chroma_holds_only_vectors_and_can_be_rebuilt(filled, monkeypatch):
    monkeypatch.setattr(knowledge_base, "EXACT_SCAN_MAX", 0)  # searched through the index, as a large library is
    count = filled.vectors.count()
    assert count == filled.stats()["chunks"]
    got = filled.vectors.collection.get(limit=1, include=["documents"])
    assert got["documents"] == [None]
    filled.vectors.collection.delete(ids=[str(i) for i in filled.vectors.ids()])  # a lost vector index
    assert filled.search("cool the burn under running water", mode="vector") == []
    assert filled.rebuild_vectors() == count
    assert filled.verify()["ok"]
    assert filled.search("cool the burn under running water")[0].path.endswith("first-aid.html")


def test_a_small_library_is_searched_without_opening_the_vector_index(filled, embedder_files, monkeypatch):
    """Up to EXACT_SCAN_MAX passages the store's exact scan finds the nearest vectors: in a new process (every
    `ask`), chromadb is never imported, and the hits are those the index finds."""
    query = "my hand got burned on the stove what do i do"
    expected = [(h.path, h.heading) for h in filled.search(query, k=3)]
    monkeypatch.setattr(knowledge_base, "EXACT_SCAN_MAX", 0)
    assert [(h.path, h.heading) for h in filled.search(query, k=3)] == expected
    directory = filled.directory
    filled.close()
    code = ("import json, sys; from kb import KnowledgeBase; "
            "k = KnowledgeBase(*sys.argv[1:4]); hits = k.search(sys.argv[4], k=3); "
            "print(json.dumps([[[h.path, h.heading] for h in hits], 'chromadb' in sys.modules]))")
    found = subprocess.run([sys.executable, "-c", code, str(directory), *map(str, embedder_files), query],
                           capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    hits, imported = json.loads(found.stdout)
    assert [tuple(h) for h in hits] == expected and not imported


def test_fts_holds_the_text(filled):
    db = sqlite3.connect(filled.directory / "text.sqlite")
    rows = db.execute("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH 'bowline'").fetchall()
    assert len(rows) == 1


def test_a_hit_is_the_one_source_type(filled, library):
    hit = filled.search("is it safe to run the generator in the garage", k=1)[0]
    assert hit.source(2) == Source(path=str(library / "power.pdf"), title="Field Manual", section="Generators", page=1,
                                   snippet=hit.snippet, score=round(hit.score, 4), number=2)
    assert hit.source(2).cite() == f"[2] {library / 'power.pdf'}, Generators, page 1"
    assert hit.source().number is None and hit.as_dict()["article"] is None


def _candidate(key: int, path: str, cosine: float, **ranks) -> Candidate:
    return Candidate(key, path, "T", "H", None, f"text {key}", "md", cosine, dict(ranks))


def test_one_diversity_rule_for_every_ranking_mode():
    crowded = [_candidate(i, "/a.md", 0.9 - i / 100, vector=i, bm25=i) for i in range(5)]
    others = [_candidate(10 + i, f"/{i}.md", 0.5, vector=10 + i, bm25=10 + i) for i in range(2)]
    for rank in (lambda c: fuse(c, 4), lambda c: by_cosine(c, 4, []), lambda c: lexical_only(c, 4, []),
                 lambda c: rrf(c, 4)):
        paths = [h.path for h in rank(crowded + others)]
        assert paths.count("/a.md") == 2 and len(paths) == 4, paths  # two from the crowded file, then the others
        alone = [h.path for h in rank(crowded)]
        assert alone == ["/a.md"] * 4  # one file fills the rest only when nothing else is left


def test_an_unknown_search_mode_is_refused(filled):
    with pytest.raises(KBError, match="unknown search mode"):
        filled.search("water", mode="magic")
