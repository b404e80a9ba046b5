"""The whole knowledge-base path with no network at all: ingest, search, ask under `unshare -n` + strace."""

from __future__ import annotations

import json

from tests.airgap import run_offline
from tests.kb import fixtures


def test_ingest_search_ask_make_no_inet_connection(tmp_path, library):
    wiki = fixtures.make_zim(tmp_path / "wiki.zim", {
        "Water.html": ("Water purification", [("Bleach", fixtures.WATER)])})
    added = run_offline("kb", "add", "--json", str(library), str(wiki), trace_file=tmp_path / "add.trace")
    assert added.result.returncode == 0, added.result.stderr
    assert json.loads(added.result.stdout)["added"] == 6
    searched = run_offline("kb", "search", "--json", "bleach drops per litre", trace_file=tmp_path / "search.trace")
    assert searched.result.returncode == 0, searched.result.stderr
    assert json.loads(searched.result.stdout)
    asked = run_offline("ask", "--json", "--max-tokens", "16", "How do I cool a burn?",
                        trace_file=tmp_path / "ask.trace")
    assert asked.result.returncode == 0, asked.result.stderr
    assert json.loads(asked.result.stdout)["sources"]
    for traced in (added, searched, asked):
        assert "execve(" in traced.trace, "strace recorded nothing; the trace is not working"
        assert traced.inet_attempts == []
