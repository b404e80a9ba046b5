"""Conversations and answers in SQLite, on this machine only. Migrations are keyed on PRAGMA user_version."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError

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
]


class History:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.db = sqlite3.connect(path, check_same_thread=False, timeout=10)
        except sqlite3.Error as exc:
            raise ApplianceError(f"history database {path} cannot be opened ({exc})") from None
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.execute("PRAGMA journal_mode = WAL")
        self._migrate()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise ApplianceError(f"{self.path} was written by a newer appliance (version {version})")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.db:
                self.db.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")

    def close(self) -> None:
        self.db.close()

    def new_conversation(self, title: str) -> int:
        now = time.time()
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO conversations (title, created, updated) VALUES (?, ?, ?)", (title[:200] or "Untitled", now, now)
            )
        return int(cursor.lastrowid)

    def add_message(self, conversation_id: int, role: str, content: str, *, model: str | None = None,
                    sources: list[dict] | None = None, timings: dict | None = None) -> int:
        now = time.time()
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO messages (conversation_id, role, content, model, sources, timings, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, model, json.dumps(sources or []), json.dumps(timings or {}), now),
            )
            self.db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
        return int(cursor.lastrowid)

    def record_exchange(self, question: str, result: dict[str, Any], conversation_id: int | None = None) -> int:
        """Save one question and its answer (the `as_dict()` of an AnswerRun); returns the conversation id."""
        if conversation_id is None:
            conversation_id = self.new_conversation(question)
        self.add_message(conversation_id, "user", question)
        self.add_message(conversation_id, "assistant", result.get("answer", ""), model=result.get("model", {}).get("name"),
                         sources=result.get("sources"), timings=result.get("timings"))
        return conversation_id

    def conversations(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT c.id, c.title, c.created, c.updated, COUNT(m.id) AS messages FROM conversations c "
            "LEFT JOIN messages m ON m.conversation_id = c.id GROUP BY c.id ORDER BY c.updated DESC, c.id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [dict(row) for row in rows]

    def conversation(self, conversation_id: int) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT id, title, created, updated FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return dict(row) if row else None

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        title = " ".join(title.split())[:200]
        if not title:
            raise ApplianceError("a conversation title cannot be empty")
        with self.db:
            cursor = self.db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))
        if cursor.rowcount == 0:
            raise ApplianceError(f"no conversation {conversation_id}")

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation and its messages (ON DELETE CASCADE)."""
        with self.db:
            cursor = self.db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        if cursor.rowcount == 0:
            raise ApplianceError(f"no conversation {conversation_id}")

    def chat_messages(self, conversation_id: int, last: int = 6) -> list[dict[str, str]]:
        """The last `last` messages as {"role", "content"} dicts, ready to pass as `Answerer.ask(history=...)`."""
        rows = self.db.execute(
            "SELECT role, content FROM (SELECT id, role, content FROM messages WHERE conversation_id = ? "
            "ORDER BY id DESC LIMIT ?) ORDER BY id",
            (conversation_id, last),
        ).fetchall()
        return [{"role": row["role"], "content": row["content"]} for row in rows if row["content"]]

    def messages(self, conversation_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, role, content, model, sources, timings, created FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        ).fetchall()
        result = []
        for row in rows:
            item = dict(row)
            item["sources"] = json.loads(item["sources"] or "[]")
            item["timings"] = json.loads(item["timings"] or "{}")
            result.append(item)
        return result

    def export_markdown(self, conversation_id: int) -> str:
        row = self.db.execute("SELECT title FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise ApplianceError(f"no conversation {conversation_id}")
        lines = [f"# {row['title']}", ""]
        for message in self.messages(conversation_id):
            lines += [f"**{'You' if message['role'] == 'user' else 'Appliance'}:**", "", message["content"], ""]
            for source in message["sources"]:
                lines.append(f"- [{source.get('number')}] {source.get('path')}"
                             + (f", {source['section']}" if source.get("section") else "")
                             + (f", page {source['page']}" if source.get("page") is not None else ""))
            if message["sources"]:
                lines.append("")
        return "\n".join(lines)
