"""The tamper-evident answer log: a hash chain in history.sqlite, appended in the same transaction as the exchange.

Each exchange's full record (question, answer, model name and sha256, sources with their chunk hashes, rule
decisions, time, the settings that shaped the answer) is kept as canonical JSON on the answer's row
(`messages.record`); the chain entry holds its sha256 and the sha256 of the previous entry:

    answer_log(seq, hash, entry)   entry = {"v": 1, "seq": N, "prev": <hash of N-1>, "kind": "exchange",
                                            "time": ..., "conversation_id", "question_id", "answer_id",
                                            "record_sha256"}
                                   hash  = sha256(entry as stored)

A deletion by the owner is itself an entry ({"kind": "deletion", "entries": [...], "messages": [...]}): the
conversation's text is gone, the chain stays whole. `verify` walks the chain and the messages and names the first
entry that was changed, removed or reordered. What it cannot see: the newest entries removed together with their
messages; compare the head (`history verify` prints it) with one noted earlier for that.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64
VERSION = 1

SCHEMA = (  # statements run one by one inside the migration's transaction (executescript would commit it)
    "ALTER TABLE messages ADD COLUMN record TEXT",
    "CREATE TABLE answer_log (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, entry TEXT NOT NULL)",
)


def migrate(db: sqlite3.Connection) -> int:
    """History schema step 3: the log's table, then every exchange already there adopted into it."""
    for statement in SCHEMA:
        db.execute(statement)
    return adopt_existing(db)


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# Keys absent from a source (None) are left out, so a record made before a key existed is what it was: new keys
# (the source file's sha256, what it states of itself) only reach new records and never break the chain.
_SOURCE_KEYS = ("number", "path", "title", "section", "page", "article", "chunk_sha256", "cited", "source_sha256",
                "work", "publisher", "license")


def record_for(question: str, result: dict[str, Any], when: float, adopted: bool = False) -> dict[str, Any]:
    """The facts of one exchange (from `AnswerRun.as_dict()`, or an older history row when adopted)."""
    return {
        "v": VERSION,
        "question": question,
        "answer": result.get("answer") or "",
        "time": when,
        "model": result.get("model") or None,
        "sources": [{key: source.get(key) for key in _SOURCE_KEYS if source.get(key) is not None}
                    for source in result.get("sources") or []],
        "rules": result.get("rules") or [],
        "refused": result.get("refused") or None,
        "settings": result.get("settings") or {},
        "stopped": result.get("stopped") or None,
        "cancelled": bool(result.get("cancelled")),
        "adopted": adopted,  # recorded before the log existed: its facts are what the old row held
    } | ({"device": result["device"]} if result.get("device") else {})  # a served device that asked


def append(db: sqlite3.Connection, kind: str, fields: dict[str, Any], when: float | None = None) -> int:
    """Append one entry (inside the caller's transaction). Returns its seq."""
    last = db.execute("SELECT seq, hash FROM answer_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    entry = canonical({"v": VERSION, "seq": seq, "prev": prev, "kind": kind,
                       "time": time.time() if when is None else when, **fields})
    db.execute("INSERT INTO answer_log (seq, hash, entry) VALUES (?, ?, ?)", (seq, sha256_text(entry), entry))
    return seq


def append_exchange(db: sqlite3.Connection, conversation_id: int, question_id: int, answer_id: int,
                    record: dict[str, Any]) -> int:
    """Store the record on the answer's row and chain it."""
    text = canonical(record)
    db.execute("UPDATE messages SET record = ? WHERE id = ?", (text, answer_id))
    return append(db, "exchange", {"conversation_id": conversation_id, "question_id": question_id,
                                   "answer_id": answer_id, "record_sha256": sha256_text(text)}, record["time"])


def append_deletion(db: sqlite3.Connection, conversation_id: int) -> int:
    """Before a conversation is deleted: the entry that says so (its exchanges' entries and message ids)."""
    messages = [row[0] for row in db.execute("SELECT id FROM messages WHERE conversation_id = ? ORDER BY id",
                                             (conversation_id,))]
    entries = [seq for seq, entry in db.execute("SELECT seq, entry FROM answer_log")
               if _load(entry).get("conversation_id") == conversation_id and _load(entry).get("kind") == "exchange"]
    return append(db, "deletion", {"conversation_id": conversation_id, "entries": entries, "messages": messages})


def adopt_existing(db: sqlite3.Connection) -> int:
    """The migration's second half: every exchange already in the history gets its record and its entry, in
    the order they were asked. Nothing is changed or dropped. Returns how many were adopted."""
    rows = db.execute("SELECT id, conversation_id, role, content, model, sources, timings, details, created "
                      "FROM messages ORDER BY id").fetchall()
    pending: dict[int, tuple] = {}  # conversation -> its question row waiting for the answer
    adopted = 0
    for row in rows:
        message_id, conversation_id, role, content, model, sources, timings, details, created = row
        if role == "user":
            pending[conversation_id] = row
            continue
        question = pending.pop(conversation_id, None)
        if question is None:
            continue  # an answer without its question (not written by the appliance): left as it is
        try:
            source_list = json.loads(sources or "[]")
            extra = json.loads(details or "{}")
        except ValueError:
            source_list, extra = [], {}
        result = {"answer": content, "model": {"name": model} if model else None,
                  "sources": source_list if isinstance(source_list, list) else [],
                  "stopped": extra.get("stopped") if isinstance(extra, dict) else None}
        record = record_for(question[3], result, created, adopted=True)
        append_exchange(db, conversation_id, question[0], message_id, record)
        adopted += 1
    return adopted


def _load(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class Problem:
    entry: int | None  # the entry named (None: a message outside the log)
    text: str

    def __str__(self) -> str:
        return f"entry {self.entry}: {self.text}" if self.entry is not None else self.text


@dataclass
class Report:
    entries: int = 0
    exchanges: int = 0
    deletions: int = 0
    head: str = GENESIS
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        named = [p for p in self.problems if p.entry is not None]
        return min(named, key=lambda p: p.entry or 0) if named else (self.problems[0] if self.problems else None)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "exchanges": self.exchanges, "deletions": self.deletions,
                "head": self.head, "first_problem": str(self.first) if self.first else None,
                "first_entry": self.first.entry if self.first else None,
                "problems": [str(p) for p in self.problems]}


def verify(db: sqlite3.Connection) -> Report:
    """Walk the chain, then check every exchange's messages against its entry; every message must be in the log."""
    report = Report()
    rows = db.execute("SELECT seq, hash, entry FROM answer_log ORDER BY seq").fetchall()
    exchanges: dict[int, dict[str, Any]] = {}
    deleted: set[int] = set()
    prev, expected = GENESIS, 1
    for seq, stored_hash, text in rows:
        entry = _load(text)
        report.entries += 1
        if seq != expected:
            report.problems.append(Problem(expected, f"was removed (the log goes from entry {expected - 1} to "
                                                     f"{seq})" if seq > expected else "is out of order"))
        elif entry.get("seq") != seq:
            report.problems.append(Problem(seq, f"was reordered (this row holds entry {entry.get('seq')})"))
        elif sha256_text(text) != stored_hash:
            report.problems.append(Problem(seq, "was changed (its contents no longer match its hash)"))
        elif entry.get("prev") != prev:
            report.problems.append(Problem(seq - 1, f"was changed, replaced or reordered (entry {seq} no longer "
                                                    "follows it)"))
        prev, expected = stored_hash, seq + 1
        report.head = stored_hash
        if entry.get("kind") == "exchange":
            report.exchanges += 1
            exchanges[seq] = entry
        elif entry.get("kind") == "deletion":
            report.deletions += 1
            deleted.update(n for n in entry.get("entries") or [] if isinstance(n, int))
        if report.problems:
            break  # the first broken link: what follows cannot be trusted to say more
    covered: set[int] = set()
    for seq, entry in exchanges.items():
        covered.update(i for i in (entry.get("question_id"), entry.get("answer_id")) if isinstance(i, int))
        if seq in deleted:
            continue
        problem = _check_exchange(db, entry)
        if problem:
            report.problems.append(Problem(seq, problem))
    stray = [row[0] for row in db.execute("SELECT id FROM messages ORDER BY id") if row[0] not in covered]
    if stray:
        report.problems.append(Problem(None, f"message {stray[0]} is not in the answer log (added or moved outside "
                                             "the appliance)" + (f", and {len(stray) - 1} more" if len(stray) > 1
                                                                  else "")))
    return report


def _check_exchange(db: sqlite3.Connection, entry: dict[str, Any]) -> str:
    answer_id, question_id = entry.get("answer_id"), entry.get("question_id")
    answer = db.execute("SELECT conversation_id, content, record FROM messages WHERE id = ? AND role = 'assistant'",
                        (answer_id,)).fetchone()
    if answer is None:
        return f"its answer (message {answer_id}) was removed"
    question = db.execute("SELECT conversation_id, content FROM messages WHERE id = ? AND role = 'user'",
                          (question_id,)).fetchone()
    if question is None:
        return f"its question (message {question_id}) was removed"
    record_text = answer[2] or ""
    if sha256_text(record_text) != entry.get("record_sha256"):
        return f"the record of its answer (message {answer_id}) was changed"
    record = _load(record_text)
    if answer[1] != record.get("answer"):
        return f"its answer (message {answer_id}) was changed"
    if question[1] != record.get("question"):
        return f"its question (message {question_id}) was changed"
    if answer[0] != entry.get("conversation_id") or question[0] != entry.get("conversation_id"):
        return f"its messages ({question_id}, {answer_id}) were moved to another conversation"
    return ""


def exchange_for(db: sqlite3.Connection, answer_id: int) -> tuple[int, str, dict[str, Any], dict[str, Any]] | None:
    """(seq, entry hash, entry, record) of the exchange whose answer is message `answer_id`."""
    for seq, stored_hash, text in db.execute("SELECT seq, hash, entry FROM answer_log ORDER BY seq DESC"):
        entry = _load(text)
        if entry.get("kind") == "exchange" and entry.get("answer_id") == answer_id:
            row = db.execute("SELECT record FROM messages WHERE id = ?", (answer_id,)).fetchone()
            return seq, stored_hash, entry, _load(row[0] if row else "")
    return None
