"""The whole knowledge-base path with no network at all: ingest, search, ask under `unshare -n` + strace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kb.offline import OFFLINE_ENV
from tests.airgap import TracedRun, run_offline
from tests.conftest import require_tool
from tests.kb import fixtures

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ingest_search_ask_make_no_inet_connection(tmp_path, library):
    wiki = fixtures.make_zim(tmp_path / "wiki.zim", {
        "Water.html": ("Water purification", [("Bleach", fixtures.WATER)])})
    added = run_offline("kb", "add", "--json", str(library), str(wiki), trace_file=tmp_path / "add.trace")
    assert added.result.returncode == 0, added.result.stderr
    assert json.loads(added.result.stdout)["added"] == 6
    searched = run_offline("kb", "search", "--json", "bleach drops per litre", trace_file=tmp_path / "search.trace")
    assert searched.result.returncode == 0, searched.result.stderr
    assert json.loads(searched.result.stdout)["hits"]
    asked = run_offline("ask", "--json", "--max-tokens", "16", "How do I cool a burn?",
                        trace_file=tmp_path / "ask.trace")
    assert asked.result.returncode == 0, asked.result.stderr
    assert json.loads(asked.result.stdout)["sources"]
    for traced in (added, searched, asked):
        assert "execve(" in traced.trace, "strace recorded nothing; the trace is not working"
        assert traced.inet_attempts == []


def test_kb_sets_its_own_offline_guards_without_the_appliance(tmp_path):
    """`import kb` alone forces the telemetry guards (an inherited opt-in does not survive) and loads neither
    chromadb, onnxruntime nor appliance."""
    script = ("import json, os, sys\nimport kb\nfrom kb.offline import OFFLINE_ENV\n"
              "print(json.dumps({'env': {k: os.environ.get(k) for k in OFFLINE_ENV}, "
              "'loaded': sorted(m for m in ('chromadb', 'onnxruntime', 'appliance') if m in sys.modules)}))")
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    env.update(ANONYMIZED_TELEMETRY="True", ORT_DISABLE_TELEMETRY="0", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["env"] == OFFLINE_ENV and data["loaded"] == []


def test_kb_alone_makes_no_inet_connection(tmp_path, library, embedder_files, reranker_files):
    """kb used with no appliance import at all (its own guards only): ingest and search (the reranker's too)
    under `unshare -n`."""
    unshare, strace = require_tool("unshare"), require_tool("strace")
    weights, tokenizer = reranker_files
    script = (f"from pathlib import Path\nimport kb\nfrom kb.reranker import RerankerFiles\n"
              f"knowledge = kb.KnowledgeBase(Path({str(tmp_path / 'kb')!r}), "
              f"Path({str(embedder_files[0])!r}), Path({str(embedder_files[1])!r}), "
              f"RerankerFiles(Path({str(weights)!r}), Path({str(tokenizer)!r})))\n"
              f"assert knowledge.add([Path({str(library)!r})]).added == 5\n"
              "assert knowledge.search('how do I cool a burn')\n"
              "assert knowledge.rerank is not None and not knowledge.take_notices()\nprint('ok')")
    trace = tmp_path / "kb.trace"
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([unshare, "-n", "--", strace, "-f", "-qq", "-e", "trace=execve,%network", "-o", str(trace),
                           "--", sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    traced = TracedRun(done, trace.read_text())
    assert "execve(" in traced.trace and traced.inet_attempts == []
