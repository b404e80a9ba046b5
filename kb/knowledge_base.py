"""KnowledgeBase: the facade the appliance and the TUI use. It owns the parts and the writer lock; the work is
done elsewhere (kb.ingest, kb.search, kb.recovery, kb.vectors).

Thread use: every method may be called from any thread (a Textual worker); SQLite and chroma access are serialised
by locks. Process use: one writer at a time per directory (kb.lock); a second `add` is refused with a clear
message rather than interleaved.

Search finds the nearest vectors of a library of up to EXACT_SCAN_MAX passages by an exact scan of the vectors the
store keeps: never wrong, and cheaper than opening the index in a new process (importing chromadb alone takes
0.4 s and about 40 MiB of a grounded ask). Measured: the scan takes 1.6 ms for 485 passages, 34-45 ms for 20,000
and 94-105 ms for 50,000, with no memory beyond one batch of 4,096. A larger library is searched through the
vector index, which every write keeps up to date whatever the library's size.

The vector index is opened on first use and checked first (kb.vectors.problem, then a probe, then its count against
the store's); a damaged one is rebuilt from scratch out of the vectors the store keeps, with a notice
(`take_notices`). While it cannot be used at all (a full disk, another program holding the writer lock), search
scans the store's own vectors instead, so the library stays readable.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from kb import ingest, provenance, recovery
from kb import search as ranking
from kb import vectors as vector_index
from kb.embedder import DIM, Embedder
from kb.errors import DiskFull, KBError, KBUsageError, ReadError, StoreDamaged, VectorIndexError
from kb.files import shown
from kb.ingest import IngestProgress, IngestReport
from kb.lock import WriterLock
from kb.search import Hit
from kb.store import Store
from kb.vectors import Vectors

if TYPE_CHECKING:
    from kb.reranker import RerankerFiles
    from kb.zim import ZimShelf

__all__ = ["KnowledgeBase", "IngestProgress", "IngestReport"]

RERANK_MEMORY = 4_000  # reranker vectors of passages kept in memory (3 KB each)
RERANK_DISK = 50_000  # and on disk (1.5 KB each, about 75 MB)
EXACT_SCAN_MAX = 50_000  # passages searched by the store's exact scan rather than through the vector index


class KnowledgeBase:
    def __init__(self, directory: Path, embedder_model: Path, tokenizer: Path,
                 reranker: "RerankerFiles | None" = None):
        self.directory = Path(directory)
        self.reranker_files = reranker  # None: passages ranked by the library's own embedder alone
        self.embedder_model = Path(embedder_model)
        self.tokenizer = Path(tokenizer)
        _make_directory(self.directory)
        self.store = Store(self.directory / "text.sqlite")
        self.lock = WriterLock(self.directory / "ingest.lock")
        self._index = vector_index.VectorIndex(self.directory, self.store, self.lock, DIM)
        self._embedder: Embedder | None = None
        self._zims: ZimShelf | None = None
        self._rerank: ranking.Rerank | None = None
        self._rerank_failed = False
        self._parts = threading.RLock()
        self._notices: list[str] = []
        self._states: dict[str, tuple[tuple, provenance.SourceState]] = {}  # path -> (stat key, last check)
        self._problems: list[provenance.SourceState] = []  # sources named by the last searches (take_problems)
        self._described: dict[str, dict] = {}  # path -> what a citation shows of it (described)
        if self.store.journal() or self.store.pending_batch()[0]:
            self._recover_if_idle()

    # --- lazily built parts -----------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._parts:
            if self._embedder is None:
                embedder = Embedder(self.embedder_model, self.tokenizer, cache_dir=self.directory / "cache")
                files = embedder.files()
                recorded = self.store.meta("embedder")
                if recorded is None:
                    self.store.set_meta("embedder", json.dumps(files))
                elif json.loads(recorded) != files and (self.store.counts()["chunks"] or self.store.heading_count()):
                    raise KBError(
                        f"this knowledge base was built with another embedder (model sha256 "
                        f"{json.loads(recorded).get('model', '?')[:16]}...); remove {self.directory} and add the "
                        "files again")
                elif json.loads(recorded) != files:
                    self.store.set_meta("embedder", json.dumps(files))
                self._embedder = embedder
            return self._embedder

    @property
    def rerank(self) -> ranking.Rerank | None:
        """(question, passages) -> cosines from the reranker, loaded on first use with its files hashed; the
        passages' vectors are kept in cache/ (they do not depend on the question). None without reranker files,
        or when they cannot be loaded (named once in the notices: search goes on without it)."""
        with self._parts:
            if self._rerank is None and self.reranker_files is not None and not self._rerank_failed:
                try:
                    self._rerank = self._load_reranker(self.reranker_files)
                except (KBError, MemoryError) as exc:
                    self._rerank_failed = True
                    self._notice(f"the reranker is not used ({str(exc)[:200] or 'out of memory'}); passages are "
                                 "ranked by the library's embedder alone")
            return self._rerank

    def _load_reranker(self, found: "RerankerFiles") -> ranking.Rerank:
        from kb.reranker import Reranker
        from kb.vector_cache import VectorCache

        model = Reranker(found.weights, found.tokenizer, weights_sha256=found.weights_sha256,
                         tokenizer_sha256=found.tokenizer_sha256)
        name = (found.weights_sha256 or "unpinned")[:12]
        cache = self.directory / "cache" / f"rerank-vectors-{name}-{model.max_tokens}.sqlite"
        passages = VectorCache(model.embed, cache, memory=RERANK_MEMORY, disk=RERANK_DISK)

        def rerank(query: str, texts: list[str]) -> list[float]:
            if not texts:
                return []
            return [float(v) for v in passages(texts) @ model.embed([query])[0]]
        return rerank

    @property
    def zims(self) -> ZimShelf:
        from kb.zim import ZimShelf

        with self._parts:
            if self._zims is None:
                self._zims = ZimShelf(self.directory / "cache", self.store)
            return self._zims

    @property
    def vectors(self) -> Vectors:
        """The vector index, checked when opened; a damaged one is rebuilt (needs the writer lock and room)."""
        opened, problem = self._index.open_checked()
        if opened is not None:
            return opened
        with self.lock.try_hold() as held:
            if not held:
                raise VectorIndexError(f"the vector index is damaged ({problem}) and another program is changing "
                                       "the library; it is rebuilt once that one is done")
            self._notice(f"the vector index was damaged ({problem}); rebuilding it from the library's own store "
                         "(no file is read again, nothing is embedded again)")
            self._index.rebuild()
            rebuilt, problem = self._index.open_checked()
            if rebuilt is None:
                raise VectorIndexError(f"the vector index is still damaged after a rebuild ({problem})")
            return rebuilt

    def vector_problem(self) -> str | None:
        """What is wrong with the vector index now (None: it opens and answers). Opens it when it is sound."""
        return self._index.open_checked()[1]

    def forget_vectors(self) -> None:
        """Close the vector index; the next use opens and checks it again."""
        self._index.forget()

    def _notice(self, text: str) -> None:
        with self._parts:
            if text not in self._notices:
                self._notices.append(text)

    def add_notice(self, text: str) -> None:
        """Something done on the library's behalf by its caller (e.g. a shipped document left out), said with the
        library's own notices."""
        self._notice(text)

    def take_notices(self) -> list[str]:
        """What the library did on its own since the last call (a vector index rebuilt, a fallback used)."""
        with self._parts:
            out, self._notices = self._notices, []
        return out

    # --- recovery ---------------------------------------------------------------------------------------------
    def _recover_if_idle(self) -> None:
        with self.lock.try_hold() as held:
            if not held:
                return  # another process is writing; its journal entries are live, not leftovers
            try:
                self.recover()
            except KBError as exc:
                self._notice(f"an interrupted change could not be finished yet ({exc}); it is retried at the "
                             "next `kb add`")

    def recover(self) -> int:
        """Undo what an interrupted write left half-done. Returns how many journal entries were replayed."""
        with self.lock.hold(wait=True):
            self._index.remove_stale()
            if not self.store.journal():
                self.store.drop_pending_without_chunks()
                return 0
            return recovery.replay(self.store, self.vectors)

    def rebuild_vectors(self, progress: Callable[[int, int], None] | None = None, wait: bool = True) -> int:
        """Build a new vector index from scratch out of the vectors the store keeps (never a file re-read, never a
        passage re-embedded), switch to it, and delete the old one. Returns how many vectors it holds.
        wait=False: refuse (KBError) rather than wait while another program changes the library."""
        return self._index.rebuild(progress, wait)

    def repair(self, progress: Callable[[int, int], None] | None = None) -> recovery.RepairReport:
        """`appliance kb repair`: check SQLite, rebuild the vector index from scratch, replay the journal, verify."""
        started = time.monotonic()
        report = recovery.RepairReport()
        report.database = self.store.quick_check()
        if report.database != "ok":
            raise StoreDamaged(f"{self.store.path} is damaged (SQLite: {report.database[:200]}); the library's own "
                               "store cannot be repaired in place: move it aside and add your files again")
        with self.lock.hold(wait=True):
            report.problem = self.vector_problem()
            report.vectors = self.rebuild_vectors(progress=progress)
            report.replayed = recovery.replay(self.store, self.vectors)
            report.unrebuildable = self.store.bad_vectors()
            report.verify = self.verify()
        report.seconds = time.monotonic() - started
        return report

    # --- ingest -----------------------------------------------------------------------------------------------
    def pending(self) -> list[str]:
        """Paths of an interrupted `add` not yet done (`add([])` resumes them)."""
        return [shown(p) for p in self.store.pending_batch()[0]]

    def add(self, paths: list[Path], progress: Callable[[IngestProgress], None] | None = None,
            cancel: threading.Event | None = None, full_zim: bool = False,
            origins: dict[str, dict] | None = None) -> IngestReport:
        """Add files and folders. `origins`: absolute path -> where that file came from (a download's URL and
        catalog entry), kept in its provenance record; the others came from their path."""
        with self.lock.hold(wait=False, busy=f"another ingest is changing the library at {self.directory}; wait "
                                             "for it to finish"):
            self.recover()
            try:
                return ingest.run(self, list(paths), progress, cancel, full_zim, origins)
            finally:
                with self._parts:
                    self._states.clear()
                    self._described.clear()

    # --- remove, list, stats ----------------------------------------------------------------------------------
    def remove(self, path: str | Path) -> int:
        """Remove a document, or every document under a directory. Returns how many passages went."""
        key = removal_target(path)
        rows = [r for r in (self.store.ready_document(key), self.store.ready_document(os.fspath(path))) if r]
        if not rows:
            rows = self.store.documents_under(key)
        if not rows:
            rows = [d for d in self.store.documents() if shown(d.path) in (os.fspath(path), shown(key))]
        if not rows:
            raise KBError(f"{shown(path)} is not in the knowledge base (see `appliance kb list`)")
        with self.lock.hold(wait=True):
            removed = 0
            unfinished = False
            for row in {r.id: r for r in rows}.values():
                ranges = self.store.delete_document(row.id)
                try:
                    if ranges:
                        recovery.drop_vectors(self.store, self.vectors, ranges)
                except (DiskFull, VectorIndexError):
                    unfinished = True  # the journal keeps the old vectors' ids; dropped at the next replay
                if row.kind == "zim":
                    self.zims.forget(row.path)
                removed += row.chunks
            if unfinished:
                self.forget_vectors()
        return removed

    def documents(self) -> list[dict]:
        return [_document_dict(d) for d in self.store.documents()]

    def article(self, zim: str, article: str) -> tuple[str, list[dict]] | None:
        """The whole article a ZIM passage came from, as text sections ({"heading": [...], "paragraphs": [...]}),
        from an archive registered in this library only (None otherwise, or when the article is not there)."""
        if zim not in {d.path for d in self.store.documents(mode="registered")}:
            return None
        try:
            title, sections = self.zims.article_text(zim, article)
        except (KeyError, RuntimeError, OSError, KBError):
            return None
        return title, [{"heading": list(s.heading), "paragraphs": list(s.paragraphs)} for s in sections]

    def document(self, path: str | Path) -> dict | None:
        """One ready document by its exact (absolute) path, as `documents()` gives it; None when it is not there."""
        row = self.store.ready_document(os.path.abspath(os.fspath(path)))
        return _document_dict(row) if row is not None else None

    def meta(self, key: str) -> str | None:
        """A value the library keeps for its caller (e.g. whether the shipped field guide was removed)."""
        return self.store.meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.store.set_meta(key, value)

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
    def search(self, query: str, k: int = 5, mode: str = "hybrid", floor: bool = True,
               rerank: bool = True) -> list[Hit]:
        """Best k passages for `query`; empty when nothing in the library is relevant enough.

        mode: "hybrid" (default), "vector", "bm25" or "rrf" (the last three for evaluation); floor=False keeps
        noise too (for evaluation); hybrid's best candidates are read again by the reranker when it has one
        (rerank=False: not, for evaluation).
        """
        if mode not in ranking.MODES:
            raise KBError(f"unknown search mode {mode!r}")
        if not (query or "").strip() or k <= 0:
            return []
        counts = self.store.counts()
        if not counts["documents"]:
            return []
        nearest = self.store.nearest if counts["chunks"] <= EXACT_SCAN_MAX else self._nearest
        zim_paths = [state.path for state in self._usable_archives()]
        hits = ranking.search(query, k, store=self.store, embedder=self.embedder, nearest=nearest,
                              zims=self.zims if zim_paths else None, zim_paths=zim_paths, mode=mode, floor=floor,
                              rerank=self.rerank if mode == "hybrid" and rerank else None)
        cited = {hit.path for hit in hits if hit.kind != "zim"}
        if cited:
            self._name(state for state in self.check_sources(cited) if state.problem)
        return hits

    # --- provenance -------------------------------------------------------------------------------------------
    def _usable_archives(self) -> list[provenance.SourceState]:
        """The registered archives search may read: whole (unchanged since registered) and opened by libzim. The
        others are named (take_problems, take_notices), never searched as if whole or silently left out."""
        usable = []
        rows = self.store.documents(mode="registered")
        for state in self._check_rows(rows, self.store.source, provenance.REHASH_MAX):
            if state.searched:
                try:
                    self.zims.archive(state.path)
                except Exception as exc:  # noqa: BLE001 - libzim raises anything on a damaged archive
                    reason = str(exc) if isinstance(exc, ReadError) else f"libzim cannot read it ({str(exc)[:100]})"
                    state = provenance.SourceState(state.path, state.kind, state.mode, provenance.UNREADABLE,
                                                   reason)
                    self._name([state])
                    continue
                usable.append(state)
            if state.problem:
                self._name([state])
        return usable

    def _name(self, states) -> None:
        with self._parts:
            for state in states:
                if all(state.path != known.path for known in self._problems):
                    self._problems.append(state)

    def take_problems(self) -> list[provenance.SourceState]:
        """The sources the searches since the last call met in a bad state (a damaged archive not searched, a
        cited file that changed since it was added); each also gives a notice line."""
        with self._parts:
            out, self._problems = self._problems, []
        return out

    def check_sources(self, paths: set[str] | None = None,
                      rehash_max: int = provenance.REHASH_MAX) -> list[provenance.SourceState]:
        """The state of every ready source (or those at `paths`) now: a stat each, a hash only when its size or
        mtime changed (kb.provenance.check); remembered in this process while the stat stays the same. With
        `paths`, only those documents and records are read (a search checks its archives and cited files)."""
        if paths is None:
            records = self.store.sources()
            return self._check_rows(self.store.documents(), records.get, rehash_max)
        rows = {row.id: row for row in (self.store.ready_document(path) for path in paths) if row is not None}
        return self._check_rows(list(rows.values()), self.store.source, rehash_max)

    def _check_rows(self, rows, record_of, rehash_max: int) -> list[provenance.SourceState]:
        out = []
        for row in rows:
            try:
                info = os.stat(row.path)
                key: tuple = (info.st_size, info.st_mtime_ns, info.st_ino)
            except (OSError, ValueError):
                key = ()
            with self._parts:
                cached = self._states.get(row.path)
            if cached is not None and cached[0] == key and key:
                out.append(cached[1])
                continue
            state, updated = provenance.check(row, record_of(row.path), rehash_max)
            if updated is not None:
                try:
                    self.store.put_source(updated)
                except KBError:
                    pass  # a full or read-only disk: checked again next time
            with self._parts:
                self._states[row.path] = (key, state)
            out.append(state)
        return out

    def verify_sources(self, progress: Callable[[int, int, str], None] | None = None) -> list[provenance.SourceState]:
        """`kb verify`: every source re-hashed (a changed size needs no hash), its finding kept in its record.
        progress(bytes done, bytes in all, path as shown)."""
        rows = self.store.documents()
        records = self.store.sources()
        sizes = {}
        for row in rows:
            try:
                sizes[row.path] = os.stat(row.path).st_size
            except (OSError, ValueError):
                sizes[row.path] = 0
        total, done = sum(sizes.values()), 0
        out = []
        for row in rows:
            name = shown(row.path)

            def moved(size: int, done: int = done, name: str = name) -> None:
                if progress:
                    progress(done + size, total, name)

            rec = records.get(row.path)
            state, updated = provenance.check(row, rec, progress=moved, full=True)
            done += sizes[row.path]
            kept = updated or rec
            if kept is not None:
                kept.verified, kept.verdict, kept.detail = time.time(), state.state, state.detail
                try:
                    self.store.put_source(kept)
                except KBError:
                    pass
            with self._parts:
                self._states.pop(row.path, None)
            out.append(state)
        return out

    def described(self, path: str) -> dict:
        """What a citation shows of a source beside its path: the title, publisher and license its file states
        (None where it does not), each with where it was read, and the sha256 of its bytes on record (None: never
        hashed). The same for every hit of one source, so it is read once per process."""
        with self._parts:
            cached = self._described.get(path)
        if cached is not None:
            return cached
        rec = self.store.source(path)
        facts = rec.facts if rec is not None else {}
        out: dict = {"sha256": rec.sha256 if rec is not None else None}
        for name in provenance.CITED:
            entry = facts.get(name)
            out[name.lower()] = entry["value"] if entry else None
        out["from"] = {name.lower(): facts[name]["from"] for name in provenance.CITED if name in facts}
        with self._parts:
            self._described[path] = out
        return out

    def records(self) -> list[dict]:
        """Every ready source as `documents()` gives it, with its provenance record (`record`, as `kb show`)."""
        records = self.store.sources()
        return [_document_dict(row) | {"record": _record_dict(records.get(row.path), row)}
                for row in self.store.documents()]

    def source_record(self, path: str | Path) -> tuple[dict, provenance.SourceState] | None:
        """`kb show`: one source's document row, provenance record and state now, found by its path (as given or
        made absolute) or, when that names none, by a file name only one source has."""
        wanted = os.fspath(path)
        rows = self.store.documents()
        found = [d for d in rows if d.path in (wanted, os.path.abspath(wanted)) or shown(d.path) == wanted]
        if not found:
            found = [d for d in rows if Path(d.path).name == wanted]
        if len(found) > 1:
            raise KBUsageError(f"{len(found)} sources are named {wanted}; give the whole path (see `kb list`)")
        if not found:
            raise KBUsageError(f"{wanted} is not in the library (see `appliance kb list`)")
        row = found[0]
        rec = self.store.source(row.path)
        (state,) = self.check_sources({row.path})
        rec = self.store.source(row.path) or rec
        out = _document_dict(row) | {"record": _record_dict(rec, row)}
        return out, state

    def _nearest(self, vector, n: int) -> list[tuple[int, float]]:
        try:
            return self.vectors.query(vector, n)
        except (VectorIndexError, DiskFull) as exc:
            self.forget_vectors()
            self._notice(f"the vector index cannot be used now ({exc}); searched the library's own store instead")
            return self.store.nearest(vector, n)

    def verify(self) -> dict:
        """Consistency check: every ready chunk has its text, FTS row, stored vector and indexed vector, and nothing
        else is left."""
        ready = self.store.ready_chunk_ids()
        rows = self.store.all_chunk_ids()
        fts = self.store.fts_ids()
        vectors = self.vectors.ids()
        journal = self.store.journal()
        bad = self.store.bad_vectors()
        return {"chunks": len(ready), "pending_rows": len(rows - ready), "missing_vectors": len(ready - vectors),
                "orphan_vectors": len(vectors - ready), "fts_mismatch": len(fts ^ rows),
                "bad_stored_vectors": bad, "journal": len(journal),
                "ok": ready == vectors and rows == ready and fts == rows and not journal and not bad}

    def close(self) -> None:
        self.forget_vectors()
        self.store.close()
        self._embedder = None
        self._rerank = None
        if self._zims is not None:
            self._zims.close()
        self._zims = None


def _record_dict(rec, row) -> dict:
    """A provenance record for JSON and `kb show`: every fact with where it came from; the facts its kind of file
    may state but did not, listed as unknown."""
    if rec is None:
        return {"sha256": None, "recorded": False, "facts": {}, "unknown": list(provenance.STATED.get(row.kind, ())),
                "origin": {"kind": "unknown"}}
    stated = provenance.STATED.get(row.kind, ())
    return {"recorded": True, "sha256": rec.sha256, "size": rec.size, "mtime_ns": rec.mtime_ns,
            "hashed": rec.hashed, "hashed_by": rec.hashed_by, "origin": rec.origin, "added": rec.added,
            "facts": rec.facts, "unknown": [name for name in stated if name not in rec.facts],
            "verified": rec.verified, "verdict": rec.verdict or None, "detail": rec.detail or None}


def _document_dict(d) -> dict:
    return {"path": shown(d.path), "title": d.title, "kind": d.kind, "chunks": d.chunks, "added": d.added,
            "mode": d.mode, "sha256": d.sha256, "size": d.size, "notes": d.notes}


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            try:
                os.stat(directory)
            except OSError as inner:
                exc = inner
        if exc.errno == errno.ELOOP:
            reason = "a symlink loop: too many levels of symbolic links"
        elif exc.errno == errno.EEXIST:
            reason = "it exists and is not a directory"
        elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            reason = f"read-only: {exc.strerror}"
        else:
            reason = exc.strerror or str(exc)
        raise KBError(f"cannot use the knowledge base directory {directory} ({reason})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise KBError(f"the knowledge base directory {directory} is read-only; make it writable (or point "
                      "APPLIANCE_HOME elsewhere)")


def removal_target(path: str | Path) -> str:
    """The absolute path a removal names; refuses an empty path, the root and the home directory (or above it),
    which would remove whole libraries by accident."""
    text = os.fspath(path)
    if not text.strip():
        raise KBUsageError("an empty path names nothing to remove; give a file or folder (see `appliance kb list`)")
    key = os.path.abspath(os.path.expanduser(text))
    home = os.path.abspath(os.path.expanduser("~"))
    if key == os.path.abspath(os.sep):
        raise KBUsageError("refusing to remove everything under the root directory; name the files or folders to "
                           "remove (see `appliance kb list`)")
    if key == home or home.startswith(key.rstrip(os.sep) + os.sep):
        raise KBUsageError(f"refusing to remove everything under {shown(key)} (your home directory or above it); "
                           "name the files or folders to remove (see `appliance kb list`)")
    return key
