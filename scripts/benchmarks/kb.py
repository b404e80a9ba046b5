"""Knowledge base: ingest chunks/s, hybrid search p50/p95 at 10k and 100k chunks, vector index repair time,
the disk-space estimate (its cost, and how close it comes to what is written), ZIM search latency.

Text is real prose someone else wrote: the docstrings of the Python standard library on this machine. Ingest is
measured end to end (read, chunk, embed, store). For 10k and 100k chunks, embedding that many would take an hour
on 2 cores, so the store is filled with real chunk texts and real embedder vectors recombined (each synthetic
chunk mixes sentences of real chunks; its vector is the normalised mix of theirs); every query is then a real
search: query embedding, chroma HNSW, FTS5 BM25, exact cosine rerank, fusion, floor and diversity. The repair
(`kb repair`) rebuilds the vector index of that store from the vectors SQLite keeps.
"""

from __future__ import annotations

import ast
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from appliance.models import packs

QUERIES = [
    "how do I read a file line by line", "parse command line arguments", "connect to a server with a socket",
    "compress data into a zip archive", "why does my thread hang forever", "convert a date string to a datetime",
    "send an email with an attachment", "my regular expression does not match", "random number between 1 and 10",
    "how to copy a directory tree", "decode bytes that are not utf-8", "run a shell command and get its output",
    "sort a list of tuples by the second item", "hash a password securely", "what is a context manager",
    "how do I stop a process that hangs", "serialize an object to json", "temporary file that is deleted",
    "measure how long my code takes", "read a csv file with a header row",
]


def _docstring_corpus(limit_files: int) -> list[tuple[str, str]]:
    """(module name, markdown) from the standard library's own docstrings: modules, classes, functions."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        parts = [f"# {path.stem}\n\n{ast.get_docstring(tree) or ''}\n"]
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node):
                parts.append(f"## {node.name}\n\n{ast.get_docstring(node)}\n")
        text = "\n".join(parts)
        if len(text.split()) > 300:
            out.append((path.stem, text))
        if len(out) >= limit_files:
            break
    return out


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def _size(directory: Path) -> int:
    """Bytes of the library's files, not its cache/ (the embedder's kept graph is written at its first load, once,
    and only with room to spare: not a cost of the batch)."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and "cache" not in p.relative_to(
        directory).parts[:1])


def run() -> None:
    from kb import KnowledgeBase, diskspace, files, readers
    from kb.chunking import Chunk
    from kb.ingest import estimate

    model, tokenizer = packs.EMBEDDER_ONNX.locate(), packs.EMBEDDER_TOKENIZER.locate()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    try:
        # --- ingest -------------------------------------------------------------------------------------------
        corpus = work / "corpus"
        corpus.mkdir()
        for name, text in _docstring_corpus(40):
            (corpus / f"{name}.md").write_text(text)
        knowledge = KnowledgeBase(work / "ingest", model, tokenizer)
        paths, _ = files.expand([corpus], readers.kind_of, [])
        guessed = estimate(knowledge, paths, False)
        before = _size(work / "ingest")
        started = time.perf_counter()
        report = knowledge.add([corpus])
        seconds = time.perf_counter() - started
        print(f"   ingest: {report.added} files (stdlib docstrings), {report.chunks} chunks in {seconds:.1f} s = "
              f"{report.chunks / seconds:.1f} chunks/s end to end (batch 8, {os.cpu_count()} cores)")
        knowledge.close()
        written = _size(work / "ingest") - before
        print(f"   disk-space estimate before the batch: {guessed / 1e6:.1f} MB; written: {written / 1e6:.1f} MB "
              f"({written / max(1, report.chunks) / 1000:.1f} kB per chunk, WAL included)")
        many = work / "many"
        many.mkdir()
        for n in range(10_000):
            (many / f"{n:05d}.md").write_text(f"# Note {n}\n\n" + "word " * (50 + n % 400))
        knowledge = KnowledgeBase(work / "ingest", model, tokenizer)
        t0 = time.perf_counter()
        listed, _ = files.expand([many], readers.kind_of, [])
        walked = time.perf_counter() - t0
        t0 = time.perf_counter()
        estimate(knowledge, listed, False)
        diskspace.space(work)
        print(f"   disk-space estimate for 10,000 files: {(time.perf_counter() - t0) * 1000:.0f} ms (walking the "
              f"folder: {walked * 1000:.0f} ms)")
        seed_rows = knowledge.store.db.execute(
            "SELECT text, vector FROM chunks ORDER BY id").fetchall()
        knowledge.close()

        import numpy as np

        texts = [r[0] for r in seed_rows]
        vectors = np.stack([np.frombuffer(r[1], dtype=np.float16).astype(np.float32) for r in seed_rows])
        sentences = [s for t in texts for s in t.replace("\n", " ").split(". ") if len(s.split()) > 3]
        rng = random.Random(7)
        nrng = np.random.default_rng(7)

        # --- search at scale ----------------------------------------------------------------------------------
        scaled = KnowledgeBase(work / "scaled", model, tokenizer)
        have = 0
        for target in (10_000, 100_000):
            fill_started = time.perf_counter()
            doc = 0
            while have < target:
                n = min(200, target - have)
                chunks, mix = [], []
                for _ in range(n):
                    picks = rng.sample(range(len(texts)), 2)
                    words = ". ".join(rng.sample(sentences, 6))
                    chunks.append(Chunk(heading=[f"Part {rng.randint(1, 40)}"], text=words))
                    v = vectors[picks[0]] + 0.6 * vectors[picks[1]] + nrng.normal(0, 0.02, vectors.shape[1])
                    mix.append(v / np.linalg.norm(v))
                mix = np.asarray(mix, dtype=np.float32)
                doc_id, ids = scaled.store.begin_document(f"/bench/{target}/{doc}.md", f"Doc {doc}", "md",
                                                          f"{target}-{doc}", 0, chunks, mix)
                scaled.vectors.add(ids, mix)
                scaled.store.finish_document(doc_id, None)
                have += n
                doc += 1
            fill = time.perf_counter() - fill_started
            for query in QUERIES[:3]:  # warm caches (HNSW pages, FTS pages) as a running appliance would have
                scaled.search(query)
            timings = []
            for _ in range(3):
                for query in QUERIES:
                    t0 = time.perf_counter()
                    scaled.search(query, k=5)
                    timings.append((time.perf_counter() - t0) * 1000)
            p50, p95 = _percentiles(timings)
            print(f"   hybrid search at {target:>7,} chunks: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
                  f"({len(timings)} queries; store filled in {fill:.0f} s)")
            t0 = time.perf_counter()
            rebuilt = scaled.rebuild_vectors()
            print(f"   repair (vector index rebuilt from SQLite, nothing re-embedded) at {rebuilt:>7,} chunks: "
                  f"{time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        for query in QUERIES:
            scaled.embedder.embed_query(query)
        print(f"   of which query embedding: {(time.perf_counter() - t0) * 1000 / len(QUERIES):.1f} ms per query")
        scaled.close()

        # --- ZIM ----------------------------------------------------------------------------------------------
        zimwriterfs = shutil.which("zimwriterfs")
        if not zimwriterfs:
            print("   ZIM search: skipped (zimwriterfs from Debian zim-tools is not installed)")
            return
        html = work / "zim-html"
        html.mkdir()
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tests.kb.fixtures import _png

        (html / "icon.png").write_bytes(_png())
        articles = _docstring_corpus(400)
        for name, text in articles:
            body = "".join(f"<h2>{block.splitlines()[0][3:]}</h2><p>{' '.join(block.splitlines()[1:])}</p>"
                           if block.startswith("## ") else f"<p>{block}</p>" for block in text.split("\n\n"))
            (html / f"{name}.html").write_text(f"<html><head><title>{name}</title></head><body><h1>{name}</h1>"
                                               f"{body}</body></html>")
        (html / "index.html").write_text("<html><head><title>stdlib</title></head><body>index</body></html>")
        zim = work / "stdlib.zim"
        subprocess.run([zimwriterfs, "-w", "index.html", "-I", "icon.png", "-l", "eng", "-t", "stdlib", "-d", "bench",
                        "-c", "bench", "-p", "bench", str(html), str(zim)], check=True, capture_output=True)
        zims = KnowledgeBase(work / "zim", model, tokenizer)
        zims.add([zim])
        zims.search(QUERIES[0])
        timings = []
        for query in QUERIES:
            t0 = time.perf_counter()
            zims.search(query, k=5)
            timings.append((time.perf_counter() - t0) * 1000)
        p50, p95 = _percentiles(timings)
        again = []
        for query in QUERIES:
            t0 = time.perf_counter()
            zims.search(query, k=5)
            again.append((time.perf_counter() - t0) * 1000)
        print(f"   ZIM search ({len(articles)} articles, {zim.stat().st_size / 1e6:.1f} MB, libzim full-text then "
              f"up to 12 sections embedded): p50 {p50:.0f} ms, p95 {p95:.0f} ms; the same questions again "
              f"(section vectors cached): p50 {_percentiles(again)[0]:.0f} ms")
        zims.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
