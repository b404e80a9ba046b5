"""The embedder's folded graph kept in the library's cache folder (kb/embedder.py): the same vectors to the bit,
and a damaged, foreign or impossible cache only means folding again."""

from __future__ import annotations

import json

import numpy as np

from kb.embedder import Embedder

TEXTS = ["How do I purify water?", "Boil it for one minute, three above 2,000 metres.", "word " * 300]


def test_the_folded_graph_is_kept_and_gives_the_same_vectors(tmp_path, embedder_files):
    plain = Embedder(*embedder_files).embed(TEXTS)
    cache = tmp_path / "cache"
    first = Embedder(*embedder_files, cache_dir=cache)
    assert not first.prepared
    kept = sorted(cache.glob("embedder-*"))
    assert [p.suffix for p in kept] == [".json", ".onnx"] and not list(cache.glob(".*partial"))
    assert json.loads(kept[0].read_text())["model"] == first.files()["model"]
    second = Embedder(*embedder_files, cache_dir=cache)
    assert second.prepared
    assert np.array_equal(first.embed(TEXTS), plain) and np.array_equal(second.embed(TEXTS), plain)


def test_a_damaged_or_foreign_folded_graph_is_folded_again(tmp_path, embedder_files):
    plain = Embedder(*embedder_files).embed(TEXTS)
    cache = tmp_path / "cache"
    Embedder(*embedder_files, cache_dir=cache)
    graph = next(cache.glob("embedder-*.onnx"))
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    damaged = Embedder(*embedder_files, cache_dir=cache)
    assert not damaged.prepared and np.array_equal(damaged.embed(TEXTS), plain)
    assert Embedder(*embedder_files, cache_dir=cache).prepared  # written again, whole
    (cache / "embedder-0000-ort0-0000.onnx").write_bytes(b"another CPU's")
    graph.unlink()
    Embedder(*embedder_files, cache_dir=cache)
    assert sorted(p.name for p in cache.glob("embedder-*.onnx")) == [graph.name]  # one per library


def test_a_cache_folder_that_cannot_be_written_costs_only_the_folding(tmp_path, embedder_files):
    plain = Embedder(*embedder_files).embed(TEXTS)
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the folder would be")
    embedder = Embedder(*embedder_files, cache_dir=blocked)
    assert not embedder.prepared and np.array_equal(embedder.embed(TEXTS), plain)
