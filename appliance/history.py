"""Conversations and answers in SQLite, on this machine only. Migrations are keyed on PRAGMA user_version."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from kb.source import Source

MIGRATIONS = [
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
]


class History:
    """One SQLite connection shared by the threads of a process (the TUI's workers and its UI thread): every use
    goes through `self._lock`; every change is one transaction (`_write`)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        try:
            self.db = sqlite3.connect(path, check_same_thread=False, timeout=10, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA journal_mode = WAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ApplianceError(f"history database {path} cannot be used ({exc}); move it aside and the next "
                                 "question starts a new one") from None

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise ApplianceError(f"{self.path} was written by a newer appliance (version {version})")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.db:
                self.db.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextmanager
    def _write(self):
        """One transaction under the lock: all of it is saved, or none of it."""
        with self._lock:
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

    def record_exchange(self, question: str, result: dict[str, Any], conversation_id: int | None = None) -> int:
        """Save one question and its answer (the `as_dict()` of an AnswerRun) in one transaction: a new
        conversation when `conversation_id` is None. Returns the conversation id."""
        now = time.time()
        with self._write() as db:
            if conversation_id is None:
                cursor = db.execute("INSERT INTO conversations (title, created, updated) VALUES (?, ?, ?)",
                                    (question[:200] or "Untitled", now, now))
                conversation_id = int(cursor.lastrowid)
            elif db.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is None:
                raise ApplianceError(f"no conversation {conversation_id}; see `appliance history list`")
            insert = ("INSERT INTO messages (conversation_id, role, content, model, sources, timings, created) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)")
            db.execute(insert, (conversation_id, "user", question, None, "[]", "{}", now))
            cursor = db.execute(insert, (conversation_id, "assistant", result.get("answer", ""),
                                         (result.get("model") or {}).get("name"),
                                         json.dumps(result.get("sources") or []),
                                         json.dumps(result.get("timings") or {}), now))
            details = {key: result[key] for key in ("quotes", "claims", "stopped") if result.get(key)}
            if details:
                db.execute("UPDATE messages SET details = ? WHERE id = ?", (json.dumps(details), cursor.lastrowid))
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
        return conversation_id

    def latest(self) -> int | None:
        """The most recently updated conversation, for `appliance ask --continue`."""
        rows = self._read("SELECT id FROM conversations ORDER BY updated DESC, id DESC LIMIT 1")
        return int(rows[0]["id"]) if rows else None

    def conversations(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT c.id, c.title, c.created, c.updated, COUNT(m.id) AS messages FROM conversations c "
            "LEFT JOIN messages m ON m.conversation_id = c.id GROUP BY c.id ORDER BY c.updated DESC, c.id DESC LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    def conversation(self, conversation_id: int) -> dict[str, Any] | None:
        rows = self._read("SELECT id, title, created, updated FROM conversations WHERE id = ?", (conversation_id,))
        return dict(rows[0]) if rows else None

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        title = " ".join(title.split())[:200]
        if not title:
            raise ApplianceError("a conversation title cannot be empty")
        with self._write() as db:
            cursor = db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))
        if cursor.rowcount == 0:
            raise ApplianceError(f"no conversation {conversation_id}")

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation and its messages (ON DELETE CASCADE)."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        if cursor.rowcount == 0:
            raise ApplianceError(f"no conversation {conversation_id}")

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
            "SELECT id, role, content, model, sources, timings, details, created FROM messages WHERE conversation_id = ? "
            "ORDER BY id",
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
