"""Conversations and answers in SQLite, on this machine only. Migrations are keyed on PRAGMA user_version (a step
is SQL, or a function run inside the step's transaction). Every exchange and every deletion is also appended to
the answer log's hash chain (appliance.records.answer_log) in the same transaction."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from appliance.errors import ApplianceError
from appliance.records import answer_log
from kb.source import Source

MIGRATIONS: list[str | Callable[[sqlite3.Connection], object]] = [
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        model TEXT,
        sources TEXT,
        timings TEXT,
        created REAL NOT NULL
    );
    CREATE INDEX messages_conversation ON messages(conversation_id, id);
    """,
    # 2: an answer's quotes from the library, its claims checked against the passages, why it stopped early
    """
    ALTER TABLE messages ADD COLUMN details TEXT;
    """,
    # 3: the answer log (hash chain); the exchanges already here are adopted into it, nothing changed or dropped
    answer_log.migrate,
    # 4: which served device asked (shelter mode); NULL for the laptop's own questions
    """
    ALTER TABLE conversations ADD COLUMN device TEXT;
    """,
]


def _disk_full(path: Path) -> bool:
    """Whether the file system holding `path` has (next to) no room left: SQLite says only "disk I/O error"."""
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 256 * 1024


class History:
    """One SQLite connection shared by the threads of a process (the TUI's workers and its UI thread): every use
    goes through `self._lock`; every change is one transaction (`_write`)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._read_only_reason: ApplianceError | None = None  # set when only reading is possible (a full disk)

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, opened on first use: an answer is given even when the history cannot be opened (a full
        disk, a damaged file); only saving it fails, with one line."""
        with self._lock:
            if self._db is None:
                self._db = self._connect()
            return self._db

    def _connect(self) -> sqlite3.Connection:
        db = None
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA journal_mode = WAL")
            self._migrate(db)
            return db
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            if _disk_full(self.path):
                return self._read_only()
            raise ApplianceError(f"history database {self.path} cannot be used ({exc}); move it aside and the next "
                                 "question starts a new one") from None

    def _read_only(self) -> sqlite3.Connection:
        """A full disk: the history can still be read (SQLite cannot even create its WAL index file), not written."""
        full = ApplianceError(f"history database {self.path} cannot be written: the disk is full; free some space")
        if not self.path.is_file():
            raise full
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True, check_same_thread=False,
                                 isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError:
            raise full from None
        self._read_only_reason = full
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise ApplianceError(f"{self.path} was written by a newer appliance (version {version})")
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            if isinstance(step, str):
                with db:
                    db.executescript(f"BEGIN; {step} PRAGMA user_version = {number}; COMMIT;")
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                step(db)
                db.execute(f"PRAGMA user_version = {number}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _write(self):
        """One transaction under the lock: all of it is saved, or none of it."""
        with self._lock:
            _ = self.db  # opens it, and learns whether it can be written
            if self._read_only_reason is not None:
                raise self._read_only_reason
            try:
                self.db.execute("BEGIN IMMEDIATE")
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.db.execute(sql, params).fetchall()

    def record_exchange(self, question: str, result: dict[str, Any], conversation_id: int | None = None,
                        device: str | None = None) -> int:
        """Save one question and its answer (the `as_dict()` of an AnswerRun) in one transaction: a new
        conversation when `conversation_id` is None. `device`: the served device that asked; a conversation
        belongs to one device (or to the laptop: None), and another cannot add to it. Returns the conversation id."""
        now = time.time()
        with self._write() as db:
            if conversation_id is None:
                cursor = db.execute("INSERT INTO conversations (title, created, updated, device) VALUES (?, ?, ?, ?)",
                                    (question[:200] or "Untitled", now, now, device))
                conversation_id = int(cursor.lastrowid)
            else:
                row = db.execute("SELECT device FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
                if row is None or (device is not None and row["device"] != device):
                    raise ApplianceError(f"no conversation {conversation_id}; see `appliance history list`")
            insert = ("INSERT INTO messages (conversation_id, role, content, model, sources, timings, created) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)")
            question_id = db.execute(insert, (conversation_id, "user", question, None, "[]", "{}", now)).lastrowid
            cursor = db.execute(insert, (conversation_id, "assistant", result.get("answer", ""),
                                         (result.get("model") or {}).get("name"),
                                         json.dumps(result.get("sources") or []),
                                         json.dumps(result.get("timings") or {}), now))
            details = {key: result[key] for key in ("quotes", "claims", "stopped") if result.get(key)}
            if details:
                db.execute("UPDATE messages SET details = ? WHERE id = ?", (json.dumps(details), cursor.lastrowid))
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
            answer_log.append_exchange(db, conversation_id, int(question_id), int(cursor.lastrowid),
                                       answer_log.record_for(question, result, now))
        return conversation_id

    def _has_device(self) -> bool:
        """Whether conversations has its device column (migration 4): not in an old history opened read-only."""
        rows = self._read("SELECT name FROM pragma_table_info('conversations')")
        return any(row["name"] == "device" for row in rows)

    def latest(self) -> int | None:
        """The most recently updated conversation, for `appliance ask --continue`."""
        rows = self._read("SELECT id FROM conversations ORDER BY updated DESC, id DESC LIMIT 1")
        return int(rows[0]["id"]) if rows else None

    def conversations(self, limit: int = 100, device: str | None = None) -> list[dict[str, Any]]:
        """The most recent conversations (the owner: all of them, with the device that asked); `device`: only
        that served device's own."""
        if not self._has_device():  # a history from before migration 4, read-only on a full disk
            if device is not None:
                return []
            device_column = "NULL AS device"
        else:
            device_column = "c.device"
        where, params = ("WHERE c.device = ? ", (device, limit)) if device is not None else ("", (limit,))
        rows = self._read(
            f"SELECT c.id, c.title, c.created, c.updated, {device_column}, COUNT(m.id) AS messages "
            f"FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id {where}GROUP BY c.id "
            "ORDER BY c.updated DESC, c.id DESC LIMIT ?",
            params,
        )
        return [dict(row) for row in rows]

    def conversation(self, conversation_id: int, device: str | None = None) -> dict[str, Any] | None:
        """One conversation; with `device`, only when that served device asked it (else None, as if absent)."""
        device_column = "device" if self._has_device() else "NULL AS device"
        rows = self._read(f"SELECT id, title, created, updated, {device_column} FROM conversations WHERE id = ?",
                          (conversation_id,))
        if not rows or (device is not None and rows[0]["device"] != device):
            return None
        return dict(rows[0])

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        title = " ".join(title.split())[:200]
        if not title:
            raise ApplianceError("a conversation title cannot be empty")
        with self._write() as db:
            cursor = db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))
        if cursor.rowcount == 0:
            raise ApplianceError(f"no conversation {conversation_id}")

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation and its messages (ON DELETE CASCADE); the answer log gets an entry saying so."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is None:
                raise ApplianceError(f"no conversation {conversation_id}")
            answer_log.append_deletion(db, conversation_id)
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def _log_db(self) -> sqlite3.Connection:
        """The connection, once the answer log exists in it. A history from before the log, opened read-only (a
        full disk), could not be migrated: say so instead of failing on the missing table."""
        db = self.db
        if self._read_only_reason is not None and not db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'answer_log'").fetchone():
            raise ApplianceError(f"history database {self.path} has no answer log yet, and it cannot be added while "
                                 "the disk is full; free some space and run this again")
        return db

    def verify_log(self) -> answer_log.Report:
        """Walk the answer log's chain and check every kept exchange against it
        (appliance.records.answer_log.verify)."""
        with self._lock:
            return answer_log.verify(self._log_db())

    def logged_exchange(self, answer_id: int) -> tuple[int, str, dict[str, Any], dict[str, Any]] | None:
        """(entry number, entry hash, entry, record) of the answer with message id `answer_id`, if logged."""
        with self._lock:
            return answer_log.exchange_for(self._log_db(), answer_id)

    def log_entry_with_hash(self, entry_hash: str) -> int | None:
        """The number of the answer log's entry with this hash, if this history holds it."""
        with self._lock:
            rows = self._log_db().execute("SELECT seq FROM answer_log WHERE hash = ?", (entry_hash,)).fetchall()
        return int(rows[0]["seq"]) if rows else None

    def message_role(self, message_id: int) -> str | None:
        rows = self._read("SELECT role FROM messages WHERE id = ?", (message_id,))
        return rows[0]["role"] if rows else None

    def chat_messages(self, conversation_id: int, last: int = 6) -> list[dict[str, str]]:
        """The last `last` messages as {"role", "content"} dicts: the earlier turns a Conversation shows the model."""
        rows = self._read(
            "SELECT role, content FROM (SELECT id, role, content FROM messages WHERE conversation_id = ? "
            "ORDER BY id DESC LIMIT ?) ORDER BY id",
            (conversation_id, last),
        )
        return [{"role": row["role"], "content": row["content"]} for row in rows if row["content"]]

    def messages(self, conversation_id: int) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT id, role, content, model, sources, timings, details, created FROM messages "
            "WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        )
        result = []
        for row in rows:
            item = dict(row)
            item["sources"] = json.loads(item["sources"] or "[]")
            item["timings"] = json.loads(item["timings"] or "{}")
            item["details"] = json.loads(item["details"] or "{}")
            result.append(item)
        return result

    def export_markdown(self, conversation_id: int) -> str:
        conversation = self.conversation(conversation_id)
        if conversation is None:
            raise ApplianceError(f"no conversation {conversation_id}")
        lines = [f"# {conversation['title']}", ""]
        for message in self.messages(conversation_id):
            lines += [f"**{'You' if message['role'] == 'user' else 'Appliance'}:**", ""]
            for quote in message["details"].get("quotes") or []:
                lines.append(f"> {quote.get('text')} [{quote.get('number')}]")
            if message["details"].get("quotes"):
                lines.append("")
            lines += [message["content"], ""]
            unsupported = [c["sentence"] for c in message["details"].get("claims") or [] if not c.get("supported")]
            if unsupported:
                lines += ["*Not found in your library:*", *[f"- {s}" for s in unsupported], ""]
            for source in message["sources"]:
                lines.append(f"- {Source.from_dict(source).cite()}")
            if message["sources"]:
                lines.append("")
        return "\n".join(lines)
