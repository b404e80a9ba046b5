"""KnowledgeBase: the one object the appliance and the TUI use (add, remove, documents, stats, search).

Thread use: every method may be called from any thread (a Textual worker); SQLite and chroma access are
serialised by locks. Process use: one ingest at a time per directory (a file lock); a second one is refused
with a clear message rather than interleaved.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kb import readers
from kb.chunking import chunk_document, embedding_text
from kb.embedder import Embedder
from kb.errors import KBError, ReadError, file_errors
from kb.index import Store, Vectors, is_disk_full
from kb.search import Hit, fuse, local_candidates, rrf, terms

EMBED_BATCH = 8


@dataclass
class IngestProgress:
    files_done: int
    files_total: int
    chunks_done: int
    current: str
    rate: float  # chunks per second
    eta_s: float | None


@dataclass
class IngestReport:
    added: int = 0
    skipped: int = 0
    replaced: int = 0
    chunks: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    registered: int = 0  # ZIM archives registered for search through their own index
    ignored: int = 0  # files of other formats met while walking a directory
    cancelled: bool = False
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, note) e.g. non-UTF-8 text decoded
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"added": self.added, "replaced": self.replaced, "skipped": self.skipped, "chunks": self.chunks,
                "registered_zims": self.registered, "ignored": self.ignored, "cancelled": self.cancelled,
                "failed": [{"path": p, "reason": r} for p, r in self.failed],
                "notes": [{"path": p, "note": n} for p, n in self.notes], "seconds": round(self.seconds, 2)}


class _Cancelled(Exception):
    pass


class KnowledgeBase:
    def __init__(self, directory: Path, embedder_model: Path, tokenizer: Path):
        self.directory = Path(directory)
        self.embedder_model = Path(embedder_model)
        self.tokenizer = Path(tokenizer)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KBError(f"cannot create the knowledge base directory {self.directory} ({exc.strerror})") from None
        self.store = Store(self.directory / "text.sqlite")
        self._vectors: Vectors | None = None
        self._embedder: Embedder | None = None
        self._zims = None
        self._init_lock = threading.Lock()
        self._ingest_lock = threading.Lock()
        self._lock_file = self.directory / "ingest.lock"
        if self.store.journal() or self.store.pending_batch()[0]:
            self._recover_if_idle()

    # --- lazily built parts -----------------------------------------------------------------------------------
    @property
    def vectors(self) -> Vectors:
        with self._init_lock:
            if self._vectors is None:
                self._vectors = Vectors(self.directory / "chroma")
            return self._vectors

    @property
    def embedder(self) -> Embedder:
        with self._init_lock:
            if self._embedder is None:
                embedder = Embedder(self.embedder_model, self.tokenizer)
                files = embedder.files()
                recorded = self.store.meta("embedder")
                if recorded is None:
                    self.store.set_meta("embedder", json.dumps(files))
                elif json.loads(recorded) != files and self.store.counts()["chunks"]:
                    raise KBError(
                        f"this knowledge base was built with another embedder (model sha256 "
                        f"{json.loads(recorded).get('model', '?')[:16]}...); remove {self.directory} and add the "
                        "files again")
                else:
                    self.store.set_meta("embedder", json.dumps(files))
                self._embedder = embedder
            return self._embedder

    @property
    def zims(self):
        from kb.zim import ZimShelf

        with self._init_lock:
            if self._zims is None:
                self._zims = ZimShelf()
            return self._zims

    # --- the ingest lock and recovery -------------------------------------------------------------------------
    def _lock(self, wait: bool = False):
        handle = open(self._lock_file, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def _recover_if_idle(self) -> None:
        handle = self._lock()
        if handle is None:
            return  # another process is ingesting; its journal entries are live, not leftovers
        try:
            self.recover()
        finally:
            handle.close()

    def recover(self) -> int:
        """Undo what an interrupted ingest left half-done. Returns how many journal entries were replayed."""
        entries = self.store.journal()
        for entry_id, action, doc_id, lo, hi in entries:
            self.vectors.delete_range(lo, hi)
            if action == "add":
                self.store.undo_add(entry_id, doc_id)
            else:
                self.store.drop_journal(entry_id)
        self.store.drop_pending_without_chunks()
        return len(entries)

    # --- ingest -----------------------------------------------------------------------------------------------
    def pending(self) -> list[str]:
        """Paths of an interrupted `add` not yet done (`add([])` resumes them)."""
        return self.store.pending_batch()[0]

    def add(self, paths: list[Path], progress: Callable[[IngestProgress], None] | None = None,
            cancel: threading.Event | None = None, full_zim: bool = False) -> IngestReport:
        started = time.monotonic()
        report = IngestReport()
        if not self._ingest_lock.acquire(blocking=False):
            raise KBError("an ingest is already running in this program; wait for it to finish")
        try:
            handle = self._lock()
            if handle is None:
                raise KBError(f"another program is adding files to {self.directory}; wait for it to finish")
            try:
                self.recover()
                if not paths:
                    pending, options = self.store.pending_batch()
                    paths = [Path(p) for p in pending]
                    full_zim = full_zim or bool(options.get("full_zim"))
                files = self._expand(paths, report)
                self.store.set_batch([str(f) for f in files], {"full_zim": full_zim})
                self._ingest(files, report, progress, cancel, full_zim, started)
                if not report.cancelled:
                    self.store.clear_batch()
            finally:
                handle.close()
        finally:
            self._ingest_lock.release()
        report.seconds = time.monotonic() - started
        return report

    def _expand(self, paths: list[Path], report: IngestReport) -> list[Path]:
        files: list[Path] = []
        seen: set[str] = set()

        def take(path: Path):
            key = str(path)
            if key not in seen:
                seen.add(key)
                files.append(path)

        for raw in paths:
            path = Path(raw).expanduser().absolute()
            if path.is_dir():
                found = 0
                for root, dirs, names in os.walk(path, followlinks=False):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    for name in sorted(names):
                        if name.startswith("."):
                            continue
                        candidate = Path(root) / name
                        if readers.kind_of(candidate) is None:
                            report.ignored += 1
                            continue
                        found += 1
                        take(candidate)
                if not found:
                    report.failed.append((str(path), "no supported files (txt, md, html, pdf, epub, zim) in this "
                                                     "directory"))
            elif path.is_file():
                take(path)
            elif path.exists():
                report.failed.append((str(path), "not a regular file"))
            else:
                report.failed.append((str(path), "no such file or directory"))
        return files

    def _ingest(self, files, report, progress, cancel, full_zim, started) -> None:
        sizes = {}
        for f in files:
            try:
                sizes[f] = f.stat().st_size
            except OSError:
                sizes[f] = 0
        total_bytes = sum(sizes.values()) or 1
        done_bytes = 0
        chunks_done = 0
        embed_seconds = 0.0
        disk_full: str | None = None

        def tell(index: int, current: Path):
            if progress is None:
                return
            elapsed = time.monotonic() - started
            rate = chunks_done / embed_seconds if embed_seconds > 0 else 0.0
            eta = None
            if done_bytes > 0 and elapsed > 0:
                eta = elapsed / done_bytes * (total_bytes - done_bytes)
            progress(IngestProgress(index, len(files), chunks_done, str(current), rate, eta))

        for index, path in enumerate(files):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                break
            tell(index, path)
            if disk_full:
                report.failed.append((str(path), f"not ingested: {disk_full}"))
                continue
            try:
                kind = readers.kind_of(path)
                if kind is None:
                    raise ReadError(f"unsupported format {path.suffix or '(no extension)'}")
                if kind == "zim" and not full_zim:
                    self._register_zim(path, report)
                else:
                    def on_batch(n, seconds):
                        nonlocal chunks_done, embed_seconds
                        chunks_done += n
                        embed_seconds += seconds
                        tell(index, path)
                        if cancel is not None and cancel.is_set():
                            raise _Cancelled()

                    self._ingest_file(path, kind, report, on_batch)
                self.store.batch_done(str(path))
            except _Cancelled:
                report.cancelled = True
                break
            except ReadError as exc:
                report.failed.append((str(path), str(exc)))
                self.store.batch_done(str(path))
            except FileNotFoundError:
                report.failed.append((str(path), "vanished before it could be read"))
                self.store.batch_done(str(path))
            except Exception as exc:
                if is_disk_full(exc):
                    disk_full = "the disk is full"
                    report.failed.append((str(path), "not ingested: the disk is full (nothing half-written)"))
                    try:
                        self.recover()
                    except Exception:
                        pass  # recovery runs again at the next open
                    continue
                raise
            finally:
                done_bytes += sizes.get(path, 0)
        tell(len(files) if not report.cancelled else index, files[-1] if files else Path("."))

    def _hash(self, path: Path) -> tuple[str, int]:
        import hashlib

        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        return digest.hexdigest(), size

    def _zim_identity(self, path: Path) -> tuple[str, int]:
        # Hashing a 90 GB Wikipedia takes minutes; a ZIM's UUID plus its size identify its content.
        archive_info = self.zims.describe(path)
        size = path.stat().st_size
        return f"zim:{archive_info['uuid']}:{size}", size

    def _register_zim(self, path: Path, report: IngestReport) -> None:
        info = self.zims.describe(path)
        size = path.stat().st_size
        identity = f"zim:{info['uuid']}:{size}"
        existing = self.store.ready_document(str(path))
        if existing and existing.sha256 == identity and existing.mode == "registered":
            report.skipped += 1
            return
        doc_id, _ = self.store.begin_document(str(path), info["title"], "zim", identity, size, [],
                                              np.zeros((0, 384), np.float32), mode="registered",
                                              notes=f"{info['articles']} articles; searched through its own index")
        ranges = self.store.finish_document(doc_id, existing)
        self._drop_vectors(ranges)
        self.zims.forget(str(path))
        report.registered += 1
        if existing:
            report.replaced += 1
        else:
            report.added += 1

    def _ingest_file(self, path: Path, kind: str, report: IngestReport, on_batch) -> None:
        if kind == "zim":
            sha, size = self._zim_identity(path)
        else:
            with file_errors():
                sha, size = self._hash(path)
        existing = self.store.ready_document(str(path))
        if existing and existing.sha256 == sha and existing.mode == "ingested":
            report.skipped += 1
            return
        if kind == "zim":
            from kb.readers.zim import read_zim

            document = read_zim(path)
            if not document.sections:
                raise ReadError("ZIM has no HTML articles with text")
        else:
            document = readers.read(path)
        chunks = chunk_document(document)
        if not chunks:
            raise ReadError("contains no text")
        texts = [embedding_text(document.title, c) for c in chunks]
        parts = []
        for start in range(0, len(texts), EMBED_BATCH * 4):
            t0 = time.monotonic()
            parts.append(self.embedder.embed(texts[start:start + EMBED_BATCH * 4], batch_size=EMBED_BATCH))
            on_batch(len(parts[-1]), time.monotonic() - t0)
        vectors = np.concatenate(parts)
        if not path.exists():
            raise ReadError("vanished while it was being read; not ingested")
        notes = "; ".join(document.notes)
        doc_id, ids = self.store.begin_document(str(path), document.title, document.kind, sha, size, chunks,
                                                vectors, notes=notes)
        self.vectors.add(ids, vectors)
        ranges = self.store.finish_document(doc_id, existing)
        self._drop_vectors(ranges)
        for note in document.notes:
            report.notes.append((str(path), note))
        report.chunks += len(chunks)
        if existing:
            report.replaced += 1
        else:
            report.added += 1

    def _drop_vectors(self, ranges) -> None:
        for entry_id, lo, hi in ranges:
            self.vectors.delete_range(lo, hi)
            self.store.drop_journal(entry_id)

    # --- remove, list, stats ----------------------------------------------------------------------------------
    def remove(self, path: str | Path) -> int:
        key = str(Path(path).expanduser().absolute())
        rows = [r for r in (self.store.ready_document(key), self.store.ready_document(str(path))) if r]
        if not rows:
            rows = self.store.documents_under(key)
        if not rows:
            raise KBError(f"{path} is not in the knowledge base (see `appliance kb list`)")
        with self._ingest_lock:
            handle = self._lock(wait=True)
            try:
                removed = 0
                for row in {r.id: r for r in rows}.values():
                    self._drop_vectors(self.store.delete_document(row.id))
                    if row.kind == "zim":
                        self.zims.forget(row.path)
                    removed += row.chunks
            finally:
                handle.close()
        return removed

    def documents(self) -> list[dict]:
        return [{"path": d.path, "title": d.title, "kind": d.kind, "chunks": d.chunks, "added": d.added,
                 "mode": d.mode, "sha256": d.sha256, "size": d.size, "notes": d.notes}
                for d in self.store.documents()]

    def stats(self) -> dict:
        counts = self.store.counts()
        size = 0
        for root, _, names in os.walk(self.directory):
            for name in names:
                try:
                    size += os.path.getsize(os.path.join(root, name))
                except OSError:
                    pass
        recorded = self.store.meta("embedder")
        return {**counts, "size_bytes": size, "directory": str(self.directory),
                "embedder": json.loads(recorded) if recorded else None}

    # --- search -----------------------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, mode: str = "hybrid", floor: bool = True) -> list[Hit]:
        """Best k passages for `query`; empty when nothing in the library is relevant enough.

        mode: "hybrid" (default), "vector", "bm25" or "rrf" (the last three for evaluation); floor=False keeps
        noise too (for evaluation).
        """
        if mode not in ("hybrid", "vector", "bm25", "rrf"):
            raise KBError(f"unknown search mode {mode!r}")
        query = (query or "").strip()
        if not query or k <= 0:
            return []
        counts = self.store.counts()
        if not counts["documents"]:
            return []
        query_vector = self.embedder.embed_query(query)
        candidates = []
        if counts["chunks"]:
            candidates = local_candidates(self.store, self.vectors, query_vector, query,
                                          use_vector=mode != "bm25", use_bm25=mode != "vector")
        zims = [d.path for d in self.store.documents(mode="registered")]
        if zims and mode != "vector":
            candidates += self.zims.candidates(zims, query, query_vector, self.embedder.embed)
        if mode == "vector":
            candidates.sort(key=lambda c: -c.cosine)
        if mode == "bm25":
            candidates = [c for c in candidates if "bm25" in c.ranks or "zim" in c.ranks]
            for c in candidates:
                c.ranks.pop("vector", None)
        kwargs = {} if floor else {"floor": -1.0, "lexical_floor": -1.0}
        if mode == "bm25":
            return _rank_only(candidates, k, terms(query))
        if mode == "rrf":
            return rrf(candidates, k, terms(query))
        if mode == "vector":
            return _by_cosine(candidates, k, terms(query), floor)
        return fuse(candidates, k, query_terms=terms(query), **kwargs)

    def verify(self) -> dict:
        """Consistency check: every ready chunk has its text, FTS row and vector, and nothing else is left."""
        ready = self.store.ready_chunk_ids()
        rows = self.store.all_chunk_ids()
        fts = self.store.fts_ids()
        vectors = self.vectors.ids()
        return {"chunks": len(ready), "pending_rows": len(rows - ready), "missing_vectors": len(ready - vectors),
                "orphan_vectors": len(vectors - ready), "fts_mismatch": len(fts ^ rows),
                "journal": len(self.store.journal()),
                "ok": ready == vectors and rows == ready and fts == rows and not self.store.journal()}

    def rebuild_vectors(self) -> int:
        """Rebuild chroma from the fp16 vectors kept in SQLite (after a lost or damaged chroma directory)."""
        with self._ingest_lock:
            handle = self._lock(wait=True)
            try:
                existing = sorted(self.vectors.ids())
                for start in range(0, len(existing), 5000):
                    self.vectors.collection.delete(ids=[str(i) for i in existing[start:start + 5000]])
                count = 0
                for ids, vectors in self.store.all_vectors():
                    self.vectors.add(ids, vectors.astype(np.float32))
                    count += len(ids)
                return count
            finally:
                handle.close()

    def close(self) -> None:
        self.store.close()
        self._vectors = None
        self._embedder = None
        self._zims = None


def _diverse(ordered, k, query_terms, score) -> list[Hit]:
    from kb.search import PER_SOURCE, _hit

    hits, per = [], {}
    for cand in ordered:
        if per.get(cand.path, 0) < PER_SOURCE:
            per[cand.path] = per.get(cand.path, 0) + 1
            hits.append(_hit(score(cand), cand, query_terms))
        if len(hits) >= k:
            break
    return hits


def _rank_only(candidates, k, query_terms) -> list[Hit]:
    def lexical_rank(c):
        return min(r for n, r in c.ranks.items() if n in ("bm25", "zim"))

    ordered = sorted(candidates, key=lexical_rank)
    return _diverse(ordered, k, query_terms, lambda c: 1.0 / (61 + lexical_rank(c)))


def _by_cosine(candidates, k, query_terms, floor) -> list[Hit]:
    from kb.search import FLOOR

    ordered = [c for c in sorted(candidates, key=lambda c: -c.cosine) if not floor or c.cosine >= FLOOR]
    return _diverse(ordered, k, query_terms, lambda c: c.cosine)
