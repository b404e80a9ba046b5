"""The vector index (chroma) is a copy: damaged as chroma leaves it after a full disk (0-byte or cut-short HNSW
files), lost, or carrying a configuration that names code to run, it is rebuilt from the vectors SQLite keeps,
automatically with a notice or by `appliance kb repair`; never by reading a source file or embedding again."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import kb.knowledge_base as knowledge_base
from kb import vectors as vector_index
from kb.embedder import Embedder
from kb.store import VECTOR_BYTES
from tests.conftest import run_appliance
from tests.kb import fixtures


@pytest.fixture(autouse=True)
def through_the_index(monkeypatch):
    """These libraries are small; searched here through the vector index, as a library of over EXACT_SCAN_MAX
    passages is (a smaller one is searched by an exact scan of the store and needs no index to answer)."""
    monkeypatch.setattr(knowledge_base, "EXACT_SCAN_MAX", 0)


@pytest.fixture
def big(make_kb, library, tmp_path) -> Path:
    """A closed library of 1,200+ passages (chroma has persisted its HNSW files) whose source files are gone."""
    knowledge = make_kb(tmp_path / "big-kb")
    assert knowledge.add([library]).added == 5
    fixtures.add_synthetic(knowledge, 1200)
    assert knowledge.verify()["ok"]
    knowledge.close()
    shutil.rmtree(library)  # a repair must not need them
    return tmp_path / "big-kb"


def segment(kb_dir: Path) -> Path:
    (directory,) = [p for p in (kb_dir / "chroma").iterdir() if p.is_dir()]
    assert (directory / "index_metadata.pickle").stat().st_size > 0, "chroma has not persisted its files yet"
    return directory


def passages(kb_dir: Path) -> int:
    db = sqlite3.connect(kb_dir / "text.sqlite")
    try:
        return db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    finally:
        db.close()


def no_embedding(monkeypatch) -> None:
    def refuse(self, texts, batch_size=8):
        raise AssertionError("a repair embedded passages again")

    monkeypatch.setattr(Embedder, "embed", refuse)


def test_every_passage_keeps_its_vector_next_to_its_text(make_kb, library):
    knowledge = make_kb()
    knowledge.add([library])
    db = sqlite3.connect(knowledge.directory / "text.sqlite")
    rows = db.execute("SELECT id, length(vector), vector FROM chunks").fetchall()
    db.close()
    assert rows and all(length == VECTOR_BYTES for _, length, _ in rows)
    assert knowledge.store.bad_vectors() == 0
    ids = [str(chunk_id) for chunk_id, _, _ in rows]
    indexed = knowledge.vectors.collection.get(ids=ids, include=["embeddings"])
    by_id = dict(zip(indexed["ids"], indexed["embeddings"], strict=True))
    for chunk_id, _, blob in rows:
        stored = np.frombuffer(blob, dtype=np.float16).astype(np.float32)
        assert np.allclose(stored, by_id[str(chunk_id)], atol=2e-3)


@pytest.mark.parametrize("damage", ["empty pickle", "empty link lists", "cut short"])
def test_a_damaged_index_is_rebuilt_on_open_with_a_notice(make_kb, big, monkeypatch, damage):
    files = segment(big)
    if damage == "empty pickle":
        (files / "index_metadata.pickle").write_bytes(b"")
    elif damage == "empty link lists":
        (files / "link_lists.bin").write_bytes(b"")
    else:
        data = files / "data_level0.bin"
        os.truncate(data, data.stat().st_size // 2 + 7)
    seen = vector_index.problem(big / "chroma")
    assert seen and ("index_metadata.pickle" in seen or "link_lists.bin" in seen or "data_level0.bin" in seen)
    no_embedding(monkeypatch)
    knowledge = make_kb(big)
    hits = knowledge.search("my hand got burned on the stove what do i do", k=3)
    assert hits and hits[0].path.endswith("first-aid.html") and hits[0].heading == "First aid > Burns"
    (notice,) = knowledge.take_notices()
    assert "rebuilding it from the library's own store" in notice and seen in notice
    check = knowledge.verify()
    assert check["ok"] and check["chunks"] == passages(big) > 1200
    assert [p.name for p in vector_index.directories(big)] == ["chroma-1"]
    assert vector_index.problem(big / "chroma-1") is None


@pytest.mark.slow
def test_kb_repair_rebuilds_from_the_store(big, appliance_home):
    shutil.copytree(big, appliance_home / "kb")
    (segment(appliance_home / "kb") / "index_metadata.pickle").write_bytes(b"")
    repaired = run_appliance("kb", "repair", "--json")
    assert repaired.returncode == 0, repaired.stderr
    report = json.loads(repaired.stdout)
    assert report["ok"] and report["vectors"] == passages(big) and report["database"] == "ok"
    assert "index_metadata.pickle is empty" in report["problem_found"]
    again = run_appliance("kb", "repair")
    assert again.returncode == 0 and "nothing was wrong with it" in again.stdout and "check: ok" in again.stdout
    found = run_appliance("kb", "search", "--json", "how do I cool a burn")
    assert found.returncode == 0 and json.loads(found.stdout)["hits"][0]["path"].endswith("first-aid.html")


@pytest.mark.slow
def test_kb_search_rebuilds_a_damaged_index_and_says_so(big, appliance_home):
    shutil.copytree(big, appliance_home / "kb")
    (segment(appliance_home / "kb") / "link_lists.bin").write_bytes(b"")
    found = run_appliance("kb", "search", "how do I cool a burn")
    assert found.returncode == 0, found.stderr
    assert "first-aid.html" in found.stdout
    assert "the vector index is damaged (link_lists.bin is empty" in found.stderr
    assert f"vector index rebuilt: {passages(big)} passages" in found.stderr and "Traceback" not in found.stderr


def test_a_configuration_naming_an_embedding_function_is_never_opened(make_kb, big):
    database = big / "chroma" / "chroma.sqlite3"
    db = sqlite3.connect(database)
    (config,) = db.execute("SELECT config_json_str FROM collections").fetchone()
    planted = json.loads(config or "{}")
    planted["embedding_function"] = {"type": "known", "name": "default", "config": {}}
    db.execute("UPDATE collections SET config_json_str=?", (json.dumps(planted),))
    db.commit()
    db.close()
    problem = vector_index.problem(big / "chroma")
    assert problem and "names an embedding function" in problem and '"default"' in problem
    knowledge = make_kb(big)
    assert knowledge.vector_problem() == problem
    knowledge.rebuild_vectors()
    fresh = sqlite3.connect(big / "chroma-1" / "chroma.sqlite3")
    texts = fresh.execute("SELECT config_json_str, schema_str FROM collections").fetchone()
    fresh.close()
    assert '"default"' not in "".join(t or "" for t in texts)
    assert vector_index.problem(big / "chroma-1") is None and knowledge.verify()["ok"]


def test_a_lost_index_directory_is_rebuilt(make_kb, big, monkeypatch):
    shutil.rmtree(big / "chroma")
    no_embedding(monkeypatch)
    knowledge = make_kb(big)
    assert knowledge.vector_problem() == f"it holds 0 vectors for {passages(big)} passages"
    assert knowledge.search("cool a burn under running water")[0].path.endswith("first-aid.html")
    assert knowledge.verify()["ok"]


def test_search_scans_the_store_while_the_index_cannot_be_rebuilt(make_kb, big):
    (segment(big) / "index_metadata.pickle").write_bytes(b"")
    with open(big / "ingest.lock", "a+") as other_program:
        fcntl.flock(other_program, fcntl.LOCK_EX)  # another process is changing the library
        knowledge = make_kb(big)
        hits = knowledge.search("my hand got burned on the stove what do i do", k=3)
        assert hits and hits[0].path.endswith("first-aid.html") and hits[0].heading == "First aid > Burns"
        assert any("searched the library's own store instead" in n for n in knowledge.take_notices())
        assert vector_index.directories(big) == [big / "chroma"]  # nothing rebuilt behind the other's back
    assert knowledge.search("cool a burn")[0].path.endswith("first-aid.html")
    assert vector_index.directories(big) == [big / "chroma-1"]


def test_a_sound_index_is_never_taken_for_a_damaged_one(make_kb, tmp_path):
    """chroma writes its files for the vectors present or for its whole capacity, persists every 1,000 additions
    and marks deletions: none of that may look like damage."""
    directory = tmp_path / "kb"
    for round_, passages in enumerate([1, 999, 2, 1500, 250]):
        knowledge = make_kb(directory)
        assert knowledge.vector_problem() is None, round_
        fixtures.add_synthetic(knowledge, passages, seed=round_)
        if round_ == 3:
            first = knowledge.store.documents()[0]
            knowledge.remove(first.path)
        knowledge.close()
    assert vector_index.directories(directory) == [directory / "chroma"]
