"""The sentence-vector cache behind quotes and claims: the same vectors as the embedder, each text embedded once,
kept across runs on disk, and never a failure of its own."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.models import packs
from kb.embedder import Embedder
from kb.vector_cache import VectorCache

TEXTS = ["Boil water for one minute.", "Add 8 drops of bleach per gallon.", "Boil water for one minute."]


@pytest.fixture(scope="module")
def embedder():
    return Embedder(packs.EMBEDDER_ONNX.locate(), packs.EMBEDDER_TOKENIZER.locate())


class Counting:
    def __init__(self, embedder):
        self.embedder, self.texts = embedder, []

    def __call__(self, texts):
        self.texts += texts
        return self.embedder.embed(texts)


def test_cached_vectors_are_the_embedders_and_each_text_is_embedded_once(embedder, tmp_path):
    counting = Counting(embedder)
    cache = VectorCache(counting, tmp_path / "cache" / "v.sqlite")
    first = cache(TEXTS)
    assert counting.texts == TEXTS[:2]  # the repeated text once
    np.testing.assert_allclose(first, embedder.embed(TEXTS), atol=2e-3)
    cache(TEXTS[:2])
    assert counting.texts == TEXTS[:2]  # from memory
    cache.close()
    # A new process (a new cache object) reads them from disk: nothing embedded again.
    again = Counting(embedder)
    reread = VectorCache(again, tmp_path / "cache" / "v.sqlite")(TEXTS)
    assert again.texts == []
    np.testing.assert_allclose(reread, first, atol=2e-3)


def test_a_cache_that_cannot_be_written_only_costs_time(embedder, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    counting = Counting(embedder)
    vectors = VectorCache(counting, blocker / "v.sqlite")(TEXTS)
    assert vectors.shape == (3, 384) and counting.texts == TEXTS[:2]
