"""Texts -> normalised vectors through a cache: in memory for the process, and in a SQLite file across runs, so a
text costs its embedding once. The appliance's quotes and claims use it for sentences
(appliance/answering/evidence.py), the ZIM search for the sections it reranks (kb/zim.py). Only a cache: a file
that cannot be opened or written (a full disk, a read-only drive) just means embedding again.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # imported when vectors are first asked for: a question without the library never needs numpy
    import numpy as np

Embed = Callable[[list[str]], "np.ndarray"]


class VectorCache:
    """`embed` behind an LRU in memory and a SQLite file (fp16, keyed by the text's hash; the caller names the file
    after the embedder's identity)."""

    MEMORY = 20_000  # vectors kept in memory by default (1.5 KB each)
    DISK = 200_000  # rows kept on disk by default (784 bytes each: about 160 MB); the oldest go first

    def __init__(self, embed: Embed, path: Path | None = None, memory: int = MEMORY, disk: int = DISK):
        self.embed = embed
        self.path = path
        self.memory, self.disk = memory, disk
        self._memory: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._db_failed = path is None

    def _open(self) -> sqlite3.Connection | None:
        if self._db is None and not self._db_failed and self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=2)
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
                self._db = db
            except (OSError, sqlite3.Error):
                self._db_failed = True
        return self._db

    def __call__(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        keys = [hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest() for text in texts]
        with self._lock:
            found = {key: self._memory[key] for key in keys if key in self._memory}
            wanted = [key for key in dict.fromkeys(keys) if key not in found]
            db = self._open() if wanted else None
            if db is not None:
                try:
                    for start in range(0, len(wanted), 500):
                        part = wanted[start:start + 500]
                        rows = db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(part))})",
                                          part).fetchall()
                        found.update((key, np.frombuffer(blob, dtype=np.float16).astype(np.float32))
                                     for key, blob in rows)
                except sqlite3.Error:
                    pass
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in found}
        if missing:
            # Through fp16 as they are kept: a text gets the same vector whether it was embedded now or read back.
            vectors = np.asarray(self.embed(list(missing.values())), dtype=np.float16).astype(np.float32)
            fresh = dict(zip(missing, vectors, strict=True))
            found.update(fresh)
            self._store(fresh)
        with self._lock:
            for key in keys:
                self._memory[key] = found[key]
                self._memory.move_to_end(key)
            while len(self._memory) > self.memory:
                self._memory.popitem(last=False)
        return np.stack([found[key] for key in keys]) if keys else np.zeros((0, 0), dtype=np.float32)

    def _store(self, fresh: dict[bytes, np.ndarray]) -> None:
        import numpy as np

        with self._lock:
            db = self._open()
            if db is None:
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)",
                               [(key, np.asarray(vector, dtype=np.float16).tobytes()) for key, vector in fresh.items()])
                excess = db.execute("SELECT count(*) FROM vectors").fetchone()[0] - self.disk
                if excess > 0:
                    db.execute("DELETE FROM vectors WHERE rowid IN (SELECT rowid FROM vectors ORDER BY rowid LIMIT ?)",
                               (excess,))
                db.execute("COMMIT")
            except sqlite3.Error:
                if db.in_transaction:
                    db.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __len__(self) -> int:
        """Vectors held in memory."""
        with self._lock:
            return len(self._memory)

    def clear(self, disk: bool = False) -> None:
        """Forget the vectors in memory, and with `disk` the file's too (a removed archive, a benchmark's cold run)."""
        with self._lock:
            self._memory.clear()
            db = self._open() if disk else None
            if db is not None:
                try:
                    db.execute("DELETE FROM vectors")
                except sqlite3.Error:
                    pass
