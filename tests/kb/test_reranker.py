"""The reranker (kb.reranker: all-mpnet-base-v2 in numpy) with the real pack's weights, and search with it."""

from __future__ import annotations

import os
import shutil

import pytest

from appliance.answering.knowledge import reranker_files
from appliance.models import packs
from kb import KBError, KnowledgeBase
from kb import search as ranking
from kb.reranker import Reranker, RerankerFiles

QUESTION = "How long should I boil water so it is safe to drink?"
TEXTS = ["Water > Boiling\nBring water to a rolling boil for one minute; three minutes above 2000 metres.",
         "Car repair > Jump starting\nConnect the red clamp to the positive terminal of the flat battery first.",
         "First aid > Burns\nCool a burn under cool running water for twenty minutes; do not use ice. " * 4]
# sentence-transformers 5 with torch on the same files, max_seq_length 64 (the third text is cut there):
REFERENCE_COSINES = [0.495194, 0.042545, 0.508644]
REFERENCE_QUERY_HEAD = [-0.019705, -0.047244, 0.015091, -0.050376]


@pytest.fixture(scope="module")
def files() -> RerankerFiles:
    """The installed pack's files (module scope: found before tests/conftest.py hides the packs folder)."""
    found = reranker_files()
    assert found is not None, "the reranker pack is installed by the set-up (./scripts/test)"
    return found


@pytest.fixture(scope="module")
def model(files) -> Reranker:
    return Reranker(files.weights, files.tokenizer, weights_sha256=files.weights_sha256,
                    tokenizer_sha256=files.tokenizer_sha256)


def test_the_numpy_forward_pass_gives_sentence_transformers_vectors(model):
    assert model.score(QUESTION, TEXTS) == pytest.approx(REFERENCE_COSINES, abs=1e-5)
    assert [float(x) for x in model.embed([QUESTION])[0][:4]] == pytest.approx(REFERENCE_QUERY_HEAD, abs=1e-5)
    # batched or one at a time, in any order: the same vectors
    assert model.embed(TEXTS[::-1], batch_size=1)[::-1] == pytest.approx(model.embed(TEXTS, batch_size=3), abs=1e-5)


def test_a_truncated_or_foreign_weights_file_is_one_clear_error(tmp_path, files):
    cut = tmp_path / "model.safetensors"
    with open(files.weights, "rb") as source, open(cut, "wb") as out:
        out.write(source.read(50_000_000))
    with pytest.raises(KBError, match="does not fit the file"):
        Reranker(cut, files.tokenizer)
    with pytest.raises(KBError, match="does not match its pin"):
        Reranker(cut, files.tokenizer, weights_sha256=files.weights_sha256)
    cut.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(KBError, match="header length"):
        Reranker(cut, files.tokenizer)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(KBError, match="reranker file"):
        Reranker(fifo, files.tokenizer)
    bad_tokenizer = tmp_path / "tokenizer.json"
    bad_tokenizer.write_text("{not json")
    with pytest.raises(KBError, match="tokenizer"):
        Reranker(files.weights, bad_tokenizer)


def test_search_orders_the_best_candidates_by_the_rerankers_cosine(tmp_path, library, embedder_files, files, model):
    knowledge = KnowledgeBase(tmp_path / "kb", *embedder_files, reranker=files)
    try:
        knowledge.add([library])
        query = "my car will not start, the battery is flat"
        plain = knowledge.search(query, k=3, rerank=False)
        hits = knowledge.search(query, k=3)
        assert hits and plain
        assert {h.chunk_id for h in hits} <= {h.chunk_id for h in knowledge.search(query, k=20, rerank=False)}
        cosines = model.score(query, [f"{h.heading}\n{h.text}" if h.heading else h.text for h in hits])
        hybrid = {h.chunk_id: h.score for h in knowledge.search(query, k=20, rerank=False)}
        # the score shown blends the reranker's cosine (through the fp16 vector cache) with the hybrid's, best first
        expected = [ranking.RERANK_WEIGHT * c + (1 - ranking.RERANK_WEIGHT) * hybrid[h.chunk_id]
                    for c, h in zip(cosines, hits, strict=True)]
        assert [h.score for h in hits] == pytest.approx(expected, abs=2e-3)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert "battery" in hits[0].text.lower()
        # the passages' vectors are cached on disk: a second library object reads them back
        assert list((tmp_path / "kb" / "cache").glob("rerank-vectors-*.sqlite"))
        assert knowledge.search("What is the capital of the moon's spreadsheet?", k=3) == []  # the floor still rules
    finally:
        knowledge.close()


def test_a_reranker_that_cannot_load_is_named_and_search_goes_on(tmp_path, library, embedder_files, files):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(files.tokenizer, broken / "tokenizer.json")
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    knowledge = KnowledgeBase(tmp_path / "kb", *embedder_files,
                              reranker=RerankerFiles(broken / "model.safetensors", broken / "tokenizer.json",
                                                     files.weights_sha256, files.tokenizer_sha256))
    try:
        knowledge.add([library])
        hits = knowledge.search("my car battery is flat", k=3)
        assert hits == knowledge.search("my car battery is flat", k=3, rerank=False) != []
        notices = knowledge.take_notices()
        assert any("reranker is not used" in n and "does not match its pin" in n for n in notices)
        assert knowledge.take_notices() == []  # named once
    finally:
        knowledge.close()


def test_reranked_keeps_the_tail_and_diversity():
    def cand(key, path, cosine):
        return ranking.Candidate(key, path, "t", "h", None, f"text {key}", "md", cosine)

    scored = [(0.9 - i / 100, cand(i, f"/f{i % 3}", 0.9 - i / 100)) for i in range(8)]
    flipped = ranking.reranked("q", scored, lambda q, texts: [i for i in range(len(texts))], n=4)
    head = [c.key for _, c in flipped[:4]]
    # the 4 best in diverse order are keys 0, 1, 2, 3 (at most 2 per file while others have some): reversed
    assert head == [3, 2, 1, 0]
    assert [c.key for _, c in flipped[4:]] == [4, 5, 6, 7]
    weight = ranking.RERANK_WEIGHT
    assert [s for s, _ in flipped[:4]] == pytest.approx([weight * i + (1 - weight) * (0.9 - i / 100)
                                                         for i in (3, 2, 1, 0)])


def test_the_pack_files_are_what_the_knowledge_handle_passes(files):
    assert (files.weights.parent.name, files.weights.name) == ("all-mpnet-base-v2", "model.safetensors")
    assert files.weights_sha256 == packs.RERANKER.member("weights").sha256
    assert files.tokenizer_sha256 == packs.RERANKER.member("tokenizer").sha256
    assert reranker_files(enabled=False) is None
    # the tests hide the packs folder (tests/conftest.py): a set-up without the pack ranks without it
    assert not packs.RERANKER.installed and reranker_files() is None
