"""The library's own store, in SQLite: documents, passage text, each passage's embedding (fp16), the FTS5 index,
the ingest journal and the interrupted batch. It is the source of truth; the vector index (kb.vectors, chroma) is
a rebuildable copy of the vectors kept here. A document is written in three steps, each recorded so that a
`kill -9` at any point leaves the knowledge base consistent:

  1. one SQLite transaction: the document row (state 'pending'), its chunks (text, fp16 vector, FTS5 row) and a
     journal entry ('add', chunk id range). Pending documents are invisible to search.
  2. the vectors go to chroma (ids = chunk ids; chunk ids are never reused: AUTOINCREMENT).
  3. one SQLite transaction: the document becomes 'ready'; an older version of the same file is deleted and its
     chunk id range journaled as 'delete'; the 'add' entry is dropped. Then chroma drops the old vectors and the
     'delete' entry goes.

Recovery (kb.recovery) undoes every 'add' entry (its vectors and rows) and finishes every 'delete' entry; both are
idempotent. Every passage's vector is written here in the same transaction as its text, so reranking needs no
chroma round trip, a damaged chroma directory is rebuilt from here alone, and search still works (an exact scan)
while it cannot be.

File names that are not UTF-8 (surrogate escapes in Python) cannot be stored as SQLite text; their undecodable
bytes are kept as private-use characters U+10DC80-U+10DCFF (`to_db` / `from_db`), so they round-trip exactly.
Errors become one-line KBErrors: a full disk is DiskFull, a damaged or foreign file says so.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from kb.chunking import Chunk
from kb.diskspace import is_full
from kb.embedder import DIM
from kb.errors import DiskFull, KBError, StoreDamaged

SCHEMA_VERSION = 3
VECTOR_BYTES = DIM * 2  # fp16
TOKENIZER = "porter unicode61 remove_diacritics 2"
# A query word found in more than COMMON_TERM of all chunks (and in more than COMMON_FLOOR chunks, so small
# libraries are never pruned) is dropped from the BM25 query.
COMMON_TERM = 0.1
COMMON_FLOOR = 5000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    mode TEXT NOT NULL DEFAULT 'ingested',   -- 'ingested' or 'registered' (a ZIM searched through its own index)
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    chunks INTEGER NOT NULL DEFAULT 0,
    added REAL NOT NULL,
    state TEXT NOT NULL,                     -- 'pending' until its vectors are in chroma, then 'ready'
    notes TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS documents_path ON documents(path);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id),
    ord INTEGER NOT NULL,
    title TEXT NOT NULL,
    heading TEXT NOT NULL,
    page INTEGER,
    text TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    title, heading, text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS journal(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,   -- 'add' (undo on recovery) or 'delete' (finish on recovery)
    doc_id INTEGER,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch(ord INTEGER PRIMARY KEY, path TEXT NOT NULL, options TEXT NOT NULL DEFAULT '{}');
"""

# Upgrades of an older library, each run once in one transaction with the new user_version (a new library runs
# SCHEMA and then every step: a step's INSERT finds nothing to adopt).
MIGRATIONS = {
    # 2: every source's provenance record (kb.provenance): its bytes' sha256 and how it was taken, size and mtime
    # when added, origin, what the file itself says (facts, each with where it came from), the last verify.
    # Documents added before it are adopted with what was known: an ingested file's content hash (taken by the
    # ingest when it was added), its size; no mtime (the first check re-hashes a small file), a ZIM no sha256
    # (its identity was its UUID and size, "zim:<uuid>:<size>", registered or ingested whole: a check takes the hash).
    2: """
CREATE TABLE IF NOT EXISTS sources(
    path TEXT PRIMARY KEY,
    sha256 TEXT,                              -- the file's bytes; NULL: never hashed
    size INTEGER,
    mtime_ns INTEGER,                         -- NULL: not recorded
    hashed REAL,                              -- when the sha256 was taken
    hashed_by TEXT NOT NULL DEFAULT '',       -- 'ingest', 'registration', 'kb verify', 'the pack', 'download'
    origin TEXT NOT NULL DEFAULT '{}',        -- JSON: {"kind": "path" | "url" | "pack" | "shipped", ...}
    added REAL NOT NULL,
    facts TEXT NOT NULL DEFAULT '{}',         -- JSON: {name: {"value": ..., "from": ...}}
    verified REAL,                            -- the last `kb verify`
    verdict TEXT NOT NULL DEFAULT '',         -- what it found: ok, changed, unreadable, missing
    detail TEXT NOT NULL DEFAULT ''
);
INSERT OR IGNORE INTO sources(path, sha256, size, hashed, hashed_by, origin, added)
    SELECT path, CASE WHEN sha256 LIKE 'zim:%' THEN NULL ELSE sha256 END, size,
           CASE WHEN sha256 LIKE 'zim:%' THEN NULL ELSE added END,
           CASE WHEN sha256 LIKE 'zim:%' THEN '' ELSE 'ingest' END,
           json_object('kind', 'path', 'path', path, 'recorded', 'adopted: added before provenance was kept'),
           added
    FROM documents WHERE state = 'ready';
""",
    # 3: the titles and section headings of each registered ZIM archive, embedded once at registration (kb.zim:
    # a second candidate source beside libzim's full-text index), keyed by the archive's identity ("zim:<uuid>:
    # <size>"), so an unchanged archive registered again costs nothing and removing it removes them. An archive
    # registered before has none until it is registered again (`kb add` of it: only the headings are done).
    3: """
CREATE TABLE IF NOT EXISTS zim_headings(
    identity TEXT NOT NULL,                   -- the archive's, as documents.sha256 keeps it
    ord INTEGER NOT NULL,                     -- the entry's place in the archive's order (a resumed run goes on)
    article TEXT NOT NULL,                    -- the article's path inside the archive
    section TEXT NOT NULL,                    -- '' for the article's title, else its heading path ("title > ...")
    vector BLOB NOT NULL,                     -- fp16, of the title or "title > section"
    PRIMARY KEY(identity, ord)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zim_heading_sets(
    identity TEXT PRIMARY KEY,
    complete INTEGER NOT NULL DEFAULT 0,      -- 1 once every entry is in
    entries INTEGER NOT NULL DEFAULT 0,
    articles INTEGER NOT NULL DEFAULT 0,      -- articles read
    headed INTEGER NOT NULL DEFAULT 0,        -- of them, those whose section headings are in (the rest: titles)
    seconds REAL NOT NULL DEFAULT 0,          -- what making them took
    recipe TEXT NOT NULL DEFAULT '',          -- how the texts were made (kb.zim.HEADING_RECIPE): another is remade
    created REAL NOT NULL
);
""",
}


@dataclass
class DocRow:
    id: int
    path: str
    title: str
    kind: str
    mode: str
    sha256: str
    size: int
    chunks: int
    added: float
    state: str
    notes: str


@dataclass
class HeadingSet:
    """How far a registered archive's title and heading vectors have come (the `zim_heading_sets` row)."""

    identity: str
    complete: bool = False
    entries: int = 0
    articles: int = 0
    headed: int = 0
    seconds: float = 0.0
    recipe: str = ""


@dataclass
class SourceRow:
    """A source's provenance record (the `sources` table; kb.provenance reads and checks it)."""

    path: str
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    hashed: float | None
    hashed_by: str
    origin: dict
    added: float
    facts: dict
    verified: float | None = None
    verdict: str = ""
    detail: str = ""

    def values(self) -> tuple:
        return (to_db(self.path), self.sha256, self.size, self.mtime_ns, self.hashed, self.hashed_by,
                json.dumps(self.origin, ensure_ascii=True), self.added, json.dumps(self.facts, ensure_ascii=True),
                self.verified, self.verdict, self.detail)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


_ESCAPED = re.compile("[\udc80-\udcff]")
_KEPT = re.compile("[\U0010dc80-\U0010dcff]")


def to_db(path: str) -> str:
    """A path as SQLite text: undecodable bytes (surrogates U+DC80-U+DCFF) as U+10DC80-U+10DCFF."""
    return _ESCAPED.sub(lambda m: chr(ord(m.group()) + 0x100000), path)


def from_db(text: str) -> str:
    return _KEPT.sub(lambda m: chr(ord(m.group()) - 0x100000), text)


def _guard(method):
    """Reads and writes end in one KBError line (never a raw sqlite3 traceback); a full disk is DiskFull."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self.problem(exc) from None

    return guarded


class Store:
    """The SQLite side. One connection shared by threads, serialised by a lock."""

    def __init__(self, path: Path):
        self.path = path
        try:
            kind = os.stat(path).st_mode
        except FileNotFoundError:
            kind = None
        except OSError as exc:
            raise KBError(f"cannot open the knowledge base at {path} ({exc.strerror or exc})") from None
        if kind is not None and not stat.S_ISREG(kind):
            raise KBError(f"{path} is not a regular file; move it aside and add your files again")
        self.lock = threading.RLock()
        self._scratch = False
        try:
            self.db = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise self.problem(exc) from None
        try:
            with self.lock:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.execute("PRAGMA foreign_keys=OFF")
                self.db.execute("PRAGMA temp_store=MEMORY")  # search's scratch tables need no disk (a full one too)
                version = self.db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise KBError(f"{path} was written by a newer version of the appliance (schema {version})")
                if version < SCHEMA_VERSION:
                    steps = (SCHEMA if version < 1 else "") + "".join(
                        MIGRATIONS[step] for step in range(max(version, 1) + 1, SCHEMA_VERSION + 1))
                    try:
                        self.db.executescript("BEGIN;" + steps + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
                    except sqlite3.Error:
                        self._rollback()
                        raise
                missing = {"documents", "chunks", "chunks_fts", "journal", "batch", "meta", "sources",
                           "zim_headings", "zim_heading_sets"} - {
                    r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type IN ('table')")}
                if missing:
                    raise StoreDamaged(f"{path} is not a knowledge base (no {', '.join(sorted(missing))} table); "
                                       "move it aside and add your files again")
        except sqlite3.Error as exc:
            self.db.close()
            raise self.problem(exc) from None
        except KBError:
            self.db.close()
            raise

    def problem(self, exc: sqlite3.Error) -> KBError:
        """One line for what SQLite said: a full disk, a read-only directory, a file that is not a database."""
        text = str(exc)
        low = text.lower()
        if is_full(exc) or isinstance(exc, sqlite3.OperationalError) and "full" in low:
            return DiskFull(f"the disk is full at {self.path.parent} (SQLite: {text}); nothing was half-written")
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            return StoreDamaged(f"{self.path} is damaged or is not a knowledge base ({text}); move it aside and add "
                                "your files again")
        if "readonly" in low or "read-only" in low or not os.access(self.path.parent, os.W_OK):
            return KBError(f"cannot write to the knowledge base at {self.path.parent} (read-only: {text})")
        return KBError(f"the knowledge base at {self.path} cannot be used ({text})")

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def _rollback(self) -> None:
        # SQLite rolls back by itself on some errors (SQLITE_FULL): only roll back what is still open.
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    @contextmanager
    def _write(self):
        """One IMMEDIATE transaction under the lock: committed whole, or rolled back whole (a full disk too)."""
        with self.lock:
            try:
                cur = self.db.cursor()
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.problem(exc) from None
            try:
                yield cur
                cur.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self.problem(exc) from None
            except BaseException:
                self._rollback()
                raise

    # --- meta -------------------------------------------------------------------------------------------------
    @_guard
    def meta(self, key: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as cur:
            cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    # --- documents --------------------------------------------------------------------------------------------
    def _doc(self, row) -> DocRow:
        doc = DocRow(*row)
        doc.path = from_db(doc.path)
        return doc

    _DOC_COLUMNS = "id, path, title, kind, mode, sha256, size, chunks, added, state, notes"

    @_guard
    def ready_document(self, path: str) -> DocRow | None:
        with self.lock:
            row = self.db.execute(f"SELECT {self._DOC_COLUMNS} FROM documents WHERE path=? AND state='ready'",
                                  (to_db(path),)).fetchone()
        return self._doc(row) if row else None

    @_guard
    def documents(self, mode: str | None = None) -> list[DocRow]:
        sql = f"SELECT {self._DOC_COLUMNS} FROM documents WHERE state='ready'"
        args: tuple = ()
        if mode:
            sql += " AND mode=?"
            args = (mode,)
        with self.lock:
            return [self._doc(r) for r in self.db.execute(sql + " ORDER BY path", args)]

    @_guard
    def documents_under(self, path: str) -> list[DocRow]:
        key = to_db(path)
        prefix = key.rstrip(os.sep) + os.sep
        with self.lock:
            rows = self.db.execute(
                f"SELECT {self._DOC_COLUMNS} FROM documents WHERE state='ready' AND (path=? OR substr(path, 1, ?)=?)",
                (key, len(prefix), prefix)).fetchall()
        return [self._doc(r) for r in rows]

    @_guard
    def counts(self) -> dict[str, int]:
        with self.lock:
            documents, chunks = self.db.execute(
                "SELECT count(*), coalesce(sum(chunks), 0) FROM documents WHERE state='ready'").fetchone()
            zims = self.db.execute("SELECT count(*) FROM documents WHERE state='ready' AND kind='zim'").fetchone()[0]
        return {"documents": documents, "chunks": chunks, "zims": zims}

    # --- the three steps of a write ---------------------------------------------------------------------------
    def begin_document(self, path: str, title: str, kind: str, sha256: str, size: int, chunks: list[Chunk],
                       vectors: np.ndarray, mode: str = "ingested", notes: str = "") -> tuple[int, list[int]]:
        """Step 1: pending document + chunks (text and fp16 vector) + FTS rows + journal 'add', in one transaction."""
        if len(chunks) != len(vectors):
            raise KBError(f"{len(chunks)} passages but {len(vectors)} vectors; nothing written")
        with self._write() as cur:
            cur.execute(
                "INSERT INTO documents(path, title, kind, mode, sha256, size, chunks, added, state, notes) "
                "VALUES(?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                (to_db(path), title, kind, mode, sha256, size, len(chunks), time.time(), notes))
            doc_id = cur.lastrowid
            ids: list[int] = []
            blobs = vectors.astype(np.float16)
            for ordinal, (chunk, vector) in enumerate(zip(chunks, blobs, strict=True)):
                heading = chunk.heading_text
                cur.execute(
                    "INSERT INTO chunks(doc_id, ord, title, heading, page, text, vector) VALUES(?,?,?,?,?,?,?)",
                    (doc_id, ordinal, title, heading, chunk.page, chunk.text, vector.tobytes()))
                ids.append(cur.lastrowid)
                cur.execute("INSERT INTO chunks_fts(rowid, title, heading, text) VALUES(?, ?, ?, ?)",
                            (cur.lastrowid, title, heading, chunk.text))
            if ids:
                cur.execute("INSERT INTO journal(action, doc_id, lo, hi, created) VALUES('add', ?, ?, ?, ?)",
                            (doc_id, ids[0], ids[-1], time.time()))
        return doc_id, ids

    def finish_document(self, doc_id: int, replaces: DocRow | None,
                        source: SourceRow | None = None) -> list[tuple[int, int, int]]:
        """Step 3: make the new version visible, delete the old one, write its provenance record (`source`) in the
        same transaction; returns the journaled id ranges to drop."""
        with self._write() as cur:
            ranges = self._delete_rows(cur, replaces.id) if replaces else []
            if replaces:
                self._drop_orphan_headings(cur)  # an archive's older version: its headings go with it
            cur.execute("UPDATE documents SET state='ready' WHERE id=?", (doc_id,))
            cur.execute("DELETE FROM journal WHERE action='add' AND doc_id=?", (doc_id,))
            if source is not None:
                cur.execute(f"INSERT OR REPLACE INTO sources({self._SOURCE_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                            source.values())
        return ranges

    def delete_document(self, doc_id: int) -> list[tuple[int, int, int]]:
        """A document removed (`kb remove`): its rows, and its provenance record unless another version of the
        same path is still there."""
        with self._write() as cur:
            row = cur.execute("SELECT path FROM documents WHERE id=?", (doc_id,)).fetchone()
            ranges = self._delete_rows(cur, doc_id)
            if row is not None:
                cur.execute("DELETE FROM sources WHERE path=? AND NOT EXISTS (SELECT 1 FROM documents WHERE path=?)",
                            (row[0], row[0]))
            self._drop_orphan_headings(cur)
        return ranges

    # --- a registered archive's title and heading vectors (kb.zim) -------------------------------------------
    @_guard
    def heading_set(self, identity: str) -> HeadingSet | None:
        with self.lock:
            row = self.db.execute("SELECT complete, entries, articles, headed, seconds, recipe FROM zim_heading_sets "
                                  "WHERE identity=?", (identity,)).fetchone()
        return HeadingSet(identity, bool(row[0]), *row[1:]) if row else None

    def add_headings(self, identity: str, start: int, entries: list[tuple[str, str]], vectors: np.ndarray,
                     progress: HeadingSet) -> None:
        """Entries `start`, `start + 1`, ... (article, section) with their vectors (stored fp16), and how far the
        set has come, in one transaction: an interrupted registration goes on from there."""
        if len(entries) != len(vectors):
            raise KBError(f"{len(entries)} headings but {len(vectors)} vectors; nothing written")
        blobs = vectors.astype(np.float16)
        with self._write() as cur:
            cur.executemany("INSERT OR REPLACE INTO zim_headings(identity, ord, article, section, vector) "
                            "VALUES(?, ?, ?, ?, ?)",
                            [(identity, start + n, article, section, blob.tobytes())
                             for n, ((article, section), blob) in enumerate(zip(entries, blobs, strict=True))])
            cur.execute("INSERT OR REPLACE INTO zim_heading_sets(identity, complete, entries, articles, headed, "
                        "seconds, recipe, created) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                        (identity, int(progress.complete), progress.entries, progress.articles, progress.headed,
                         progress.seconds, progress.recipe, time.time()))

    @_guard
    def headings(self, identity: str) -> tuple[list[str], list[str], np.ndarray]:
        """(article paths, sections, fp16 matrix) of an archive's entries, in their order, read 4,096 rows at a time
        into the matrix (never all the rows' bytes at once beside it)."""
        articles: list[str] = []
        sections: list[str] = []
        with self.lock:
            total = self.db.execute("SELECT count(*) FROM zim_headings WHERE identity=? AND length(vector)=?",
                                    (identity, VECTOR_BYTES)).fetchone()[0]
            matrix = np.empty((total, DIM), dtype=np.float16)
            cursor = self.db.execute("SELECT article, section, vector FROM zim_headings WHERE identity=? AND "
                                     "length(vector)=? ORDER BY ord", (identity, VECTOR_BYTES))
            while len(articles) < total:
                rows = cursor.fetchmany(4096)
                if not rows:
                    break
                start = len(articles)
                matrix[start:start + len(rows)] = np.frombuffer(b"".join(r[2] for r in rows),
                                                                dtype=np.float16).reshape(len(rows), DIM)
                articles += [r[0] for r in rows]
                sections += [r[1] for r in rows]
        return articles, sections, matrix[:len(articles)]

    @_guard
    def heading_count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT count(*) FROM zim_heading_sets").fetchone()[0]

    def drop_orphan_headings(self, keep: str = "") -> None:
        """Heading rows of archives no document is (a cancelled first registration, an archive replaced by
        another version), except `keep`'s (the one being registered now)."""
        with self._write() as cur:
            self._drop_orphan_headings(cur, keep)

    def drop_headings(self, identity: str) -> None:
        with self._write() as cur:
            self._delete_headings(cur, identity)

    @staticmethod
    def _delete_headings(cur, identity: str) -> None:
        cur.execute("DELETE FROM zim_headings WHERE identity=?", (identity,))
        cur.execute("DELETE FROM zim_heading_sets WHERE identity=?", (identity,))

    @classmethod
    def _drop_orphan_headings(cls, cur, keep: str = "") -> None:
        # Every heading row is written with its set's row (add_headings), so the sets name them all.
        orphans = [r[0] for r in cur.execute(
            "SELECT identity FROM zim_heading_sets WHERE identity != ? AND identity NOT IN "
            "(SELECT sha256 FROM documents)", (keep,))]
        for identity in orphans:
            cls._delete_headings(cur, identity)

    # --- provenance records -----------------------------------------------------------------------------------
    _SOURCE_COLUMNS = ("path, sha256, size, mtime_ns, hashed, hashed_by, origin, added, facts, verified, verdict, "
                       "detail")

    def _source(self, row) -> SourceRow:
        return SourceRow(from_db(row[0]), row[1], row[2], row[3], row[4], row[5], _json_object(row[6]), row[7],
                         _json_object(row[8]), row[9], row[10], row[11])

    @_guard
    def source(self, path: str) -> SourceRow | None:
        with self.lock:
            row = self.db.execute(f"SELECT {self._SOURCE_COLUMNS} FROM sources WHERE path=?",
                                  (to_db(path),)).fetchone()
        return self._source(row) if row else None

    @_guard
    def sources(self) -> dict[str, SourceRow]:
        with self.lock:
            rows = self.db.execute(f"SELECT {self._SOURCE_COLUMNS} FROM sources").fetchall()
        return {record.path: record for record in map(self._source, rows)}

    def put_source(self, source: SourceRow) -> None:
        """Write (or replace) one provenance record: a verify's finding, a hash taken, a refreshed mtime."""
        with self._write() as cur:
            cur.execute(f"INSERT OR REPLACE INTO sources({self._SOURCE_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                        source.values())

    def _delete_rows(self, cur, doc_id: int) -> list[tuple[int, int, int]]:
        """Delete a document's rows inside the caller's transaction; journal its vector ids for deletion."""
        lo, hi = cur.execute("SELECT min(id), max(id) FROM chunks WHERE doc_id=?", (doc_id,)).fetchone()
        cur.execute("INSERT INTO chunks_fts(chunks_fts, rowid, title, heading, text) "
                    "SELECT 'delete', id, title, heading, text FROM chunks WHERE doc_id=?", (doc_id,))
        cur.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        cur.execute("DELETE FROM documents WHERE id=?", (doc_id,))
        if lo is None:
            return []
        cur.execute("INSERT INTO journal(action, doc_id, lo, hi, created) VALUES('delete', ?, ?, ?, ?)",
                    (doc_id, lo, hi, time.time()))
        return [(cur.lastrowid, lo, hi)]

    @_guard
    def journal(self) -> list[tuple[int, str, int | None, int, int]]:
        with self.lock:
            return self.db.execute("SELECT id, action, doc_id, lo, hi FROM journal ORDER BY id").fetchall()

    def drop_journal(self, entry_id: int) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM journal WHERE id=?", (entry_id,))

    def undo_add(self, entry_id: int, doc_id: int | None) -> None:
        """Recovery of an interrupted step 1-2: the pending document's rows go (its vectors went first)."""
        with self._write() as cur:
            state = cur.execute("SELECT state FROM documents WHERE id=?", (doc_id,)).fetchone()
            if doc_id is not None and state and state[0] == "pending":
                self._delete_rows(cur, doc_id)
                cur.execute("DELETE FROM journal WHERE action='delete' AND doc_id=?", (doc_id,))
            cur.execute("DELETE FROM journal WHERE id=?", (entry_id,))

    def drop_pending_without_chunks(self) -> None:
        """Pending rows with no journal entry (a registration or an empty document killed mid-write)."""
        with self._write() as cur:
            cur.execute("DELETE FROM documents WHERE state='pending' AND id NOT IN "
                        "(SELECT doc_id FROM journal WHERE doc_id IS NOT NULL)")

    # --- the interrupted batch (so `kb add` with no path resumes it) ------------------------------------------
    def set_batch(self, paths: list[str], options: dict) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM batch")
            cur.executemany("INSERT INTO batch(ord, path, options) VALUES(?, ?, ?)",
                            [(i, to_db(p), json.dumps(options)) for i, p in enumerate(paths)])

    def batch_done(self, path: str) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM batch WHERE path=?", (to_db(path),))

    @_guard
    def pending_batch(self) -> tuple[list[str], dict]:
        with self.lock:
            rows = self.db.execute("SELECT path, options FROM batch ORDER BY ord").fetchall()
        return [from_db(r[0]) for r in rows], (json.loads(rows[0][1]) if rows else {})

    def clear_batch(self) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM batch")

    # --- reads for search -------------------------------------------------------------------------------------
    @_guard
    def lexical(self, words: list[str], limit: int, common: float = COMMON_TERM) -> list[int]:
        """Chunk ids by BM25 for an OR of `words` (heading matches count double).

        Words in more than `common` of all chunks (and more than COMMON_FLOOR) are dropped first: their IDF is near
        zero, and on 100k chunks their posting lists cost most of the time. The two rarest always stay. Words are
        stemmed by SQLite's own porter tokenizer (a scratch FTS5 table in memory), so the document frequencies are
        exactly the index's.
        """
        if not words:
            return []
        with self.lock:
            if not self._scratch:
                self.db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.kb_query USING fts5(w, tokenize='"
                                + TOKENIZER + "')")
                self.db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.kb_query_terms USING "
                                "fts5vocab(temp, kb_query, instance)")
                self.db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.kb_vocab USING fts5vocab(main, chunks_fts, "
                                "row)")
                self._scratch = True
            self.db.execute("DELETE FROM temp.kb_query")
            self.db.executemany("INSERT INTO temp.kb_query(rowid, w) VALUES(?, ?)", list(enumerate(words)))
            stems: dict[str, int] = {}
            word_stem: dict[int, str] = {}
            for index, term in self.db.execute("SELECT doc, term FROM temp.kb_query_terms ORDER BY doc"):
                word_stem.setdefault(index, term)
                if term not in stems:
                    row = self.db.execute("SELECT doc FROM temp.kb_vocab WHERE term=?", (term,)).fetchone()
                    stems[term] = row[0] if row else 0
            total = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0] or 1
            present = sorted((df, term) for term, df in stems.items() if df > 0)
            kept = {term for df, term in present if df <= max(common * total, COMMON_FLOOR)}
            if len(kept) < 2:
                kept = {term for _, term in present[:2]}
            chosen = [words[i] for i, term in sorted(word_stem.items()) if term in kept]
            if not chosen:
                return []
            match = " OR ".join('"' + word.replace('"', "") + '"' for word in chosen)
            rows = self.db.execute(
                "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts, 1.0, 2.0, 1.0) "
                "LIMIT ?", (match, limit)).fetchall()
        return [r[0] for r in rows]

    @_guard
    def chunk_rows(self, ids: Iterable[int]) -> dict[int, tuple]:
        """id -> (path, title, heading, page, text, vector, kind) for chunks of ready documents."""
        ids = list(ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self.lock:
            rows = self.db.execute(
                f"SELECT c.id, d.path, c.title, c.heading, c.page, c.text, c.vector, d.kind FROM chunks c "
                f"JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks}) AND d.state='ready' "
                f"AND length(c.vector)={VECTOR_BYTES}", ids).fetchall()
        return {r[0]: (from_db(r[1]),) + tuple(r[2:]) for r in rows}

    def all_vectors(self, batch: int = 5000) -> Iterable[tuple[list[int], np.ndarray]]:
        """(chunk ids, fp16 vectors) of every ready passage, in id order, `batch` at a time."""
        last = 0
        while True:
            try:
                with self.lock:
                    rows = self.db.execute(
                        "SELECT c.id, c.vector FROM chunks c JOIN documents d ON d.id=c.doc_id "
                        "WHERE d.state='ready' AND c.id > ? AND length(c.vector)=? ORDER BY c.id LIMIT ?",
                        (last, VECTOR_BYTES, batch)).fetchall()
            except sqlite3.Error as exc:
                raise self.problem(exc) from None
            if not rows:
                return
            last = rows[-1][0]
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), DIM)
            yield [r[0] for r in rows], matrix

    def nearest(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """The n ready passages nearest to `vector` by an exact scan of the vectors kept here (a small library's
        search, and the fallback while the vector index cannot be used: linear in the library's size, never
        wrong), 4,096 at a time."""
        best_ids = np.zeros(0, dtype=np.int64)
        best = np.zeros(0, dtype=np.float32)
        query = vector.astype(np.float32)
        for ids, matrix in self.all_vectors(batch=4096):
            scores = matrix.astype(np.float32) @ query
            best_ids = np.concatenate([best_ids, np.asarray(ids, dtype=np.int64)])
            best = np.concatenate([best, scores])
            if len(best) > n:
                keep = np.argpartition(-best, n)[:n]
                best_ids, best = best_ids[keep], best[keep]
        order = np.argsort(-best)
        return [(int(best_ids[i]), float(best[i])) for i in order]

    @_guard
    def ready_chunk_ids(self) -> set[int]:
        with self.lock:
            return {r[0] for r in self.db.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id=c.doc_id WHERE d.state='ready'")}

    @_guard
    def ready_chunk_count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT count(*) FROM chunks c JOIN documents d ON d.id=c.doc_id "
                                   "WHERE d.state='ready'").fetchone()[0]

    @_guard
    def bad_vectors(self) -> int:
        """Passages whose stored vector is missing or not DIM fp16 values (they cannot be rebuilt into an index)."""
        with self.lock:
            return self.db.execute("SELECT count(*) FROM chunks WHERE vector IS NULL OR length(vector) != ?",
                                   (VECTOR_BYTES,)).fetchone()[0]

    @_guard
    def all_chunk_ids(self) -> set[int]:
        with self.lock:
            return {r[0] for r in self.db.execute("SELECT id FROM chunks")}

    @_guard
    def fts_ids(self) -> set[int]:
        with self.lock:
            return {r[0] for r in self.db.execute("SELECT rowid FROM chunks_fts")}

    @_guard
    def quick_check(self) -> str:
        """SQLite's own structural check: "ok", or what it found."""
        with self.lock:
            rows = self.db.execute("PRAGMA quick_check").fetchall()
        return "; ".join(r[0] for r in rows[:5])
