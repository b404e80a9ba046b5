"""`appliance kb ...` and `appliance ask` with the library, through the installed command."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from tests.conftest import run_appliance


@pytest.fixture
def ingested(library):
    result = run_appliance("kb", "add", "--json", str(library))
    assert result.returncode == 0, result.stderr
    return library, json.loads(result.stdout)


@pytest.mark.slow
def test_add_list_stats_search_remove(ingested):
    library, report = ingested
    assert report["added"] == 5 and report["failed"] == [] and report["chunks"] > 5
    assert "\x1b" not in run_appliance("kb", "add", str(library)).stderr  # no progress bar in a pipe

    listing = json.loads(run_appliance("kb", "list", "--json").stdout)
    assert {row["kind"] for row in listing} == {"md", "txt", "html", "pdf", "epub"}
    stats = json.loads(run_appliance("kb", "stats", "--json").stdout)
    assert stats["documents"] == 5 and stats["chunks"] == report["chunks"]

    found = run_appliance("kb", "search", "--json", "-k", "2", "is it ok to run a generator in my garage")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert len(hits) <= 2 and hits[0]["path"] == str(library / "power.pdf")
    assert hits[0]["page"] == 1 and hits[0]["heading"] == "Generators" and hits[0]["title"] == "Field Manual"
    assert {"score", "path", "title", "heading", "page", "snippet"} <= set(hits[0])

    text = run_appliance("kb", "search", "cool a burn")
    assert text.returncode == 0 and "first-aid.html" in text.stdout and "Burns" in text.stdout

    nothing = run_appliance("kb", "search", "--json", "who won the 1998 football world cup")
    assert nothing.returncode == 1 and json.loads(nothing.stdout) == {"hits": [], "source_problems": []}

    removed = run_appliance("kb", "remove", "--json", str(library / "power.pdf"))
    assert removed.returncode == 0 and json.loads(removed.stdout)["removed"][0]["chunks"] > 0
    unknown = run_appliance("kb", "remove", str(library / "power.pdf"))
    assert unknown.returncode == 1 and "not in the knowledge base" in unknown.stderr
    assert "Traceback" not in unknown.stderr


@pytest.mark.slow
def test_add_reports_each_bad_file_and_exits_1(tmp_path, library):
    (tmp_path / "junk.txt").write_bytes(bytes(range(256)) * 10)
    result = run_appliance("kb", "add", str(tmp_path / "junk.txt"), str(library / "first-aid.html"),
                           str(tmp_path / "missing"))
    assert result.returncode == 1
    assert "1 added" in result.stdout
    assert f"FAILED    {tmp_path / 'junk.txt'}: binary data, not text" in result.stdout
    assert f"FAILED    {tmp_path / 'missing'}: no such file or directory" in result.stdout


def test_usage_errors():
    runner = CliRunner()
    assert runner.invoke(cli, ["kb", "add"]).exit_code == 2
    assert runner.invoke(cli, ["kb", "search", "  "]).exit_code == 2


@pytest.mark.slow
def test_ask_cites_the_library(ingested):
    library, _ = ingested
    result = run_appliance("ask", "--json", "--max-tokens", "40", "How should I treat a burn on my hand?")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["notice"] is None
    assert data["sources"] and data["sources"][0]["number"] == 1
    assert data["sources"][0]["path"] == str(library / "first-aid.html")
    assert data["sources"][0]["section"] == "First aid > Burns"

    streamed = run_appliance("ask", "--max-tokens", "24", "Is it safe to run a generator in the garage?")
    assert streamed.returncode == 0, streamed.stderr
    lines = streamed.stdout.splitlines()
    assert f"[1] {library / 'power.pdf'}, Generators, page 1" in lines
    # The list is headed by what it is: sources the answer cites, or passages it was given but did not cite.
    heading = lines[lines.index(f"[1] {library / 'power.pdf'}, Generators, page 1") - 1]
    assert heading in ("Sources:", "Passages given to the model (the answer cites none of them):")


@pytest.mark.slow
def test_ask_abstains_before_model_text_when_the_library_has_nothing(ingested):
    result = run_appliance("ask", "--max-tokens", "8", "Who won the 1998 football world cup?")
    assert result.returncode == 0, result.stderr
    assert "library has nothing on this" in result.stderr
    assert "[1]" not in result.stdout
    as_json = json.loads(run_appliance("ask", "--json", "--max-tokens", "8", "Who won the 1998 world cup?").stdout)
    assert as_json["sources"] == [] and "nothing" in as_json["notice"]


@pytest.mark.slow
def test_ask_no_kb_skips_the_library(ingested):
    data = json.loads(run_appliance("ask", "--json", "--no-kb", "--max-tokens", "8", "How do I treat a burn?").stdout)
    assert data["sources"] == [] and data["notice"] is None
