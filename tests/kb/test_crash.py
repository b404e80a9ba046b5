"""kill -9 in the middle of an ingest: the knowledge base stays consistent and the next `kb add` resumes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kb.vectors import Vectors
from tests.conftest import appliance_cmd
from tests.kb.fixtures import make_corpus as _corpus
from tests.kb.fixtures import ready_documents


def _consistent_on_disk(kb_dir: Path) -> None:
    """Read the files as the killed process left them: every visible chunk has its text, FTS row and vector."""
    db = sqlite3.connect(kb_dir / "text.sqlite")
    ready = {r[0] for r in db.execute(
        "SELECT c.id FROM chunks c JOIN documents d ON d.id=c.doc_id WHERE d.state='ready'")}
    fts = {r[0] for r in db.execute("SELECT rowid FROM chunks_fts")}
    pending = {r[0] for r in db.execute(
        "SELECT c.id FROM chunks c JOIN documents d ON d.id=c.doc_id WHERE d.state='pending'")}
    journaled = set()
    for lo, hi in db.execute("SELECT lo, hi FROM journal WHERE action='add'"):
        journaled |= set(range(lo, hi + 1))
    current = db.execute("SELECT value FROM meta WHERE key='vectors_dir'").fetchone()
    db.close()
    vectors = Vectors(kb_dir / (current[0] if current else "chroma")).ids()
    assert ready <= vectors, "a visible chunk lost its vector"
    assert ready <= fts, "a visible chunk lost its text index"
    assert pending <= journaled, "a half-written document is not in the journal"
    assert vectors - ready <= journaled, "a vector with no text that the journal does not know about"


@pytest.mark.slow
def test_kill_9_mid_ingest_then_resume(tmp_path, appliance_home):
    corpus = _corpus(tmp_path / "corpus")
    env = dict(os.environ, APPLIANCE_HOME=str(appliance_home), NO_COLOR="1")
    proc = subprocess.Popen(appliance_cmd() + ["kb", "add", str(corpus)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    db_path = appliance_home / "kb" / "text.sqlite"
    deadline = time.monotonic() + 240
    while ready_documents(db_path) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the ingest finished before it could be killed: " + proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = ready_documents(db_path)
    assert 4 <= done_before < 36

    _consistent_on_disk(appliance_home / "kb")

    resumed = subprocess.run(appliance_cmd() + ["kb", "add", "--json"], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    import json

    report = json.loads(resumed.stdout)
    assert report["failed"] == []
    # Only the files not done yet are left in the interrupted batch: it resumes, nothing is redone.
    assert report["added"] == 36 - done_before and report["skipped"] == 0
    check = subprocess.run(appliance_cmd() + ["kb", "stats", "--json"], env=env, capture_output=True, text=True)
    assert json.loads(check.stdout)["documents"] == 36
    from appliance.models import packs as pins
    from kb import KnowledgeBase

    knowledge = KnowledgeBase(appliance_home / "kb", pins.EMBEDDER_ONNX.locate(), pins.EMBEDDER_TOKENIZER.locate())
    assert knowledge.verify()["ok"]
    assert knowledge.pending() == []
    knowledge.close()


@pytest.mark.slow
def test_kill_9_between_vectors_and_commit_is_undone(tmp_path, embedder_files, make_kb):
    """The worst moment: half of a document's vectors are in chroma, its rows are pending in SQLite."""
    corpus = _corpus(tmp_path / "corpus", files=3)
    kb_dir = tmp_path / "kb"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from kb import KnowledgeBase
        from kb.vectors import Vectors
        real_add = Vectors.add
        calls = []
        def add_then_die(self, ids, vectors):
            calls.append(1)
            if len(calls) == 2:
                real_add(self, ids[: len(ids) // 2], vectors[: len(ids) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            real_add(self, ids, vectors)
        Vectors.add = add_then_die
        kb = KnowledgeBase(Path({str(kb_dir)!r}), Path({str(embedder_files[0])!r}), Path({str(embedder_files[1])!r}))
        kb.add([Path({str(corpus)!r})])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr
    db = sqlite3.connect(kb_dir / "text.sqlite")
    assert db.execute("SELECT count(*) FROM journal WHERE action='add'").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM documents WHERE state='pending'").fetchone()[0] == 1
    db.close()
    _consistent_on_disk(kb_dir)

    knowledge = make_kb(kb_dir)  # opening recovers: the pending document and its half of the vectors go
    check = knowledge.verify()
    assert check["ok"], check
    assert len(knowledge.documents()) == 1
    report = knowledge.add([])  # resume the interrupted batch
    assert report.added == 2 and report.failed == []
    assert len(knowledge.documents()) == 3 and knowledge.verify()["ok"]
