"""ZIM search on a large archive: p50/p95 latency cold and warm, the candidate stage alone, peak RSS.

The archive is built once with zimwriterfs from several thousand real HTML pages Debian ships (the Debian
Administrator's Handbook in all its languages, the PostgreSQL 15 manual, the Python 3.11 documentation; whichever
are installed: `apt-get install debian-handbook postgresql-doc-15 python3.11-doc`) and kept in
~/.cache/appliance/bench-zim/ (rebuilt only when those pages change). It is registered, not embedded, in a fresh
library, as `kb add` does. Cold: a question never asked, its articles not yet read and no section vector cached
(the shelf's caches are dropped before each, the section vectors on disk too; the OS page cache is not). Warm: the
same question asked again at once (a follow-up reaching the same articles). Later session: the same question as a
new process would meet it (nothing in memory; the section vectors on disk, the articles read again). The
registration's cost (hashing, and embedding every title and section heading) is printed too.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from appliance.models import packs

SOURCES = [
    (Path("/usr/share/doc/debian-handbook/html"), "debian-handbook"),
    (Path("/usr/share/doc/postgresql-doc-15/html"), "postgresql"),
    (Path("/usr/share/doc/python3.11/html"), "python"),
]
MIN_PAGES = 2000
QUESTIONS = [
    "my laptop hangs while booting after a kernel update",
    "how do I give a user permission to use sudo",
    "the disk is full, how do I find what takes the space",
    "set a static IP address on my network card",
    "how do I make a backup of my postgres database",
    "restore a database dump",
    "my query is slow, how do I see what the database is doing",
    "create an index on a column",
    "what is a transaction and when does it get rolled back",
    "too many connections error from the database server",
    "how do I catch an exception so my program does not crash",
    "read a file line by line",
    "run a task in the background with threads",
    "upgrade debian to the next release without breaking it",
    "install a package that is not in the official repositories",
    "firewall rules to block incoming connections",
    "schedule a job to run every night",
    "how do I share files with windows computers on my network",
    "encrypt my hard disk",
    "the printer does not work",
]


def _builder():
    path = Path(__file__).resolve().parent.parent / "eval" / "zim_build.py"
    spec = importlib.util.spec_from_file_location("bench_zim_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run() -> None:
    from kb import KnowledgeBase
    from kb import zim as zim_search

    build = _builder()
    found = [(folder, prefix) for folder, prefix in SOURCES if folder.is_dir()]
    pages = build.html_pages(found)
    if len(pages) < MIN_PAGES:
        print(f"   skipped: {len(pages)} HTML pages found, {MIN_PAGES} wanted "
              "(as root: apt-get install debian-handbook postgresql-doc-15 python3.11-doc)")
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "appliance" / "bench-zim"
    started = time.perf_counter()
    zim, built = build.build_zim(pages, cache / "debian-docs.zim", "Debian documentation")
    took = time.perf_counter() - started
    print(f"   archive: {len(pages)} pages ({', '.join(p for _, p in found)}), {zim.stat().st_size / 1e6:.0f} MB, "
          + (f"built by zimwriterfs in {took:.0f} s" if built else "cached"))
    rss_start = _rss_mib()
    with tempfile.TemporaryDirectory(prefix="bench-zim-") as home:
        knowledge = KnowledgeBase(Path(home), packs.EMBEDDER_ONNX.locate(), packs.EMBEDDER_TOKENIZER.locate())
        t0 = time.perf_counter()
        report = knowledge.add([zim])
        took = time.perf_counter() - t0
        made = knowledge.store.heading_set(knowledge.store.ready_document(str(zim)).sha256)
        if made is not None:
            print(f"   registration (hash, titles and headings embedded): {took:.0f} s; {made.entries:,} entries of "
                  f"{made.articles:,} articles in {made.seconds:.0f} s, {made.entries / max(made.seconds, 1e-9):.0f} "
                  f"entries/s ({report.headings:,} embedded by this run)")
        t0 = time.perf_counter()
        first = knowledge.search("where are the log files", k=5)
        print(f"   first search (opens the archive, loads the embedder): {(time.perf_counter() - t0) * 1000:.0f} ms, "
              f"{len(first)} hits")
        shelf = knowledge.zims
        archive = shelf.archive(str(zim))
        stage = []
        for question in QUESTIONS:
            t0 = time.perf_counter()
            zim_search.rank_articles(archive, question)
            stage.append((time.perf_counter() - t0) * 1000)
        rss_first = _rss_mib()
        cold, warm, earlier, hits_found = [], [], [], 0
        for question in QUESTIONS:
            shelf.drop_caches(disk=True)
            t0 = time.perf_counter()
            hits = knowledge.search(question, k=5)
            cold.append((time.perf_counter() - t0) * 1000)
            hits_found += bool(hits)
            t0 = time.perf_counter()
            knowledge.search(question, k=5)
            warm.append((time.perf_counter() - t0) * 1000)
            shelf.drop_caches()  # as a new process finds it: nothing in memory, the section vectors on disk
            t0 = time.perf_counter()
            knowledge.search(question, k=5)
            earlier.append((time.perf_counter() - t0) * 1000)
        for question in QUESTIONS:  # fill the caches to their bounds
            knowledge.search(question + " please", k=5)
        cached = shelf.cached()
        knowledge.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"   {len(QUESTIONS)} questions, {hits_found} answered above the relevance floor")
    print(f"   candidate stage alone (at most {zim_search.QUERIES} libzim queries): p50 {_p(stage, .5):.0f} ms, "
          f"p95 {_p(stage, .95):.0f} ms")
    print(f"   search cold (articles read, up to {zim_search.EMBED} sections embedded, no cache): "
          f"p50 {_p(cold, .5):.0f} ms, p95 {_p(cold, .95):.0f} ms, mean {statistics.mean(cold):.0f} ms")
    print(f"   search warm (the same question again at once): p50 {_p(warm, .5):.0f} ms, p95 {_p(warm, .95):.0f} ms")
    print(f"   search in a later session (articles read again, section vectors from disk): p50 {_p(earlier, .5):.0f} "
          f"ms, p95 {_p(earlier, .95):.0f} ms")
    print(f"   caches after the run: {cached['vectors']} section vectors (bound {zim_search.CACHE}), "
          f"{cached['articles']} articles (bound {zim_search.ARTICLE_CACHE})")
    print(f"   RSS {rss_start:.0f} MiB before the library opened, {rss_first:.0f} MiB after the first search; "
          f"peak RSS {peak:.0f} MiB")
