"""Retrieval evaluation: recall@5 and MRR for vector-only, BM25-only and hybrid search, plus abstention.

Questions (scripts/eval/questions.json) are phrased as a stressed user would ask; each names the corpus file(s)
that answer it (path suffixes). Questions with no expected file are ones the corpus cannot answer: the hybrid
search with its relevance floor should return nothing for them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from appliance.models import packs  # noqa: E402
from kb import KnowledgeBase  # noqa: E402  (kb sets its own offline guards)

SUBDIRS = ["tutorial", "howto", "faq", "using"]
K = 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--doc-root", type=Path, default=Path("/usr/share/doc/python3.11/html"))
    parser.add_argument("--questions", type=Path, default=HERE / "questions.json")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "appliance" / "eval-kb")
    parser.add_argument("-v", "--verbose", action="store_true", help="Print each question's ranks.")
    args = parser.parse_args()

    questions = json.loads(args.questions.read_text())
    knowledge = KnowledgeBase(args.cache, packs.EMBEDDER_ONNX.locate(), packs.EMBEDDER_TOKENIZER.locate())
    started = time.monotonic()
    report = knowledge.add([args.doc_root / sub for sub in SUBDIRS])
    stats = knowledge.stats()
    print(f"corpus: Python 3.11 docs ({', '.join(SUBDIRS)}): {stats['documents']} files, {stats['chunks']} chunks "
          f"(ingest: {report.added + report.replaced} new, {report.skipped} unchanged, "
          f"{time.monotonic() - started:.0f} s)")
    answerable = [q for q in questions if q["expect"]]
    unanswerable = [q for q in questions if not q["expect"]]
    print(f"questions: {len(answerable)} answerable, {len(unanswerable)} the corpus cannot answer\n")

    def rank_of(hits, expect) -> int | None:
        for rank, hit in enumerate(hits, 1):
            if any(hit.path.endswith(e) for e in expect):
                return rank
        return None

    print("vector: chroma HNSW only; bm25: FTS5 only; rrf: reciprocal rank fusion of the two;")
    print("hybrid (the default): exact-cosine rerank of both lists' union plus a small BM25 boost.")
    print("All with per-source diversity (2 per file), without the relevance floor.\n")
    print(f"{'mode':8} {'recall@5':>9} {'MRR':>7} {'p50 ms':>7}")
    results = {}
    for mode in ("vector", "bm25", "rrf", "hybrid"):
        ranks, times = [], []
        for q in answerable:
            t0 = time.perf_counter()
            hits = knowledge.search(q["question"], k=K, mode=mode, floor=False)
            times.append((time.perf_counter() - t0) * 1000)
            ranks.append(rank_of(hits, q["expect"]))
            if args.verbose and mode == "hybrid":
                top = ", ".join(Path(h.path).name + f"({h.cosine:.2f})" for h in hits[:3])
                print(f"   {ranks[-1]!s:>4}  {q['question'][:60]:60} -> {top}")
        recall = sum(r is not None for r in ranks) / len(ranks)
        mrr = sum(1 / r for r in ranks if r) / len(ranks)
        results[mode] = (recall, mrr)
        print(f"{mode:8} {recall:9.3f} {mrr:7.3f} {statistics.median(times):7.1f}")

    # With the relevance floor, as `kb search` and `ask` use it.
    kept = [knowledge.search(q["question"], k=K) for q in answerable]
    recall_floor = sum(rank_of(h, q["expect"]) is not None for h, q in zip(kept, answerable)) / len(answerable)
    abstained_ok = sum(not h for h in kept)
    abstained = [q for q in unanswerable if not knowledge.search(q["question"], k=K)]
    print(f"\nwith the relevance floor: hybrid recall@5 {recall_floor:.3f}; "
          f"abstains on {len(abstained)}/{len(unanswerable)} unanswerable questions; "
          f"wrongly abstains on {abstained_ok}/{len(answerable)} answerable ones")
    if args.verbose:
        for q in unanswerable:
            hits = knowledge.search(q["question"], k=K)
            if hits:
                print(f"   answered (noise): {q['question'][:60]} -> {Path(hits[0].path).name} {hits[0].cosine:.2f}")
    knowledge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
