"""The ingest pipeline: one `add` batch, file by file.

    expand the paths (kb.files: walk folders, refuse what cannot be a document)
    estimate what the batch will write; refuse it when it will not fit (kb.diskspace)
    for each file:
      open it as a regular file (O_NONBLOCK + fstat) -> hash through that descriptor -> skip if unchanged
      -> read it (kb.readers) -> chunk -> embed in groups (progress and cancel between groups)
      -> check the room for this file's exact passages -> the journaled write (kb.store step 1, the vector index,
         step 3) -> old vectors dropped

A file that cannot be read is one line in the report and the batch goes on. A full disk (or a failing vector
index) stops the batch cleanly: the file being written is rolled back, the rest stay listed in the interrupted
batch, and a re-run of the same `kb add` (or `kb add` alone) completes it once there is room. Cancel is checked
between files and between embedding groups; nothing is raised through a caller's callback.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from kb import diskspace, files, provenance, readers, recovery
from kb.chunking import chunk_document, embedding_text
from kb.embedder import DIM
from kb.errors import DiskFull, KBError, ReadError, VectorIndexError

if TYPE_CHECKING:
    from kb.embedder import Embedder
    from kb.store import Store
    from kb.vectors import Vectors
    from kb.zim import ZimShelf


class IngestParts(Protocol):
    """What an ingest uses of the library, and nothing more (KnowledgeBase provides it): the vector index and the
    embedder are opened when first asked for; after a failed write the index is forgotten and opened (checked,
    rebuilt if damaged) again before its next use."""

    directory: Path
    store: "Store"

    @property
    def vectors(self) -> "Vectors": ...
    @property
    def embedder(self) -> "Embedder": ...
    @property
    def zims(self) -> "ZimShelf": ...
    def forget_vectors(self) -> None: ...

EMBED_BATCH = 8
EMBED_GROUP = EMBED_BATCH * 4  # texts embedded between two looks at progress and cancel
HEADING_BATCH = EMBED_BATCH  # titles and headings a batch (at 32, registering 5,001 pages peaked at 2 GB RSS)
HEADING_GROUP = 512  # of them embedded and written in one transaction (a stopped registration goes on from there)


@dataclass
class IngestProgress:
    files_done: int
    files_total: int
    chunks_done: int
    current: str  # as shown (kb.files.shown)
    rate: float  # chunks per second
    eta_s: float | None
    stage: str = ""  # within the current file: "reading", "chunking", "embedding" ("" between files)
    file_chunks_done: int = 0  # the current file's passages embedded so far, of file_chunks (0 until chunked)
    file_chunks: int = 0

    @property
    def fraction(self) -> float:
        """Files done plus the share of the current one embedded: what a bar shows, moving within a large file."""
        inside = self.file_chunks_done / self.file_chunks if self.file_chunks else 0.0
        return min(self.files_done + inside, self.files_total)


@dataclass
class IngestReport:
    added: int = 0
    skipped: int = 0
    replaced: int = 0
    chunks: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path as shown, reason)
    registered: int = 0  # ZIM archives registered for search through their own index
    headings: int = 0  # their titles and section headings embedded by this batch (kb.zim.article_headings)
    ignored: int = 0  # files of other formats met while walking a directory
    cancelled: bool = False
    stopped: str | None = None  # why the batch stopped early (a full disk); the rest is resumable
    not_added: list[str] = field(default_factory=list)  # files not tried after it stopped (paths as shown)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, note) e.g. non-UTF-8 text decoded
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"added": self.added, "replaced": self.replaced, "skipped": self.skipped, "chunks": self.chunks,
                "registered_zims": self.registered, "headings": self.headings, "ignored": self.ignored,
                "cancelled": self.cancelled, "stopped": self.stopped, "not_added": self.not_added,
                "failed": [{"path": p, "reason": r} for p, r in self.failed],
                "notes": [{"path": p, "note": n} for p, n in self.notes], "seconds": round(self.seconds, 2)}


class _Cancelled(Exception):
    """Internal: the batch was cancelled between two embedding groups (never raised through a callback)."""


def estimate(knowledge: IngestParts, paths: list[Path], full_zim: bool) -> int:
    """Bytes the batch will write, from file sizes by format; files whose size matches a stored one are taken
    to be unchanged (they are hashed and skipped)."""
    needed = 0
    for path in paths:
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        kind = readers.kind_of(path)
        if kind == "zim" and not full_zim:
            continue
        existing = knowledge.store.ready_document(os.fspath(path))
        if existing is not None and existing.size == size and existing.mode == "ingested":
            continue
        needed += diskspace.file_cost(kind or "txt", size)
    return needed


def run(knowledge: IngestParts, paths: list[Path], progress: Callable[[IngestProgress], None] | None,
        cancel: threading.Event | None, full_zim: bool, origins: dict[str, dict] | None = None) -> IngestReport:
    """One batch. The caller holds the writer lock and has replayed the journal. `origins`: absolute path -> where
    that file came from (a URL and its catalog entry), for its provenance record; others came from their path."""
    batch = _Batch(knowledge, progress, cancel, full_zim)
    batch.origins = dict(origins or {})
    return batch.run(paths)


class _Batch:
    def __init__(self, knowledge: IngestParts, progress, cancel, full_zim: bool):
        self.kb = knowledge
        self.store = knowledge.store
        self.progress = progress
        self.cancel = cancel
        self.full_zim = full_zim
        self.report = IngestReport()
        self.started = time.monotonic()
        self.chunks_done = 0
        self.embed_seconds = 0.0
        self.done_bytes = 0
        self.current_bytes = 0  # the size of the file in hand (its share of the ETA while it is embedded)
        self.total_bytes = 1
        self.files: list[Path] = []
        self.index = 0  # the file in hand
        self.origins: dict[str, dict] = {}

    # --- the batch --------------------------------------------------------------------------------------------
    def run(self, paths: list[Path]) -> IngestReport:
        report = self.report
        if not paths:
            pending, options = self.store.pending_batch()
            paths = [Path(p) for p in pending]
            self.full_zim = self.full_zim or bool(options.get("full_zim"))
        self.files, report.ignored = files.expand(paths, readers.kind_of, report.failed)
        if self.files:
            diskspace.ensure(self.kb.directory, estimate(self.kb, self.files, self.full_zim),
                             f"adding {len(self.files)} file{'s' if len(self.files) != 1 else ''}")
        self.store.set_batch([os.fspath(f) for f in self.files], {"full_zim": self.full_zim})
        sizes = {}
        for path in self.files:
            try:
                sizes[path] = os.stat(path).st_size
            except OSError:
                sizes[path] = 0
        self.total_bytes = sum(sizes.values()) or 1
        for index, path in enumerate(self.files):
            self.index = index
            if self._cancelled():
                report.cancelled = True
                break
            self._tell(self.index, path)
            if report.stopped:
                report.not_added.append(files.shown(path))
                continue
            self.current_bytes = sizes.get(path, 0)
            try:
                self._one(path)
                self._done(path)
            except _Cancelled:
                report.cancelled = True
                break
            except ReadError as exc:
                report.failed.append((files.shown(path), str(exc)))
                self._done(path)
            except (DiskFull, VectorIndexError) as exc:
                self._stop(path, exc)
            finally:
                self.done_bytes += sizes.get(path, 0)
        if not report.cancelled and not report.stopped:
            try:
                self.store.clear_batch()
            except DiskFull:
                pass  # its files are all done: a later `kb add` finds them unchanged
        done = self.index if report.cancelled else len(self.files)
        self._tell(done, self.files[-1] if self.files else Path("."))
        report.seconds = time.monotonic() - self.started
        return report

    def _done(self, path: Path) -> None:
        try:
            self.store.batch_done(os.fspath(path))
        except DiskFull as exc:
            self._stop(None, exc)

    def _stop(self, path: Path | None, exc: KBError) -> None:
        """A full disk or a failing vector index: the file in hand is not added, the batch stops cleanly."""
        said = str(exc)
        if isinstance(exc, DiskFull) and "disk is full" not in said:
            said = f"the disk is full: {said}"
        if path is not None:
            self.report.failed.append((files.shown(path), f"not added: {said}"))
        if self.report.stopped is None:
            advice = "free some space" if isinstance(exc, DiskFull) else "run `appliance kb repair`"
            self.report.stopped = f"{said}; {advice} and run the same `kb add` again to finish"
        self.kb.forget_vectors()  # its files may be damaged now: checked again before the next use
        try:
            recovery.replay(self.store, self.kb.vectors)
        except KBError:
            pass  # the journal keeps it; replayed at the next open or `kb add`

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _tell(self, index: int, current: Path, stage: str = "", inside: tuple[int, int] = (0, 0)) -> None:
        """Progress: between files, and within one at each stage and each embedding group (`inside`: its passages
        embedded, of how many), so a large file moves the bar too."""
        if self.progress is None:
            return
        elapsed = time.monotonic() - self.started
        rate = self.chunks_done / self.embed_seconds if self.embed_seconds > 0 else 0.0
        done_bytes = self.done_bytes + (self.current_bytes * inside[0] / inside[1] if inside[1] else 0)
        eta = None
        if done_bytes > 0 and elapsed > 0:
            eta = elapsed / done_bytes * (self.total_bytes - done_bytes)
        self.progress(IngestProgress(index, len(self.files), self.chunks_done, files.shown(current), rate, eta,
                                     stage, inside[0], inside[1]))

    # --- one file ---------------------------------------------------------------------------------------------
    def _one(self, path: Path) -> None:
        kind = readers.kind_of(path)
        if kind is None:
            raise ReadError(f"unsupported format {path.suffix or '(no extension)'}")
        key = os.fspath(path)
        facts: dict = {}
        with files.open_regular(path) as handle:
            before = os.fstat(handle.fileno())
            if kind == "zim":
                from kb.zim import identify

                info = identify(path, handle)
                facts = info.facts
                if not self.full_zim:
                    self._register(path, info, handle, before)
                    return
                identity, size = info.identity, info.size
                digest = self._hash(handle, path, size)
                handle.seek(0)
            else:
                identity, size = files.sha256(handle.read)  # the handle was just opened; readers seek to 0
                digest = identity
            existing = self.store.ready_document(key)
            if existing and existing.sha256 == identity and existing.mode == "ingested":
                self.report.skipped += 1
                self._adopt(key, existing, digest, before)
                return
            self._tell(self.index, path, "reading")
            if kind == "zim":
                from kb.readers.zim import read_zim

                document = read_zim(path, handle)
                if not document.sections:
                    raise ReadError("ZIM has no HTML articles with text")
            else:
                document = readers.read_from(handle, path, kind)
            after = os.fstat(handle.fileno())
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise ReadError("changed while it was being read; add it again once it is complete")
        self._tell(self.index, path, "chunking")
        chunks = chunk_document(document)
        if not chunks:
            raise ReadError("contains no text")
        vectors = self._embed([embedding_text(document.title, c) for c in chunks], path)
        if not os.path.exists(path):
            raise ReadError("vanished while it was being read; not added")
        text_bytes = sum(len(c.text.encode("utf-8", "replace")) for c in chunks)
        diskspace.ensure(self.kb.directory, diskspace.write_cost(len(chunks), text_bytes), "this file", advice="")
        doc_id, ids = self.store.begin_document(key, document.title, document.kind, identity, size, chunks, vectors,
                                                notes="; ".join(document.notes))
        self.kb.vectors.add(ids, vectors)
        source = provenance.record(key, digest, size, before.st_mtime_ns, "ingest", self.origins.get(key),
                                   {**facts, **document.facts})
        ranges = self.store.finish_document(doc_id, existing, source)
        report = self.report
        for note in document.notes:
            report.notes.append((files.shown(path), note))
        report.chunks += len(chunks)
        if existing:
            report.replaced += 1
        else:
            report.added += 1
        if ranges:
            try:
                recovery.drop_vectors(self.store, self.kb.vectors, ranges)
            except (DiskFull, VectorIndexError) as exc:
                self._stop(None, exc)  # the file is in; the old vectors go at the next replay

    def _embed(self, texts: list[str], path: Path) -> np.ndarray:
        embedder = self.kb.embedder
        parts = []
        self._tell(self.index, path, "embedding", (0, len(texts)))
        for start in range(0, len(texts), EMBED_GROUP):
            if self._cancelled():
                raise _Cancelled()
            began = time.monotonic()
            parts.append(embedder.embed(texts[start:start + EMBED_GROUP], batch_size=EMBED_BATCH))
            self.embed_seconds += time.monotonic() - began
            self.chunks_done += len(parts[-1])
            self._tell(self.index, path, "embedding", (start + len(parts[-1]), len(texts)))
        return np.concatenate(parts) if parts else np.zeros((0, DIM), np.float32)

    def _hash(self, handle, path: Path, size: int) -> str:
        """The sha256 of an archive's bytes, through the handle already open (progress: the bar's share of it)."""
        self._tell(self.index, path, "hashing", (0, max(size, 1)))
        handle.seek(0)

        def moved(done: int) -> None:
            if done % (64 << 20) < (1 << 20):
                self._tell(self.index, path, "hashing", (done, max(size, 1)))

        digest, _ = files.sha256(handle.read, moved)
        return digest

    def _adopt(self, key: str, existing, digest: str | None, before: os.stat_result) -> None:
        """An unchanged file met again: its record gains what it lacked (an mtime, a first record)."""
        rec = self.store.source(key)
        if rec is not None and rec.mtime_ns == before.st_mtime_ns and rec.sha256:
            return
        if rec is None:
            rec = provenance.record(key, digest, before.st_size, before.st_mtime_ns, "ingest", self.origins.get(key),
                                    {}, added=existing.added)
        else:
            rec.mtime_ns, rec.size = before.st_mtime_ns, before.st_size
            if not rec.sha256 and digest:
                rec.sha256, rec.hashed, rec.hashed_by = digest, time.time(), "ingest"
        self.store.put_source(rec)

    def _register(self, path: Path, info, handle, before: os.stat_result) -> None:
        """A ZIM registered for search through its own index: hashed once here (then only by `kb verify`, or when
        its size or mtime changes), with its metadata in its provenance record, and its titles and section
        headings embedded (once: an unchanged archive registered again costs nothing)."""
        key = os.fspath(path)
        existing = self.store.ready_document(key)
        rec = self.store.source(key)
        if existing and existing.sha256 == info.identity and existing.mode == "registered":
            unchanged = True
            if not (rec is not None and rec.sha256 and (rec.size, rec.mtime_ns) == (before.st_size,
                                                                                  before.st_mtime_ns)):
                digest = self._hash(handle, path, info.size)
                if rec is None or not rec.sha256:  # registered before provenance was kept: its first record
                    self.store.put_source(provenance.record(key, digest, info.size, before.st_mtime_ns, "kb add",
                                                            self.origins.get(key), info.facts, added=existing.added))
                elif rec.sha256 == digest:  # touched, not changed
                    rec.mtime_ns = before.st_mtime_ns
                    self.store.put_source(rec)
                else:
                    unchanged = False
                    self.store.drop_headings(info.identity)  # the same UUID and size, other bytes: made again
            if unchanged:
                self._headings(path, handle, info)  # an archive registered before they were made gets them now
                self.report.skipped += 1
                return
        else:
            digest = self._hash(handle, path, info.size)
        made = self._headings(path, handle, info)
        doc_id, _ = self.store.begin_document(key, info.title, "zim", info.identity, info.size, [],
                                              np.zeros((0, DIM), np.float32), mode="registered",
                                              notes=f"{info.articles} articles; searched through its own index"
                                                    f"{made}")
        source = provenance.record(key, digest, info.size, before.st_mtime_ns, "registration", self.origins.get(key),
                                   info.facts)
        ranges = self.store.finish_document(doc_id, existing, source)
        if ranges:
            recovery.drop_vectors(self.store, self.kb.vectors, ranges)
        self.kb.zims.forget(key)
        self.report.registered += 1
        if existing:
            self.report.replaced += 1
        else:
            self.report.added += 1

    def _headings(self, path: Path, handle, info) -> str:
        """Embed the archive's titles and section headings (kb.zim.article_headings) into the store, HEADING_GROUP
        at a time, each group in its own transaction; progress and cancel between articles. Nothing when its set
        is complete already; a set cut short (cancelled, a full disk) goes on from where it stopped. Returns what
        the document's note says of it ("" when nothing was done)."""
        from kb.readers.zim import open_archive
        from kb.store import HeadingSet
        from kb.zim import HEADINGS, article_headings, heading_recipe

        recipe = heading_recipe()
        found = self.store.heading_set(info.identity)
        if found is not None and found.recipe != recipe:  # made another way (an older version): made again
            self.store.drop_headings(info.identity)
            found = None
        if found is not None and found.complete:
            return ""
        self.store.drop_orphan_headings(keep=info.identity)
        archive = open_archive(path, handle)
        start = found.entries if found is not None else 0
        began = time.monotonic() - (found.seconds if found is not None else 0.0)
        total = max(archive.article_count, 1)
        progress = HeadingSet(info.identity, recipe=recipe)
        entries: list[tuple[str, str]] = []
        texts: list[str] = []
        first = start
        embedder = self.kb.embedder

        def flush(complete: bool) -> None:
            nonlocal first
            if self._cancelled():
                raise _Cancelled()
            vectors = embedder.embed(texts, batch_size=HEADING_BATCH) if texts else np.zeros((0, DIM), np.float32)
            progress.complete, progress.seconds = complete, time.monotonic() - began
            self.store.add_headings(info.identity, first, entries, vectors, progress)
            self.report.headings += len(entries)
            first += len(entries)
            entries.clear()
            texts.clear()
            self._tell(self.index, path, "titles and headings", (min(progress.articles, total), total))

        self._tell(self.index, path, "titles and headings", (0, total))
        for article, made, read in article_headings(archive):
            progress.articles += 1
            progress.headed += int(read)
            for section, text in made:
                if progress.entries >= start:
                    entries.append((article, section))
                    texts.append(text)
                progress.entries += 1
            if len(entries) >= HEADING_GROUP:
                flush(False)
            elif self._cancelled():
                raise _Cancelled()
            if progress.articles % 64 == 0:
                self._tell(self.index, path, "titles and headings", (min(progress.articles, total), total))
        flush(True)
        said = (f"{progress.entries:,} titles and section headings embedded for search by meaning "
                f"({progress.seconds:.1f} s)")
        if progress.headed < progress.articles:
            said += (f"; more than {HEADINGS:,} entries: the section headings of {progress.headed:,} of "
                     f"{progress.articles:,} articles, titles only for the rest")
        if progress.entries >= HEADINGS and progress.articles < archive.article_count:
            said += f"; the titles of {progress.articles:,} of {archive.article_count:,} articles only"
        self.report.notes.append((files.shown(path), said))
        return f"; {said}"
