"""The vector index: one chroma collection of passage vectors (ids = chunk ids), a rebuildable copy of the vectors
kept in the store.

chroma is never trusted further than it has to be:
  - a full disk leaves its HNSW files truncated or 0 bytes (chroma-core/chroma#4218), after which every open fails;
  - a persisted collection configuration can name an embedding function that chroma then builds, running code
    (chroma-core/chroma#6717).
So before chroma opens a directory, `problem()` reads the files itself: the collection's stored configuration
(only the "legacy" embedding function this code writes is accepted) and each HNSW segment's files against the
sizes its header implies. Then the index is opened and probed (count, one query). Any problem means the index is
rebuilt from scratch (`build`): a new directory, a new collection created with this code's configuration, the
vectors read from SQLite (never a source file re-read, never a passage re-embedded), and only then switched to.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import struct
import threading
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from kb import diskspace
from kb.diskspace import is_full
from kb.errors import DiskFull, KBError, VectorIndexError

COLLECTION = "chunks"
DIRECTORY = re.compile(r"^chroma(-\d+)?$")  # "chroma", then "chroma-1", "chroma-2" ... after rebuilds
STEP = 5000
_HEADER = struct.Struct("<iQQQQQQiIQQQdQ")  # chroma's hnswlib header.bin (format version 1), 100 bytes


def _files_problem(segment: Path) -> str | None:
    """What is wrong with one persisted HNSW segment, judged from its files alone (None: nothing seen)."""
    names = {p.name: p.stat().st_size for p in segment.iterdir() if p.is_file()}
    if not names:
        return None
    pickle = names.get("index_metadata.pickle")
    if pickle is not None:
        if pickle == 0:
            return "index_metadata.pickle is empty"
        with open(segment / "index_metadata.pickle", "rb") as handle:
            head = handle.read(2)
            handle.seek(-1, os.SEEK_END)
            tail = handle.read(1)
        if head[:1] != b"\x80" or tail != b".":
            return "index_metadata.pickle is cut short"
    if "header.bin" not in names:
        return None if "data_level0.bin" not in names else "header.bin is missing"
    if names["header.bin"] != _HEADER.size:
        return f"header.bin is {names['header.bin']} bytes"
    (version, _offset0, capacity, count, per_element, _label, _data, max_level, _enter, _max_m, _m0, _m, _mult,
     _ef) = _HEADER.unpack((segment / "header.bin").read_bytes())
    if version != 1 or not per_element or count > capacity:
        return None  # a format this code does not know: leave the judgement to chroma's own open
    for name in ("data_level0.bin", "length.bin", "link_lists.bin"):
        if name not in names:
            return f"{name} is missing"
    # chroma writes the level-0 data and the vector lengths either for the elements present or for the whole
    # capacity; anything shorter than the elements present, or not a whole number of elements, is cut short.
    data, lengths = names["data_level0.bin"], names["length.bin"]
    if data < count * per_element or data % per_element or data > capacity * per_element:
        return f"data_level0.bin holds {data} bytes for {count} vectors"
    if lengths < count * 4 or lengths % 4 or lengths > capacity * 4:
        return f"length.bin holds {lengths} bytes for {count} vectors"
    links = names["link_lists.bin"]
    if count and max_level > 0 and links == 0:
        return "link_lists.bin is empty"
    return None


def _config_problem(database: Path) -> str | None:
    """The collection's stored configuration, read without chroma: it must be ours (no embedding function)."""
    try:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return f"chroma.sqlite3 cannot be opened ({exc})"
    try:
        rows = db.execute("SELECT name, config_json_str, schema_str FROM collections").fetchall()
    except sqlite3.Error as exc:
        return f"chroma.sqlite3 is damaged ({exc})"
    finally:
        db.close()
    for name, *documents in rows:
        if name != COLLECTION:
            return f"an unexpected collection {name!r}"
        for text in documents:
            if not text:
                continue
            try:
                found = _embedding_functions(json.loads(text))
            except (ValueError, RecursionError):
                return "its stored configuration is not valid JSON"
            foreign = [f for f in found if not isinstance(f, dict) or f.get("type") not in ("legacy", "unknown")
                       or "name" in f]
            if foreign:
                return f"its stored configuration names an embedding function ({json.dumps(foreign[0])[:80]})"
    return None


def _embedding_functions(node, depth: int = 0) -> Iterable:
    if depth > 40:
        raise ValueError("too deep")
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "embedding_function":
                yield value
            else:
                yield from _embedding_functions(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            yield from _embedding_functions(value, depth + 1)


def problem(directory: Path) -> str | None:
    """Why the index in `directory` must not be opened, or None. A missing directory is no problem (it is new)."""
    if not directory.exists():
        return None
    if not directory.is_dir():
        return "it is not a directory"
    try:
        database = directory / "chroma.sqlite3"
        if database.exists():
            found = _config_problem(database)
            if found:
                return found
        for segment in sorted(p for p in directory.iterdir() if p.is_dir()):
            found = _files_problem(segment)
            if found:
                return f"{found}, in segment {segment.name[:8]}"
    except OSError as exc:
        return f"its files cannot be read ({exc.strerror or exc})"
    return None


class Vectors:
    """One chroma collection in one directory; embeddings always passed explicitly, never computed by chroma."""

    def __init__(self, directory: Path, create: bool = False):
        import chromadb
        from chromadb.config import Settings

        self.directory = directory
        self.lock = threading.Lock()
        self.client = None
        try:
            self.client = chromadb.PersistentClient(
                path=str(directory), settings=Settings(anonymized_telemetry=False, allow_reset=False))
            # embedding_function=None: chroma must never fall back to its default model (which downloads one).
            if create:
                self.collection = self.client.create_collection(
                    COLLECTION, embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
            else:
                self.collection = self.client.get_or_create_collection(
                    COLLECTION, embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
        except Exception as exc:  # noqa: BLE001 - chromadb raises its own types: one VectorIndexError
            self.close()
            if is_full(exc, directory.parent):
                raise DiskFull(f"the disk is full at {directory.parent}; the vector index cannot be opened") from None
            raise VectorIndexError(f"the vector index at {directory} cannot be opened ({str(exc)[:160]})") from None
        try:
            self.max_batch = max(1, min(STEP, int(self.client.get_max_batch_size())))
        except Exception:  # noqa: BLE001 - an older chromadb without the call: the default batch
            self.max_batch = STEP

    def _failed(self, exc: Exception, doing: str) -> KBError:
        if is_full(exc, self.directory.parent):
            return DiskFull(f"the disk is full at {self.directory.parent} (the vector index, {doing}); nothing was "
                            "half-written")
        return VectorIndexError(f"the vector index failed {doing} ({str(exc)[:160]})")

    def add(self, ids: list[int], vectors: np.ndarray) -> None:
        try:
            with self.lock:
                for start in range(0, len(ids), self.max_batch):
                    self.collection.upsert(ids=[str(i) for i in ids[start:start + self.max_batch]],
                                           embeddings=vectors[start:start + self.max_batch].astype(np.float32))
        except Exception as exc:  # noqa: BLE001 - chromadb raises its own types: one VectorIndexError
            raise self._failed(exc, "while adding vectors") from None

    def delete_range(self, lo: int, hi: int) -> None:
        try:
            with self.lock:
                for start in range(lo, hi + 1, self.max_batch):
                    ids = [str(i) for i in range(start, min(hi, start + self.max_batch - 1) + 1)]
                    self.collection.delete(ids=ids)
        except Exception as exc:  # noqa: BLE001 - chromadb raises its own types: one VectorIndexError
            raise self._failed(exc, "while deleting vectors") from None

    def query(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        try:
            with self.lock:
                count = self.collection.count()
                if count == 0:
                    return []
                result = self.collection.query(query_embeddings=vector[None, :].astype(np.float32),
                                               n_results=min(n, count), include=["distances"])
        except Exception as exc:  # noqa: BLE001 - chromadb raises its own types: one VectorIndexError
            raise self._failed(exc, "while searching") from None
        distances = result["distances"]
        assert distances is not None  # asked for with include=["distances"]
        return [(int(i), 1.0 - float(d)) for i, d in zip(result["ids"][0], distances[0], strict=True)]

    def ids(self) -> set[int]:
        out: set[int] = set()
        try:
            with self.lock:
                total = self.collection.count()
                for offset in range(0, total, STEP):
                    out.update(int(i) for i in self.collection.get(limit=STEP, offset=offset, include=[])["ids"])
        except Exception as exc:  # noqa: BLE001 - chromadb raises its own types: one VectorIndexError
            raise self._failed(exc, "while listing vectors") from None
        return out

    def count(self) -> int:
        try:
            with self.lock:
                return self.collection.count()
        except Exception as exc:  # noqa: BLE001 - chromadb raises its own types: one VectorIndexError
            raise self._failed(exc, "while counting vectors") from None

    def probe(self, dim: int) -> None:
        """Touch what an open alone does not (chroma loads the HNSW segment lazily): count, then one query."""
        if self.count():
            self.query(np.ones(dim, dtype=np.float32) / np.sqrt(dim), 1)

    def close(self) -> None:
        client, self.client = self.client, None
        close = getattr(client, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing is best effort: the index is being let go
                pass


def build(directory: Path, batches: Iterable[tuple[list[int], np.ndarray]], total: int,
          progress: Callable[[int, int], None] | None = None) -> Vectors:
    """A new index in the empty `directory`, from (ids, vectors) batches. The directory is removed if this fails."""
    shutil.rmtree(directory, ignore_errors=True)
    vectors = None
    try:
        vectors = Vectors(directory, create=True)
        done = 0
        if progress:
            progress(0, total)
        for ids, matrix in batches:
            vectors.add(ids, matrix.astype(np.float32))
            done += len(ids)
            if progress:
                progress(done, total)
        if vectors.count() != done:
            raise VectorIndexError(f"the rebuilt vector index holds {vectors.count()} vectors, not {done}")
        return vectors
    except BaseException:
        if vectors is not None:
            vectors.close()
        shutil.rmtree(directory, ignore_errors=True)
        raise


def directories(kb_directory: Path) -> list[Path]:
    """Every vector index directory under the knowledge base directory (the current one and leftovers)."""
    try:
        return sorted(p for p in kb_directory.iterdir() if p.is_dir() and DIRECTORY.match(p.name))
    except OSError:
        return []


class VectorIndex:
    """The current vector index of one library: which directory it is in (the store's meta "vectors_dir"), opened
    only after `problem()`, a probe and a count against the store, and rebuilt from the store's vectors."""

    def __init__(self, kb_directory: Path, store, lock, dim: int):
        self.kb_directory = kb_directory
        self.store = store
        self.lock = lock  # kb.lock.WriterLock: a rebuild holds it; the count check needs it free of writers
        self.dim = dim
        self._open: Vectors | None = None
        self._guard = threading.RLock()

    def directory(self) -> Path:
        name = self.store.meta("vectors_dir") or "chroma"
        return self.kb_directory / (name if DIRECTORY.match(name) else "chroma")

    def open_checked(self) -> tuple[Vectors | None, str | None]:
        """(the open index, None) when it is sound, else (None, what is wrong). A full disk raises DiskFull."""
        with self._guard:
            current = self.directory()
            if self._open is not None and self._open.directory == current:
                return self._open, None
            self.forget()
            found = problem(current)
            if found:
                return None, found
            try:
                opened = Vectors(current)
            except VectorIndexError as exc:
                return None, str(exc)
            try:
                opened.probe(self.dim)
                with self.lock.try_hold() as held:
                    if held and not self.store.journal():  # no writer between its two stores right now
                        have, ready = opened.count(), self.store.ready_chunk_count()
                        if have != ready:
                            opened.close()
                            return None, f"it holds {have} vectors for {ready} passages"
            except VectorIndexError as exc:
                opened.close()
                return None, str(exc)
            except BaseException:
                opened.close()
                raise
            self._open = opened
            return opened, None

    def forget(self) -> None:
        """Close the index; the next use opens and checks it again."""
        with self._guard:
            if self._open is not None:
                self._open.close()
                self._open = None

    def rebuild(self, progress: Callable[[int, int], None] | None = None, wait: bool = True) -> int:
        """A new index in the next chroma-N directory from the store's vectors, switched to when complete; the old
        one is deleted. Needs the writer lock and room for the new index beside the old."""
        with self.lock.hold(wait=wait):
            total = self.store.ready_chunk_count()
            diskspace.ensure(self.kb_directory, diskspace.rebuild_cost(total), "rebuilding the vector index")
            used = {int(d.name.split("-")[1]) for d in directories(self.kb_directory) if "-" in d.name}
            target = self.kb_directory / f"chroma-{max(used | {0}) + 1}"
            fresh = build(target, self.store.all_vectors(), total, progress)
            try:
                self.store.set_meta("vectors_dir", target.name)
            except BaseException:
                fresh.close()
                shutil.rmtree(target, ignore_errors=True)
                raise
            with self._guard:
                self.forget()
                self._open = fresh
            self.remove_stale()
            return fresh.count()

    def remove_stale(self) -> None:
        """Leftovers of an interrupted rebuild, or the index a rebuild replaced (call with the writer lock)."""
        current = self.directory()
        for directory in directories(self.kb_directory):
            if directory != current:
                shutil.rmtree(directory, ignore_errors=True)
