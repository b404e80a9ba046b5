"""Retrieval evaluation: recall@5 and MRR for vector-only, BM25-only and hybrid search, plus abstention.

Questions (scripts/eval/questions.json) are phrased as a stressed user would ask; each names the corpus file(s)
that answer it (path suffixes). Questions with no expected file are ones the corpus cannot answer: the hybrid
search with its relevance floor should return nothing for them.

--zim also builds a ZIM with zimwriterfs from the same pages, registers it (not embedded) in a library of its own
and scores the same questions through it: a ZIM hit counts when its article path ends with the expected file.

--set unseen scores the second set instead (scripts/eval/unseen/: real manuals the project never used, 20,000+
chunks with distractors, the library shared with `eval_answers --set unseen`); --half tuning|heldback picks one
half (the held-back half is never tuned on). With --zim its pages (question documents and distractors; the two
plain-text books each converted to one HTML page with their sections as headings, as kb's text reader reads them)
become a ZIM registered in a library of its own (~/.cache/appliance/eval-unseen-zim), scored on the same questions
beside the embedded library.

--no-headings leaves a ZIM's title and heading vectors out of its search (libzim's index alone), for a before/after
of them (they are made at registration either way); --lead-words N embeds that many words of what each title and
heading heads with it (kb.zim.LEAD_WORDS; another N registers in a library of its own, kb-lead<N>). Every run starts
with no ZIM section vector cached (on disk either), so its timings are a first session's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE / "unseen"))

import corpus  # noqa: E402 - the unseen set's library and questions (unseen/, once it is on sys.path)
from zim_build import build_zim, document_page, html_pages, write_if_changed  # noqa: E402 - beside this file, once it is on sys.path

from appliance.answering.knowledge import reranker_files  # noqa: E402 - the same
from appliance.models import packs  # noqa: E402 - from this tree, once it is on sys.path
from kb import KnowledgeBase, readers  # noqa: E402 - the same; kb sets its own offline guards
from kb import zim as zim_search  # noqa: E402 - the same

SUBDIRS = ["tutorial", "howto", "faq", "using"]
K = 5
RERANKER = None  # the reranker pack's files (main: unless --no-rerank, when installed)


def opened(directory: Path, model: Path, tokenizer: Path) -> KnowledgeBase:
    """A library with the reranker when there is one, its cached passage vectors removed first: every run's
    timings are a first session's."""
    for cached in (Path(directory) / "cache").glob("rerank-vectors-*.sqlite*"):
        cached.unlink()
    return KnowledgeBase(directory, model, tokenizer, RERANKER)


def rank_of(hits, expect: list[str]) -> int | None:
    """The rank of the first hit from an expected file (a ZIM hit: its article path), or None."""
    for rank, hit in enumerate(hits, 1):
        if any((hit.article or hit.path).endswith(e) for e in expect):
            return rank
    return None


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--doc-root", type=Path, default=Path("/usr/share/doc/python3.11/html"))
    parser.add_argument("--questions", type=Path, default=HERE / "questions.json")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "appliance" / "eval-kb")
    parser.add_argument("--zim", action="store_true",
                        help="Also build a ZIM from the same pages and score the same questions through it.")
    parser.add_argument("--zim-only", action="store_true", help="Only the ZIM side (implies --zim).")
    parser.add_argument("--no-headings", action="store_true",
                        help="Search a ZIM through libzim's index alone (its title and heading vectors left out).")
    parser.add_argument("--lead-words", type=int, default=None,
                        help="Words of each section embedded with its title or heading at registration.")
    corpus.add_arguments(parser, own="the Python docs and questions.json")
    parser.add_argument("-v", "--verbose", action="store_true", help="Print each question's ranks.")
    parser.add_argument("--no-rerank", action="store_true",
                        help="Leave the reranker pack out (hybrid alone; by default a 'reranked' row is added).")
    args = parser.parse_args()
    if args.no_headings:
        zim_search.USE_HEADINGS = False
    if args.lead_words is not None and args.lead_words != zim_search.LEAD_WORDS:
        zim_search.LEAD_WORDS = args.lead_words
        args.zim_library = f"kb-lead{args.lead_words}"
    else:
        args.zim_library = "kb"
    global RERANKER
    RERANKER = reranker_files(not args.no_rerank)
    if args.set == "unseen":
        return unseen(args)
    if args.half != "both":
        parser.error("--half needs --set unseen")

    questions = json.loads(args.questions.read_text())
    answerable = [q for q in questions if q["expect"]]
    unanswerable = [q for q in questions if not q["expect"]]
    model, tokenizer = packs.EMBEDDER_ONNX.locate(), packs.EMBEDDER_TOKENIZER.locate()
    summary = {}
    if not args.zim_only:
        knowledge = opened(args.cache, model, tokenizer)
        started = time.monotonic()
        report = knowledge.add([args.doc_root / sub for sub in SUBDIRS])
        stats = knowledge.stats()
        print(f"corpus: Python 3.11 docs ({', '.join(SUBDIRS)}): {stats['documents']} files, {stats['chunks']} "
              f"chunks (ingest: {report.added + report.replaced} new, {report.skipped} unchanged, "
              f"{time.monotonic() - started:.0f} s)")
        print(f"questions: {len(answerable)} answerable, {len(unanswerable)} the corpus cannot answer\n")
        print("vector: nearest vectors only (exact scan up to 50,000 passages, else chroma HNSW); bm25: FTS5 only; "
              "rrf: reciprocal rank fusion of the two;")
        print("hybrid (the default): exact-cosine rerank of both lists' union plus a small BM25 boost.")
        print("All with per-source diversity (2 per file), without the relevance floor.\n")
        recall, mrr, times = by_mode(knowledge, answerable, args.verbose)
        summary["embedded"] = floored(knowledge, answerable, unanswerable, args.verbose, recall, mrr, times)
        knowledge.close()
    if args.zim or args.zim_only:
        pages = html_pages([(args.doc_root / sub, sub) for sub in SUBDIRS])
        home = args.cache.parent / (args.cache.name + "-zim")
        try:
            summary["ZIM"] = through_zim(pages, home / "python-docs.zim", "Python 3.11 docs", home / args.zim_library,
                                         model, tokenizer, answerable, unanswerable, args.verbose)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            return zim_failed(exc)
    return side_by_side(summary)


def zim_failed(exc: Exception) -> int:
    stderr = getattr(exc, "stderr", b"") or b""
    print(f"error: the ZIM could not be built: {exc} {stderr.decode(errors='replace')[-300:]}".strip(),
          file=sys.stderr)
    return 1


def side_by_side(summary: dict) -> int:
    if len(summary) == 2:
        print(f"\n{'':9} {'recall@5':>9} {'MRR':>6} {'floored':>8} {'abstains':>9} {'p50 ms':>7} {'p95 ms':>7}")
        for name, row in summary.items():
            print(f"{name:9} {row['recall']:9.3f} {row['mrr']:6.3f} {row['recall_floor']:8.3f} "
                  f"{row['abstained']:>9} {row['p50']:7.0f} {row['p95']:7.0f}")
        gap = summary["embedded"]["recall"] - summary["ZIM"]["recall"]
        print(f"ZIM recall@5 is {gap:+.3f} below embedded (goal: within 0.05)" if gap > 0
              else "ZIM recall@5 matches or beats embedded")
    return 0


def by_mode(knowledge, answerable, verbose: bool) -> tuple[float, float, list[float]]:
    """Recall@5 and MRR per search mode, printed as a table; the default's (the last row) figures and times are
    returned. "reranked" is the hybrid with the reranker (the default when its pack is installed)."""
    print(f"{'mode':8} {'recall@5':>9} {'MRR':>7} {'p50 ms':>7}")
    modes = ["vector", "bm25", "rrf", "hybrid"] + (["reranked"] if knowledge.reranker_files else [])
    for mode in modes:
        ranks, times = [], []
        for q in answerable:
            t0 = time.perf_counter()
            hits = knowledge.search(q["question"], k=K, mode="hybrid" if mode == "reranked" else mode,
                                    floor=False, rerank=mode == "reranked")
            times.append((time.perf_counter() - t0) * 1000)
            ranks.append(rank_of(hits, q["expect"]))
            if verbose and mode == modes[-1]:
                top = ", ".join(Path(h.path).name + f"({h.cosine:.2f})" for h in hits[:3])
                print(f"   {ranks[-1]!s:>4}  {q['question'][:60]:60} -> {top}")
        recall = sum(r is not None for r in ranks) / len(ranks)
        mrr = sum(1 / r for r in ranks if r) / len(ranks)
        print(f"{mode:8} {recall:9.3f} {mrr:7.3f} {statistics.median(times):7.1f}")
    return recall, mrr, times


def unseen(args) -> int:
    """The unseen set: its library (built or refreshed once, cached), its questions, one half or both; with --zim
    its HTML pages as a ZIM too."""
    questions = corpus.questions(args.half)
    home = corpus.default_home()
    if not corpus.prepare(home, questions, ingest=not args.no_ingest):
        return 1
    answerable = [{"question": q["q"], "expect": ["/" + d for d in q["docs"]]} for q in questions if q["docs"]]
    unanswerable = [{"question": q["q"], "expect": []} for q in questions if not q["docs"]]
    model, tokenizer = packs.EMBEDDER_ONNX.locate(), packs.EMBEDDER_TOKENIZER.locate()
    zim_home = home.parent / (home.name + "-zim")
    summary = {}
    if not args.zim_only:
        knowledge = opened(home / "kb", model, tokenizer)
        try:
            stats = knowledge.stats()
            print(f"corpus: unseen set ({home}): {stats['documents']} files, {stats['chunks']} chunks")
            print(f"questions: {args.half} half{'s' if args.half == 'both' else ''}, {len(answerable)} answerable, "
                  f"{len(unanswerable)} the library cannot answer\n")
            recall, mrr, times = by_mode(knowledge, answerable, args.verbose)
            summary["embedded"] = floored(knowledge, answerable, unanswerable, args.verbose, recall, mrr, times)
        finally:
            knowledge.close()
    if args.zim or args.zim_only:
        documents = corpus.all_documents(home, sorted({d for q in questions for d in q["docs"]}))
        pages = [(f, f.resolve().as_posix().lstrip("/")) for f in documents if f.suffix == ".html"]
        converted = [f for f in documents if f.suffix != ".html"]
        for f in converted:  # a plain-text book as a ZIM would hold it: one HTML page, its sections as headings
            name = f.resolve().as_posix().lstrip("/") + ".html"
            pages.append((write_if_changed(zim_home / "converted" / name, document_page(readers.read(f))), name))
        print(f"\nZIM side: {len(pages)} HTML pages ({len(converted)} of them converted from plain text, as "
              f"one page each: {', '.join(f.name for f in converted)}; an expected file.txt is article file.txt.html)")
        zim_answerable = [{"question": q["question"],
                           "expect": [e if e.endswith(".html") else e + ".html" for e in q["expect"]]}
                          for q in answerable]
        try:
            summary["ZIM"] = through_zim(pages, zim_home / "unseen.zim", "Unseen manuals", zim_home / args.zim_library,
                                         model, tokenizer, zim_answerable, unanswerable, args.verbose)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            return zim_failed(exc)
    return side_by_side(summary)


def floored(knowledge, answerable, unanswerable, verbose: bool, recall: float, mrr: float, times) -> dict:
    """With the relevance floor, as `kb search` and `ask` use it: recall, abstention."""
    kept = [knowledge.search(q["question"], k=K) for q in answerable]
    found = sum(rank_of(h, q["expect"]) is not None for h, q in zip(kept, answerable, strict=True))
    recall_floor = found / len(answerable)
    abstained_ok = sum(not h for h in kept)
    abstained = [q for q in unanswerable if not knowledge.search(q["question"], k=K)]
    print(f"\nwith the relevance floor: hybrid recall@5 {recall_floor:.3f}; "
          f"abstains on {len(abstained)}/{len(unanswerable)} unanswerable questions; "
          f"wrongly abstains on {abstained_ok}/{len(answerable)} answerable ones")
    if verbose:
        for q in unanswerable:
            hits = knowledge.search(q["question"], k=K)
            if hits:
                where = hits[0].article or Path(hits[0].path).name
                print(f"   answered (noise): {q['question'][:60]} -> {where} {hits[0].cosine:.2f}")
    return {"recall": recall, "mrr": mrr, "recall_floor": recall_floor,
            "abstained": f"{len(abstained)}/{len(unanswerable)}", "p50": percentile(times, 0.5),
            "p95": percentile(times, 0.95)}


def through_zim(pages: list[tuple[Path, str]], zim_path: Path, title: str, library: Path, model: Path,
                tokenizer: Path, answerable, unanswerable, verbose: bool) -> dict:
    """`pages` as a ZIM (zimwriterfs), registered in a library of its own, the same questions."""
    started = time.monotonic()
    zim, built = build_zim(pages, zim_path, title)
    print(f"\nZIM: {len(pages)} pages -> {zim} ({zim.stat().st_size / 1e6:.1f} MB, "
          f"{'built in %.0f s' % (time.monotonic() - started) if built else 'cached'}), registered, not embedded")
    for cached in (library / "cache").glob("zim-sections-*.sqlite*"):
        cached.unlink()  # a first session's timings, whatever ran before: no section vector cached on disk
    knowledge = opened(library, model, tokenizer)
    started = time.monotonic()
    report = knowledge.add([zim])
    took = time.monotonic() - started
    for _, note in report.notes:
        print(f"   registration: {note}")
    made = knowledge.store.heading_set(knowledge.store.ready_document(str(zim)).sha256)
    if made is not None and report.headings:
        print(f"   registration took {took:.1f} s ({made.entries:,} titles and headings of {made.articles:,} "
              f"articles: {made.entries / max(made.seconds, 1e-9):.0f} entries/s, hashing included "
              f"{made.entries / took:.0f}/s)")
    elif made is not None:
        print(f"   registered before: {made.entries:,} titles and headings, made in {made.seconds:.1f} s "
              f"({made.entries / max(made.seconds, 1e-9):.0f} entries/s); this run {took:.1f} s")
    print(f"   heading vectors in search: {'on' if zim_search.USE_HEADINGS else 'off (--no-headings)'}, "
          f"{zim_search.LEAD_WORDS} lead words")
    ranks, times = [], []
    for q in answerable:
        t0 = time.perf_counter()
        hits = knowledge.search(q["question"], k=K, floor=False)
        times.append((time.perf_counter() - t0) * 1000)
        ranks.append(rank_of(hits, q["expect"]))
        if verbose:
            top = ", ".join(f"{h.article}({h.cosine:.2f})" for h in hits[:3])
            print(f"   {ranks[-1]!s:>4}  {q['question'][:60]:60} -> {top}")
    recall = sum(r is not None for r in ranks) / len(ranks)
    mrr = sum(1 / r for r in ranks if r) / len(ranks)
    print(f"through the ZIM, hybrid without the floor: recall@5 {recall:.3f}, MRR {mrr:.3f}, "
          f"p50 {percentile(times, 0.5):.0f} ms, p95 {percentile(times, 0.95):.0f} ms")
    row = floored(knowledge, answerable, unanswerable, verbose, recall, mrr, times)
    knowledge.close()
    return row


if __name__ == "__main__":
    sys.exit(main())
