"""Putting the library back to a consistent state: replaying the journal and finishing vector deletions, over the
parts they are handed (the store and the vector index), and the full repair's report (`appliance kb repair`, run
by KnowledgeBase.repair, which owns the parts and the writer lock).

The journal (kb.store) records every write that spans SQLite and the vector index. `replay` undoes each 'add' that
never became visible (its vectors, then its rows) and finishes each 'delete' (the vectors of rows already gone);
both are idempotent, so a replay interrupted by a full disk or a kill simply runs again later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kb.store import Store
    from kb.vectors import Vectors


def replay(store: "Store", vectors: "Vectors") -> int:
    """Undo what an interrupted write left half-done. Returns how many journal entries were replayed."""
    entries = store.journal()
    for entry_id, action, doc_id, lo, hi in entries:
        vectors.delete_range(lo, hi)
        if action == "add":
            store.undo_add(entry_id, doc_id)
        else:
            store.drop_journal(entry_id)
    store.drop_pending_without_chunks()
    return len(entries)


def drop_vectors(store: "Store", vectors: "Vectors", ranges: list[tuple[int, int, int]]) -> None:
    """The last step of a replace or a removal: the old vectors go, then their journal entries."""
    for entry_id, lo, hi in ranges:
        vectors.delete_range(lo, hi)
        store.drop_journal(entry_id)


@dataclass
class RepairReport:
    database: str = "ok"  # SQLite's quick_check
    problem: str | None = None  # what was wrong with the vector index before (None: nothing seen)
    replayed: int = 0  # journal entries of interrupted writes undone or finished
    vectors: int = 0  # vectors in the rebuilt index
    unrebuildable: int = 0  # passages whose stored vector is unusable (their files need `kb add` again)
    seconds: float = 0.0
    verify: dict | None = None

    @property
    def ok(self) -> bool:
        return self.database == "ok" and bool(self.verify and self.verify.get("ok"))

    def as_dict(self) -> dict:
        return {"database": self.database, "problem_found": self.problem, "replayed": self.replayed,
                "vectors": self.vectors, "unrebuildable": self.unrebuildable, "seconds": round(self.seconds, 2),
                "verify": self.verify, "ok": self.ok}
