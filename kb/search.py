"""Search: candidates from the vector index and BM25 (FTS5), every ranking mode, and per-source diversity.

The default ("hybrid") reranks the union of both candidate lists by each passage's exact cosine similarity
(computed from the fp16 vector kept in SQLite, so the relevance floor is an absolute measure whichever list found
the passage), adds a small boost for BM25's top ranks, drops what is below the floor, and keeps at most
PER_SOURCE passages from one file while other files still have some. A question the library cannot answer
returns nothing rather than noise. With a reranker (kb.reranker), the hybrid's RERANK_CANDIDATES best are then
ordered by a blend of its cosine and their own score. "vector", "bm25" and "rrf" (plain reciprocal rank fusion)
exist for scripts/eval_kb; all four share `diverse`.

`nearest` is whatever finds the nearest vectors: the store's exact scan for a library of up to
knowledge_base.EXACT_SCAN_MAX passages, or while the index cannot be used; the chroma index otherwise. Registered
ZIM archives add their own candidates (kb.zim).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from kb.errors import KBError
from kb.files import shown
from kb.source import Source

# Words that carry no topic: an FTS5 OR-query over them only adds noise and time.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can cannot could did do does doing down during each few for from further get gets got had has have having he her
here hers herself him himself his how i if in into is it its itself just let lets like me might more most much must
my myself need needs no nor not now of off on once only or other ought our ours ourselves out over own please same
shall she should so some such than that the their theirs them themselves then there these they this those through
to too under until up upon us use used using very via want was we were what when where which while who whom why will
with would you your yours yourself yourselves anyone someone something anything thing things way ways tell know
help make made really still also even ever just okay ok yes hi hello hey quick quickly urgent fast asap right
""".split())

_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCES = re.compile(r"(?<=[.!?:;])\s+|\n+")

RRF_K = 60
CANDIDATES = 40
PER_SOURCE = 2
# Relevance floor on the exact cosine (MiniLM): below FLOOR a hit is noise; a hit that BM25 ranks in its top 3
# (an exact term such as an error code) may pass with LEXICAL_FLOOR. On scripts/eval the best passage of every
# answerable question scores 0.43 or more and the best of every off-topic question 0.21 or less: the floor sits
# between, nearer the noise, so other manuals with plainer prose are not cut off.
FLOOR = 0.32
LEXICAL_FLOOR = 0.22
LEXICAL_BOOST = 0.05
MODES = ("hybrid", "vector", "bm25", "rrf")
LEXICAL = ("bm25", "zim")

# The second reading (kb.reranker): the RERANK_CANDIDATES best after the floor and the per-file diversity are read
# again by a stronger model and ordered by RERANK_WEIGHT * its cosine + the rest * their hybrid score. On the unseen
# set's tuning half (25 questions), with the project's own set as the guard (docs/knowledge-base.md):
#   weight 1.0: the right file in the top 5 for 23 (hybrid alone: 18), the key fact in the 3 passages the default
#               model reads for 12 (11), but the own set's quotes lost it for 5 of 70 (58 -> 53): not taken;
#   weight 0.5: the right file for 22, the fact in the top 3 for 15, the own set's quotes 59 of 70;
#   weight 0.3: the right file for 20, the fact in the top 3 for 15, own set 59.
# 8, 10, 12 and 16 candidates found the right file less often than 20. What passes the floor is still decided by the
# library's own cosine, so the reranker changes the order, never whether the library answers.
RERANK_CANDIDATES = 20
RERANK_WEIGHT = 0.5

Nearest = Callable[[np.ndarray, int], list[tuple[int, float]]]
Rerank = Callable[[str, list[str]], list[float]]


@dataclass
class Hit:
    score: float
    path: str  # as shown: a name that is not UTF-8 has its bytes as \xNN
    title: str
    heading: str
    page: int | None
    snippet: str
    text: str
    kind: str = ""
    cosine: float = 0.0
    chunk_id: int | None = None
    sources: list[str] = field(default_factory=list)  # which lists found it: "vector", "bm25", "zim", "heading"
    article: str = ""  # a ZIM hit: the article's path inside the archive, e.g. "A/sect.network-config.html"

    def source(self, number: int | None = None) -> Source:
        """Where this passage came from, as the one Source type (cite() writes the citation)."""
        section = self.heading
        if self.article and self.title:
            # A ZIM section's heading path starts with its article's title, which the citation already names.
            parts = self.heading.split(" > ")
            section = " > ".join(parts[1:] if parts and parts[0] == self.title else parts)
        return Source(path=self.path, title=self.title, section=section, page=self.page, snippet=self.snippet,
                      score=round(self.score, 4), number=number, article=self.article)

    def as_dict(self) -> dict:
        return {"score": round(self.score, 4), "path": self.path, "title": self.title, "heading": self.heading,
                "page": self.page, "article": self.article or None, "snippet": self.snippet, "text": self.text,
                "kind": self.kind, "cosine": round(self.cosine, 4), "found_by": self.sources}


def terms(query: str) -> list[str]:
    """The query's distinct words in order, stopwords and single letters left out (a dict keeps the order and
    makes each look-up constant: a list's `in` made 20,000 distinct words cost 0.36 s, growing with the square)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            seen[word] = None
    return list(seen)


def snippet(text: str, query_terms: list[str], limit: int = 240) -> str:
    """The sentence window that holds the most query terms, cut to about `limit` characters."""
    sentences = [s.strip() for s in _SENTENCES.split(text) if s and s.strip()]
    if not sentences:
        return text[:limit]
    stems = [t[:5] for t in query_terms]
    best, best_score = 0, -1
    for i, sentence in enumerate(sentences):
        low = sentence.lower()
        score = sum(1 for s in stems if s in low)
        if score > best_score:
            best, best_score = i, score
    out = sentences[best]
    j = best + 1
    while len(out) < limit * 0.6 and j < len(sentences):
        out += " " + sentences[j]
        j += 1
    if len(out) > limit:
        cut = out[:limit].rsplit(" ", 1)[0]
        out = cut + " ..."
    return out


@dataclass
class Candidate:
    key: object  # chunk id, or (zim path, article path, n) for ZIM sections
    path: str
    title: str
    heading: str
    page: int | None
    text: str
    kind: str
    cosine: float
    ranks: dict[str, int] = field(default_factory=dict)


def search(query: str, k: int, *, store, embedder, nearest: Nearest, zims=None, zim_paths: Sequence[str] = (),
           mode: str = "hybrid", floor: bool = True, rerank: Rerank | None = None) -> list[Hit]:
    """Best k passages for `query` by `mode`; empty when nothing in the library is relevant enough.
    floor=False keeps noise too (for evaluation); `rerank` (hybrid only) orders the best candidates again."""
    if mode not in MODES:
        raise KBError(f"unknown search mode {mode!r} (one of {', '.join(MODES)})")
    query = (query or "").strip()
    if not query or k <= 0:
        return []
    counts = store.counts()
    if not counts["documents"]:
        return []
    query_vector = embedder.embed_query(query)
    candidates: list[Candidate] = []
    if counts["chunks"]:
        candidates = local_candidates(store, nearest if mode != "bm25" else None, query_vector, query,
                                      use_bm25=mode != "vector")
    if zim_paths and zims is not None and mode != "vector":
        candidates += zims.candidates(list(zim_paths), query, query_vector, embedder)
    words = terms(query)
    if mode == "bm25":
        return lexical_only(candidates, k, words)
    if mode == "rrf":
        return rrf(candidates, k, words)
    if mode == "vector":
        return by_cosine(candidates, k, words, floor)
    floors = (FLOOR, LEXICAL_FLOOR) if floor else (-1.0, -1.0)
    scored = fused(candidates, *floors)
    if rerank is None or not scored:
        return diverse(scored, k, words)
    return diverse(reranked(query, scored, rerank), k, words, presorted=True)


def passage_text(cand: Candidate) -> str:
    """What the reranker reads of a candidate: where it sits, then its text."""
    return f"{cand.heading}\n{cand.text}" if cand.heading else cand.text


def reranked(query: str, scored: list[tuple[float, Candidate]], rerank: Rerank,
             n: int = RERANK_CANDIDATES) -> list[tuple[float, Candidate]]:
    """The n best (in `diverse`'s order) ordered by a blend of the reranker's cosine and their hybrid score (the
    blend becomes their score); the rest after them as they were."""
    ordered = _diverse_order(scored, len(scored), PER_SOURCE)
    head, tail = ordered[:n], ordered[n:]
    cosines = rerank(query, [passage_text(cand) for _, cand in head])
    head = sorted(((RERANK_WEIGHT * float(c) + (1 - RERANK_WEIGHT) * score, cand)
                   for c, (score, cand) in zip(cosines, head, strict=True)), key=lambda item: -item[0])
    return head + tail


def local_candidates(store, nearest: Nearest | None, query_vector: np.ndarray, query: str, use_bm25: bool = True,
                     n: int = CANDIDATES) -> list[Candidate]:
    """The union of the vector and BM25 candidate lists, each with its exact cosine and its ranks."""
    vector_ranks: dict[int, int] = {}
    if nearest is not None:
        for rank, (chunk_id, _) in enumerate(nearest(query_vector, n)):
            vector_ranks[chunk_id] = rank
    lexical_ranks: dict[int, int] = {}
    if use_bm25:
        for rank, chunk_id in enumerate(store.lexical(terms(query)[:16], n)):
            lexical_ranks[chunk_id] = rank
    rows = store.chunk_rows(set(vector_ranks) | set(lexical_ranks))
    if not rows:
        return []
    ids = list(rows)
    matrix = np.frombuffer(b"".join(rows[i][5] for i in ids), dtype=np.float16).reshape(len(ids), -1)
    cosines = matrix.astype(np.float32) @ query_vector
    out = []
    for chunk_id, cosine in zip(ids, cosines, strict=True):
        path, title, heading, page, text, _, kind = rows[chunk_id]
        ranks = {}
        if chunk_id in vector_ranks:
            ranks["vector"] = vector_ranks[chunk_id]
        if chunk_id in lexical_ranks:
            ranks["bm25"] = lexical_ranks[chunk_id]
        out.append(Candidate(chunk_id, path, title, heading, page, text, kind, float(cosine), ranks))
    return out


# --- ranking modes ----------------------------------------------------------------------------------------------
def _lexical_rank(cand: Candidate) -> int | None:
    found = [r for name, r in cand.ranks.items() if name in LEXICAL]
    return min(found) if found else None


def fuse(candidates: list[Candidate], k: int, floor: float = FLOOR, lexical_floor: float = LEXICAL_FLOOR,
         per_source: int = PER_SOURCE, query_terms: list[str] | None = None) -> list[Hit]:
    """Hybrid: exact-cosine rerank of the union of both lists, plus a small lexical boost; floor; diversity.

    The union matters most: BM25 brings in passages the approximate vector search missed, and every candidate is
    then scored by its exact cosine. The boost (LEXICAL_BOOST * 5 / (5 + BM25 rank)) lets an exact term (an error
    code, an option name) tip a close call. On scripts/eval this beats reciprocal rank fusion (see
    docs/knowledge-base.md).
    """
    return diverse(fused(candidates, floor, lexical_floor), k, query_terms or [], per_source)


def fused(candidates: list[Candidate], floor: float = FLOOR,
          lexical_floor: float = LEXICAL_FLOOR) -> list[tuple[float, Candidate]]:
    """The candidates that pass the floor, each with its hybrid score (exact cosine + lexical boost)."""
    scored = []
    for cand in candidates:
        lexical = _lexical_rank(cand)
        passes = cand.cosine >= floor or (lexical is not None and lexical < 3 and cand.cosine >= lexical_floor)
        if passes:
            boost = LEXICAL_BOOST * 5 / (5 + lexical) if lexical is not None else 0.0
            scored.append((cand.cosine + boost, cand))
    return scored


def by_cosine(candidates: list[Candidate], k: int, query_terms: list[str], floor: bool = True) -> list[Hit]:
    """Vector only: the exact cosine of what the vector index found."""
    scored = [(c.cosine, c) for c in candidates if "vector" in c.ranks and (not floor or c.cosine >= FLOOR)]
    return diverse(scored, k, query_terms)


def lexical_only(candidates: list[Candidate], k: int, query_terms: list[str]) -> list[Hit]:
    """BM25 only (and a ZIM archive's own index): by lexical rank, no floor."""
    scored = []
    for cand in candidates:
        rank = _lexical_rank(cand)
        if rank is not None:
            scored.append((1.0 / (RRF_K + 1 + rank), cand))
    return diverse(scored, k, query_terms)


def rrf(candidates: list[Candidate], k: int, query_terms: list[str] | None = None) -> list[Hit]:
    """Plain reciprocal rank fusion (vector rank + BM25 rank), no floor: kept for comparison in scripts/eval_kb."""
    by_vector = sorted((c for c in candidates if "vector" in c.ranks), key=lambda c: -c.cosine)
    vector_rank = {id(c): r for r, c in enumerate(by_vector)}
    scored = []
    for cand in candidates:
        score = sum(1.0 / (RRF_K + 1 + r) for name, r in cand.ranks.items() if name in LEXICAL)
        if id(cand) in vector_rank:
            score += 1.0 / (RRF_K + 1 + vector_rank[id(cand)])
        scored.append((score, cand))
    return diverse(scored, k, query_terms or [])


def diverse(scored: list[tuple[float, Candidate]], k: int, query_terms: list[str],
            per_source: int = PER_SOURCE, presorted: bool = False) -> list[Hit]:
    """The k best by score (or in the given order, `presorted`), at most `per_source` from one file (one article
    of a ZIM archive, which is a library of its own) while other files still have candidates; only when they have
    nothing more does one fill the rest."""
    return [_hit(score, cand, query_terms) for score, cand in _diverse_order(scored, k, per_source, presorted)]


def _diverse_order(scored: list[tuple[float, Candidate]], k: int, per_source: int,
                   presorted: bool = False) -> list[tuple[float, Candidate]]:
    ordered = scored if presorted else sorted(scored, key=lambda item: -item[0])
    out: list[tuple[float, Candidate]] = []
    per: dict[object, int] = {}
    overflow: list[tuple[float, Candidate]] = []
    for score, cand in ordered:
        if len(out) >= k:
            break
        source = (cand.path, cand.key[1]) if isinstance(cand.key, tuple) else cand.path
        if per.get(source, 0) >= per_source:
            overflow.append((score, cand))
            continue
        per[source] = per.get(source, 0) + 1
        out.append((score, cand))
    for item in overflow:
        if len(out) >= k:
            break
        out.append(item)
    return out


def _hit(score: float, cand: Candidate, query_terms: list[str]) -> Hit:
    found_by: list[str] = [name for name in ("vector", "bm25", "zim", "heading") if name in cand.ranks]
    article = cand.key[1] if isinstance(cand.key, tuple) else ""
    return Hit(score=float(score), path=shown(cand.path), title=cand.title, heading=cand.heading, page=cand.page,
               snippet=snippet(cand.text, query_terms), text=cand.text, kind=cand.kind, cosine=float(cand.cosine),
               chunk_id=cand.key if isinstance(cand.key, int) else None, sources=found_by, article=article)
