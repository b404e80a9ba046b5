"""Every source's provenance record (sha256, size, mtime, origin, what the file says of itself, each fact with where
it was read), and a source damaged after it was added named by search, `ask`, `kb list`, `kb verify` and doctor.
Real ZIMs made by zimwriterfs, real PDFs and EPUBs, the real embedder and SQLite."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.doctor import checkup
from appliance.services import Services
from tests.kb import fixtures

ARTICLES = {
    "Water_purification.html": ("Water purification", [("Boiling", "Boil clear water for one full minute; at "
                                                                    "altitude boil it for three minutes."),
                                                        ("Chemical disinfection", fixtures.WATER)]),
    "Burn.html": ("Burn", [("First aid", fixtures.BURN)]),
}
QUERY = "how long should I boil water to make it safe"


@pytest.fixture
def wiki(tmp_path):
    return fixtures.make_zim(tmp_path / "survival.zim", ARTICLES, title="Survival Wiki",
                             extra=("-n", "survival_en_all", "-e", "https://example.org/survival"))


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _truncate(path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def test_a_zim_record_holds_its_hash_and_its_own_metadata_each_with_where_it_was_read(make_kb, wiki):
    knowledge = make_kb()
    assert knowledge.add([wiki]).registered == 1
    row, state = knowledge.source_record(str(wiki))
    record = row["record"]
    assert record["sha256"] == _sha(wiki) and record["hashed_by"] == "registration"
    assert record["size"] == wiki.stat().st_size and record["mtime_ns"] == wiki.stat().st_mtime_ns
    assert record["origin"] == {"kind": "path", "path": str(wiki)}
    facts = record["facts"]
    assert facts["Title"] == {"value": "Survival Wiki", "from": "the ZIM's metadata (M/Title)"}
    assert facts["Name"]["value"] == "survival_en_all" and facts["Publisher"]["value"] == "tests"
    assert facts["Source"]["value"] == "https://example.org/survival" and facts["Language"]["value"] == "eng"
    assert facts["UUID"]["from"] == "the ZIM's header"
    assert "License" not in facts and "License" in record["unknown"]  # zimwriterfs writes none: unknown, not guessed
    assert state.state == "ok"
    # by its file name too, when only one source has it
    assert knowledge.source_record("survival.zim")[0]["path"] == str(wiki)


def test_pdf_and_epub_records_hold_their_document_metadata(make_kb, library):
    knowledge = make_kb()
    knowledge.add([library / "power.pdf", library / "shelter.epub", library / "manuals" / "water.md"])
    pdf = knowledge.source_record(str(library / "power.pdf"))[0]["record"]
    assert pdf["facts"]["Title"] == {"value": "Field Manual", "from": "the PDF's document information (/Title)"}
    assert pdf["sha256"] == _sha(library / "power.pdf") and pdf["hashed_by"] == "ingest"
    epub = knowledge.source_record(str(library / "shelter.epub"))[0]["record"]
    assert epub["facts"]["Title"] == {"value": "Home Repair", "from": "the EPUB's package metadata (dc:title)"}
    assert "Publisher" in epub["unknown"]
    markdown = knowledge.source_record(str(library / "manuals" / "water.md"))[0]["record"]
    assert markdown["facts"] == {} and markdown["sha256"] == _sha(library / "manuals" / "water.md")


def test_a_truncated_zim_is_named_by_search_and_never_searched(make_kb, wiki):
    knowledge = make_kb()
    knowledge.add([wiki])
    assert knowledge.search(QUERY, k=3), "the whole archive answers it"
    assert knowledge.take_problems() == []
    _truncate(wiki)
    assert knowledge.search(QUERY, k=3) == []
    (named,) = knowledge.take_problems()
    assert named.path == str(wiki) and named.state == "changed" and not named.searched
    assert "now" in named.detail and "when it was added" in named.detail
    assert "not searched" in named.line()
    (state,) = knowledge.check_sources()
    assert state.state == "changed"
    (verified,) = knowledge.verify_sources()
    assert verified.state == "changed"
    assert knowledge.store.source(str(wiki)).verdict == "changed"


def test_a_deleted_zim_is_named_missing(make_kb, wiki):
    knowledge = make_kb()
    knowledge.add([wiki])
    wiki.unlink()
    assert knowledge.search(QUERY, k=3) == []
    (named,) = knowledge.take_problems()
    assert named.state == "missing" and "kb remove" in named.fix


def test_a_changed_document_is_named_when_cited_and_its_stored_passages_still_used(make_kb, library):
    knowledge = make_kb()
    water = library / "manuals" / "water.md"
    knowledge.add([water])
    water.write_text(water.read_text().replace("Basics", "Basicz"))  # the same size, other bytes
    hits = knowledge.search("how many drops of bleach per litre of water", k=2)
    assert hits and hits[0].path == str(water)
    (named,) = knowledge.take_problems()
    assert named.state == "changed" and named.searched and "sha256" in named.detail
    assert "its passages are the version added" in named.line()


def test_a_touched_file_is_re_hashed_once_and_found_unchanged(make_kb, library, wiki):
    knowledge = make_kb()
    water = library / "manuals" / "water.md"
    knowledge.add([water, wiki])
    for path in (water, wiki):
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert all(state.state == "ok" for state in knowledge.check_sources())
    assert knowledge.store.source(str(wiki)).mtime_ns == 1_000_000_000  # the new date kept: not hashed again
    # a large archive with a new date is not re-hashed by a search: said unverified until `kb verify`
    os.utime(wiki, ns=(2_000_000_000, 2_000_000_000))
    fresh = make_kb(knowledge.directory)
    (state,) = fresh.check_sources({str(wiki)}, rehash_max=1000)
    assert state.state == "unverified" and state.searched
    (verified,) = [s for s in fresh.verify_sources() if s.path == str(wiki)]
    assert verified.state == "ok"


def test_an_older_library_is_upgraded_and_its_sources_adopted(make_kb, library, wiki):
    knowledge = make_kb()
    water = library / "manuals" / "water.md"
    knowledge.add([water, wiki])
    directory = knowledge.directory
    knowledge.close()
    db = sqlite3.connect(directory / "text.sqlite")
    db.executescript("DROP TABLE sources; PRAGMA user_version=1;")
    db.close()
    reopened = make_kb(directory)
    assert reopened.store.db.execute("PRAGMA user_version").fetchone()[0] == 3  # every step since
    adopted = reopened.store.source(str(water))
    assert adopted.sha256 == _sha(water) and adopted.hashed_by == "ingest" and adopted.mtime_ns is None
    assert adopted.origin["recorded"].startswith("adopted")
    assert reopened.store.source(str(wiki)).sha256 is None  # a ZIM's identity was never its hash
    states = {state.path: state for state in reopened.check_sources()}
    assert states[str(water)].state == "ok"  # re-hashed (small), matches, its mtime now kept
    assert reopened.store.source(str(water)).mtime_ns == water.stat().st_mtime_ns
    assert states[str(wiki)].state == "ok" and "taken now" in states[str(wiki)].detail
    assert reopened.store.source(str(wiki)).sha256 == _sha(wiki)
    assert reopened.store.source(str(wiki)).facts["Title"]["value"] == "Survival Wiki"  # its metadata read then


def test_a_pack_carries_provenance_to_the_importing_library(make_kb, library, tmp_path):
    from kb import packs

    source = make_kb(tmp_path / "one")
    source.add([library / "power.pdf"])
    packs.export(source, tmp_path / "pack")
    target = make_kb(tmp_path / "two")
    packs.import_pack(target, tmp_path / "pack")
    record = target.store.source(str(library / "power.pdf"))
    assert record.origin["kind"] == "pack" and record.origin["pack"] == str(tmp_path / "pack")
    assert record.origin["before"]["kind"] == "path"
    assert record.facts["Title"]["value"] == "Field Manual" and record.sha256 == _sha(library / "power.pdf")
    (library / "power.pdf").unlink()  # not on this machine: kept from the pack, not a problem
    (state,) = target.check_sources()
    assert state.state == "kept" and not state.problem


# --- the command line and doctor --------------------------------------------------------------------------------
def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_cli_show_list_search_verify_and_doctor_name_a_truncated_zim(appliance_home, wiki):
    assert _run("kb", "add", str(wiki)).exit_code == 0
    shown = _run("kb", "show", str(wiki))
    assert shown.exit_code == 0, shown.output
    assert f"sha256:    {_sha(wiki)}" in shown.stdout
    assert "Title:     Survival Wiki   (from the ZIM's metadata (M/Title))" in shown.stdout
    assert "License:   unknown (the file does not say)" in shown.stdout
    assert "now:       ok" in shown.stdout
    assert _run("kb", "verify").exit_code == 0

    _truncate(wiki)
    searched = _run("kb", "search", "--json", QUERY)
    assert searched.exit_code == 1
    data = json.loads(searched.stdout)
    assert data["hits"] == [] and data["source_problems"][0]["path"] == str(wiki)
    assert data["source_problems"][0]["state"] == "changed" and data["source_problems"][0]["searched"] is False
    text = _run("kb", "search", QUERY)
    assert f"archive {wiki} has changed since it was added" in text.stderr
    assert "the library has nothing on this" not in text.stderr and "1 archive was not searched" in text.stderr

    listed = _run("kb", "list")
    assert listed.exit_code == 0 and str(wiki) in listed.stdout and "CHANGED:" in listed.stdout
    assert "the library is empty" not in listed.stderr
    assert "nothing in the library can be searched now" in listed.stderr
    assert json.loads(_run("kb", "list", "--json").stdout)[0]["state"]["state"] == "changed"

    verified = _run("kb", "verify")
    assert verified.exit_code == 3 and f"CHANGED {wiki}" in verified.stdout

    checks = checkup.source_checks(Services.create().knowledge)
    (failed,) = [check for check in checks if check.ok is False]
    assert failed.name == f"archive {wiki}" and failed.exit_code == 3 and "changed" in failed.detail
    error = checkup.exit_error(checks)
    assert error is not None and error.exit_code == 3


def test_doctor_says_every_source_is_as_added(appliance_home, wiki, library):
    assert _run("kb", "add", str(wiki), str(library / "power.pdf")).exit_code == 0
    (check,) = checkup.source_checks(Services.create().knowledge)
    assert check.ok is True and "2 sources (1 ZIM archives)" in check.detail


def test_ask_quote_only_json_names_the_damaged_archive(appliance_home, wiki):
    assert _run("kb", "add", str(wiki)).exit_code == 0
    _truncate(wiki)
    asked = _run("ask", "--quote-only", "--json", QUERY)
    assert asked.exit_code == 0, asked.output
    data = json.loads(asked.stdout)
    (problem,) = data["source_problems"]
    assert problem["path"] == str(wiki) and problem["state"] == "changed" and not problem["searched"]
    assert f"archive {wiki} has changed since it was added" in data["notice"]
    assert "1 not searched" in data["notice"]


def test_answers_carry_what_the_archive_states_and_its_hash(appliance_home, wiki):
    assert _run("kb", "add", str(wiki)).exit_code == 0
    data = json.loads(_run("ask", "--quote-only", "--json", QUERY).stdout)
    source = data["sources"][0]
    assert source["path"] == str(wiki) and source["article"]
    assert source["work"] == "Survival Wiki" and source["publisher"] == "tests" and source["license"] is None
    assert source["source_sha256"] == _sha(wiki)
    text = _run("ask", "--quote-only", QUERY)
    assert text.exit_code == 0, text.output
    assert '("Survival Wiki", published by tests)' in text.stdout
    searched = _run("kb", "search", QUERY)
    assert 'from "Survival Wiki", published by tests' in searched.stdout
    hit = json.loads(_run("kb", "search", "--json", QUERY).stdout)["hits"][0]
    assert hit["source"]["sha256"] == _sha(wiki) and hit["source"]["from"]["publisher"] == (
        "the ZIM's metadata (M/Publisher)")


def test_an_ingested_file_gone_from_its_path_is_kept_not_a_problem(make_kb, library):
    knowledge = make_kb()
    water = library / "manuals" / "water.md"
    knowledge.add([water])
    water.unlink()  # the drive it was on unplugged: its passages are the library's own copy
    assert knowledge.search("how many drops of bleach per litre of water", k=1)
    assert knowledge.take_problems() == []
    (state,) = knowledge.check_sources()
    assert state.state == "kept" and not state.problem and "no longer at its path" in state.detail


def test_ask_says_the_damaged_archive_on_stderr_before_anything_else(appliance_home, wiki):
    assert _run("kb", "add", str(wiki)).exit_code == 0
    _truncate(wiki)
    asked = _run("ask", "--quote-only", QUERY)
    assert asked.exit_code == 0, asked.output
    assert f"archive {wiki} has changed since it was added" in asked.stderr and "not searched" in asked.stderr
    assert "Nothing found in what the library could search (1 not searched" in asked.stderr
    assert "The library has nothing on this" not in asked.stderr
