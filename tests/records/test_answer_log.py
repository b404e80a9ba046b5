"""The answer log (a hash chain in history.sqlite) and answer certificates: a clean history verifies; editing,
deleting or reordering rows with plain SQL is caught and the entry named; the migration keeps every exchange; a
certificate verifies, and a changed byte or a different model file fails with a clear reason. Real SQLite, real
keys, real model files, the real knowledge base and the real SmolLM2 model end to end."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.records.history import MIGRATIONS, History
from appliance.services import Services
from tests.conftest import run_appliance


def result(n: int, model: dict | None = None, sources: list | None = None) -> dict:
    return {"answer": f"Answer number {n}.", "model": model or {"name": "m", "sha256": "a" * 64},
            "sources": sources or [], "rules": [], "settings": {"max_tokens": 64}}


def filled(path, exchanges: int = 4) -> History:
    history = History(path)
    conversation = None
    for n in range(1, exchanges + 1):
        conversation = history.record_exchange(f"Question {n}?", result(n), conversation if n % 2 == 0 else None)
    return history


def sql(path, statement: str, *params) -> None:
    db = sqlite3.connect(path)
    db.execute(statement, params)
    db.commit()
    db.close()


def verify_cli() -> tuple[int, str]:
    outcome = CliRunner().invoke(cli, ["history", "verify"])
    return outcome.exit_code, outcome.stdout + outcome.stderr


# -- the chain ---------------------------------------------------------------------------------------------------
def test_a_clean_history_verifies_and_a_deletion_is_an_entry(appliance_home):
    services = Services.create()
    history = filled(services.paths.history)
    report = history.verify_log()
    assert report.ok and report.entries == 4 and report.exchanges == 4
    history.delete_conversation(1)
    report = history.verify_log()
    assert report.ok and report.entries == 5 and report.deletions == 1
    code, text = verify_cli()
    assert code == 0 and text.startswith("ok: 5 entries (4 exchanges, 1 deletions); head ")
    assert len(text.split("head ")[1].strip()) == 64


@pytest.mark.parametrize("tamper, named", [
    ("UPDATE messages SET content = 'Boil it for ten seconds.' WHERE id = 4",
     "entry 2: its answer (message 4) was changed"),
    ("UPDATE messages SET content = 'Another question?' WHERE id = 5", "entry 3: its question (message 5) was changed"),
    ("DELETE FROM messages WHERE id = 6", "entry 3: its answer (message 6) was removed"),
    ("DELETE FROM answer_log WHERE seq = 2", "entry 2: was removed (the log goes from entry 1 to 3)"),
    ("UPDATE answer_log SET seq = -seq WHERE seq IN (2, 3); UPDATE answer_log SET seq = 5 + seq WHERE seq < 0",
     "entry 2: was reordered (this row holds entry 3)"),
    ("UPDATE answer_log SET entry = replace(entry, '\"kind\":\"exchange\"', '\"kind\":\"exchange \"') WHERE seq = 3",
     "entry 3: was changed (its contents no longer match its hash)"),
    ("UPDATE messages SET content = 'swapped' || content WHERE id IN (2, 8)",
     "entry 1: its answer (message 2) was changed"),
    ("INSERT INTO messages (conversation_id, role, content, created) VALUES (1, 'assistant', 'planted', 0)",
     "message 9 is not in the answer log"),
])
def test_plain_sql_tampering_is_caught_and_the_entry_named(appliance_home, tamper, named):
    services = Services.create()
    history = filled(services.paths.history)
    history.close()
    db = sqlite3.connect(services.paths.history)
    db.executescript(tamper)
    db.close()
    report = History(services.paths.history).verify_log()
    assert not report.ok
    assert str(report.first).startswith(named)
    code, text = verify_cli()
    assert code == 3 and f"the answer log does not verify: {named}" in text


def test_a_rehashed_entry_is_named_by_the_next_link(appliance_home):
    services = Services.create()
    history = filled(services.paths.history)
    db = sqlite3.connect(services.paths.history)
    text = db.execute("SELECT entry FROM answer_log WHERE seq = 2").fetchone()[0]
    forged = text.replace('"kind":"exchange"', '"kind":"exchange","note":"x"')
    import hashlib

    db.execute("UPDATE answer_log SET entry = ?, hash = ? WHERE seq = 2",
               (forged, hashlib.sha256(forged.encode()).hexdigest()))
    db.commit()
    assert str(history.verify_log().first).startswith("entry 2: was changed, replaced or reordered")


def test_migration_keeps_every_exchange_and_adopts_it_into_the_log(appliance_home):
    path = appliance_home / "old.sqlite"
    appliance_home.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:2], start=1):  # a history written before the log existed (v2)
        old.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")
    old.execute("INSERT INTO conversations (id, title, created, updated) VALUES (1, 'Water', 1, 2), (2, 'Fire', 3, 4)")
    rows = [(1, "user", "How do I boil water?", None, "[]", 1), (1, "assistant", "Boil it [1].", "smollm2",
            json.dumps([{"number": 1, "path": "/lib/water.md"}]), 1.5), (2, "user", "Fire?", None, "[]", 3),
            (2, "assistant", "Use a flint.", "smollm2", "[]", 3.5), (1, "user", "And at altitude?", None, "[]", 2),
            (1, "assistant", "Longer.", "smollm2", "[]", 2.1)]
    old.executemany("INSERT INTO messages (conversation_id, role, content, model, sources, timings, created) "
                    "VALUES (?, ?, ?, ?, ?, '{}', ?)", rows)
    before = old.execute("SELECT id, conversation_id, role, content, model, sources FROM messages").fetchall()
    old.close()
    history = History(path)
    report = history.verify_log()
    assert report.ok and report.exchanges == 3
    after = history.db.execute("SELECT id, conversation_id, role, content, model, sources FROM messages").fetchall()
    assert [tuple(row) for row in after] == before  # nothing lost, nothing changed
    assert history.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    seq, _, entry, record = history.logged_exchange(2)
    assert record["adopted"] is True and record["question"] == "How do I boil water?"
    assert record["sources"] == [{"number": 1, "path": "/lib/water.md"}] and entry["conversation_id"] == 1
    history.record_exchange("New one?", result(9), 2)  # the chain goes on from the adopted entries
    assert history.verify_log().ok and history.verify_log().entries == 4


# -- certificates ------------------------------------------------------------------------------------------------------
@pytest.fixture
def keys(tmp_path):
    from appliance.models.signing import generate_key

    key = tmp_path / "owner.pem"
    generate_key(key)
    other = tmp_path / "other.pem"
    generate_key(other)
    return key, other


def _certify(args) -> tuple[int, str]:
    outcome = CliRunner().invoke(cli, ["history", *args])
    return outcome.exit_code, outcome.stdout + outcome.stderr


def test_a_certificate_verifies_and_a_changed_byte_fails(appliance_home, keys, tmp_path):
    services = Services.create()
    entry = services.models.resolve(None)  # the real SmolLM2 file from its wheel
    services.history.record_exchange("What is water?", result(1, {"name": entry.name, "sha256": entry.sha256}))
    certificate = tmp_path / "answer.cert.json"
    code, text = _certify(["certify", "2", "--key", str(keys[0]), "-o", str(certificate)])
    assert code == 0, text
    code, text = _certify(["check", str(certificate), "--pubkey", str(keys[0]) + ".pub"])
    assert code == 0, text
    assert "ok    signature: valid" in text and f"ok    model: {entry.name}" in text
    assert "ok    answer log: this machine's answer log holds it (entry 1)" in text
    # one changed byte in the answer
    data = certificate.read_text(encoding="utf-8")
    assert '"answer": "Answer number 1."' in data
    certificate.write_text(data.replace("Answer number 1.", "Answer number 7."), encoding="utf-8")
    code, text = _certify(["check", str(certificate)])
    assert code == 3
    assert "FAIL  signature: the signature does not match the signed contents (they were altered after signing)" in text
    # signed by someone else than the key given
    certificate.write_text(data, encoding="utf-8")
    code, text = _certify(["check", str(certificate), "--pubkey", str(keys[1]) + ".pub"])
    assert code == 3 and "not by the given key" in text
    # a question is not an answer; a broken log certifies nothing
    assert _certify(["certify", "1", "--key", str(keys[0])])[0] == 2
    sql(services.paths.history, "UPDATE messages SET content = 'edited' WHERE id = 2")
    code, text = _certify(["certify", "2", "--key", str(keys[0]), "-o", str(tmp_path / "x.json")])
    assert code == 3 and "the answer log does not verify" in text and not (tmp_path / "x.json").exists()


def test_a_different_model_file_fails_the_check(appliance_home, keys, tmp_path):
    from tests.tui.conftest import write_tiny_gguf

    services = Services.create()
    model = write_tiny_gguf(tmp_path / "tiny.gguf", license="apache-2.0", name="tiny")
    entry = services.models.import_path(model, name="tiny")[0][1]
    services.history.record_exchange("Q?", result(1, {"name": "tiny", "sha256": entry.sha256}))
    certificate = tmp_path / "c.json"
    assert _certify(["certify", "2", "--key", str(keys[0]), "-o", str(certificate)])[0] == 0
    shutil.copy(write_tiny_gguf(tmp_path / "other.gguf", license="apache-2.0", name="other"), model)
    code, text = _certify(["check", str(certificate)])
    assert code == 3
    assert "FAIL  model: tiny:" in text and "(a different or changed model file)" in text
    assert f"not the certified {entry.sha256[:16]}..." in text


def test_certified_sources_are_checked_against_the_library(appliance_home, keys, tmp_path):
    services = Services.create()
    doc = tmp_path / "water.md"
    doc.write_text("# Water\n\nBoil clear water for one full minute before drinking it, and let it cool covered.\n",
                   encoding="utf-8")
    services.kb.add([doc])
    run = services.conversation().ask("How long do I boil water?", quote_only=True)
    assert run.sources and run.chunk_hashes
    answer = run.as_dict() | {"answer": "One minute [1].", "model": {"name": "m", "sha256": "b" * 64}}
    services.history.record_exchange(run.question, answer)
    certificate = tmp_path / "c.json"
    assert _certify(["certify", "2", "--key", str(keys[0]), "-o", str(certificate)])[0] == 0
    code, text = _certify(["check", str(certificate)])
    assert code == 0, text
    assert "ok    source [1] " in text and "the library still holds this passage" in text
    assert "skip  model: model 'm'" in text  # not on this machine: said, not failed
    doc.write_text("# Water\n\nBoil clear water for three minutes at altitude.\n", encoding="utf-8")
    services.kb.add([doc])
    code, text = _certify(["check", str(certificate)])
    assert code == 3 and "FAIL  source [1]" in text and "the library's copy of this document changed" in text


@pytest.mark.slow
def test_end_to_end_with_the_real_model(appliance_home, keys, tmp_path):
    asked = run_appliance("ask", "--json", "--no-kb", "--max-tokens", "16", "What is rain?")
    assert asked.returncode == 0, asked.stderr
    data = json.loads(asked.stdout)
    assert data["settings"]["max_tokens"] == 16 and data["rules"] == [] and data["refused"] is None
    assert run_appliance("history", "verify").returncode == 0
    certificate = tmp_path / "rain.json"
    made = run_appliance("history", "certify", "2", "--key", str(keys[0]), "-o", str(certificate))
    assert made.returncode == 0, made.stderr
    payload = json.loads(certificate.read_text())["payload"]
    assert payload["answer"] == data["answer"] and payload["model"]["sha256"] == data["model"]["sha256"]
    checked = run_appliance("history", "check", str(certificate), "--pubkey", str(keys[0]) + ".pub")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_certificate_names_the_archive_it_was_grounded_in(appliance_home, keys, tmp_path):
    import hashlib

    from tests.kb import fixtures

    services = Services.create()
    wiki = fixtures.make_zim(tmp_path / "water.zim", {"Boiling.html": ("Boiling water", [
        ("How long", "Boil clear water for one full minute before drinking it; three minutes at altitude.")])})
    services.kb.add([wiki])
    run = services.conversation().ask("How long do I boil water?", quote_only=True)
    assert run.sources and run.sources[0].article
    answer = run.as_dict() | {"answer": "One minute [1].", "model": {"name": "m", "sha256": "b" * 64}}
    services.history.record_exchange(run.question, answer)
    assert services.history.verify_log().ok
    certificate = tmp_path / "c.json"
    assert _certify(["certify", "2", "--key", str(keys[0]), "-o", str(certificate)])[0] == 0
    payload = json.loads(certificate.read_text())["payload"]
    assert payload["sources"][0]["source_sha256"] == hashlib.sha256(wiki.read_bytes()).hexdigest()
    assert payload["sources"][0]["work"] == "Test Wiki"
    code, text = _certify(["check", str(certificate)])
    assert code == 0, text
    assert "ok    source [1] " in text and "the archive at this path is the certified one" in text
    with open(wiki, "r+b") as handle:  # the archive damaged on its drive after the answer
        handle.truncate(wiki.stat().st_size // 2)
    code, text = _certify(["check", str(certificate)])
    assert code == 3 and "FAIL  source [1]" in text and "changed" in text
