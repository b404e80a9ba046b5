"""Hybrid retrieval: vector (chroma) + BM25 (FTS5) fused by reciprocal rank, with per-source diversity and a
relevance floor so a question the library cannot answer returns nothing rather than noise.

Every candidate's cosine similarity is computed exactly from the fp16 vector kept in SQLite, so the floor is an
absolute measure of relevance whichever list found the candidate (RRF alone has no absolute scale).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

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


@dataclass
class Hit:
    score: float
    path: str
    title: str
    heading: str
    page: int | None
    snippet: str
    text: str
    kind: str = ""
    cosine: float = 0.0
    chunk_id: int | None = None
    sources: list[str] = field(default_factory=list)  # which lists found it: "vector", "bm25", "zim"

    def as_dict(self) -> dict:
        return {"score": round(self.score, 4), "path": self.path, "title": self.title, "heading": self.heading,
                "page": self.page, "snippet": self.snippet, "text": self.text, "kind": self.kind,
                "cosine": round(self.cosine, 4), "found_by": self.sources}


def terms(query: str) -> list[str]:
    seen: list[str] = []
    for word in _WORD.findall(query.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()) and word not in seen:
            seen.append(word)
    return seen


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
    key: object  # chunk id, or (zim path, article, n) for ZIM sections
    path: str
    title: str
    heading: str
    page: int | None
    text: str
    kind: str
    cosine: float
    ranks: dict[str, int] = field(default_factory=dict)


def fuse(candidates: list[Candidate], k: int, floor: float = FLOOR, lexical_floor: float = LEXICAL_FLOOR,
         per_source: int = PER_SOURCE, query_terms: list[str] | None = None) -> list[Hit]:
    """Exact-cosine rerank of the union of both lists, plus a small lexical boost; then floor, then diversity.

    The union matters most: BM25 brings in passages the approximate vector search missed, and every candidate is
    then scored by its exact cosine. The boost (LEXICAL_BOOST * 5 / (5 + BM25 rank)) lets an exact term (an error
    code, an option name) tip a close call. On scripts/eval this beats reciprocal rank fusion (see
    docs/knowledge-base.md).
    """
    scored = []
    for cand in candidates:
        lexical = [r for name, r in cand.ranks.items() if name in ("bm25", "zim")]
        passes = cand.cosine >= floor or (lexical and min(lexical) < 3 and cand.cosine >= lexical_floor)
        if not passes:
            continue
        boost = LEXICAL_BOOST * 5 / (5 + min(lexical)) if lexical else 0.0
        scored.append((cand.cosine + boost, cand))
    scored.sort(key=lambda item: -item[0])
    hits: list[Hit] = []
    per: dict[str, int] = {}
    overflow: list[tuple[float, Candidate]] = []
    for score, cand in scored:
        if per.get(cand.path, 0) >= per_source:
            overflow.append((score, cand))
            continue
        per[cand.path] = per.get(cand.path, 0) + 1
        hits.append(_hit(score, cand, query_terms or []))
        if len(hits) >= k:
            break
    # Only when other sources have nothing more to offer does one source fill the rest.
    for score, cand in overflow:
        if len(hits) >= k:
            break
        hits.append(_hit(score, cand, query_terms or []))
    return hits


def rrf(candidates: list[Candidate], k: int, query_terms: list[str] | None = None) -> list[Hit]:
    """Plain reciprocal rank fusion (vector rank + BM25 rank), no floor: kept for comparison in scripts/eval_kb."""
    by_cosine = sorted((c for c in candidates if "vector" in c.ranks), key=lambda c: -c.cosine)
    vector_rank = {id(c): r for r, c in enumerate(by_cosine)}
    scored = []
    for cand in candidates:
        score = sum(1.0 / (RRF_K + 1 + r) for name, r in cand.ranks.items() if name in ("bm25", "zim"))
        if id(cand) in vector_rank:
            score += 1.0 / (RRF_K + 1 + vector_rank[id(cand)])
        scored.append((score, cand))
    scored.sort(key=lambda item: -item[0])
    hits, per = [], {}
    for score, cand in scored:
        if per.get(cand.path, 0) < PER_SOURCE:
            per[cand.path] = per.get(cand.path, 0) + 1
            hits.append(_hit(score, cand, query_terms or []))
        if len(hits) >= k:
            break
    return hits


def _hit(score: float, cand: Candidate, query_terms: list[str]) -> Hit:
    found_by = [name for name in ("vector", "bm25", "zim") if name in cand.ranks]
    return Hit(score=float(score), path=cand.path, title=cand.title, heading=cand.heading, page=cand.page,
               snippet=snippet(cand.text, query_terms), text=cand.text, kind=cand.kind, cosine=float(cand.cosine),
               chunk_id=cand.key if isinstance(cand.key, int) else None, sources=found_by)


def local_candidates(store, vectors, query_vector: np.ndarray, query: str, use_vector: bool = True,
                     use_bm25: bool = True, n: int = CANDIDATES) -> list[Candidate]:
    vector_ranks: dict[int, int] = {}
    if use_vector and vectors is not None:
        for rank, (chunk_id, _) in enumerate(vectors.query(query_vector, n)):
            vector_ranks[chunk_id] = rank
    lexical_ranks: dict[int, int] = {}
    if use_bm25:
        for rank, chunk_id in enumerate(store.lexical(terms(query)[:16], n)):
            lexical_ranks[chunk_id] = rank
    rows = store.chunk_rows(set(vector_ranks) | set(lexical_ranks))
    if not rows:
        return []
    ids = list(rows)
    matrix = np.stack([np.frombuffer(rows[i][5], dtype=np.float16) for i in ids]).astype(np.float32)
    cosines = matrix @ query_vector
    out = []
    for chunk_id, cosine in zip(ids, cosines):
        path, title, heading, page, text, _, kind = rows[chunk_id]
        ranks = {}
        if chunk_id in vector_ranks:
            ranks["vector"] = vector_ranks[chunk_id]
        if chunk_id in lexical_ranks:
            ranks["bm25"] = lexical_ranks[chunk_id]
        out.append(Candidate(chunk_id, path, title, heading, page, text, kind, float(cosine), ranks))
    return out
