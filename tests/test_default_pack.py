"""End to end with the default pack (Qwen2.5-Coder-0.5B-Instruct, installed by the set-up from the package index):
a fresh data dir registers it by hash, establishes its license from its bytes, and answers from the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from appliance.models import packs
from tests.conftest import run_appliance

pytestmark = pytest.mark.slow  # every test here hashes or loads the default pack (a 0.5B model)

DOCS = Path(__file__).resolve().parent.parent / "scripts" / "eval" / "answers" / "docs"
PACK = packs.DEFAULT_PACK


@pytest.fixture
def default_pack(monkeypatch):
    """The real packs folder of this environment (the other tests hide it to answer with SmolLM2)."""
    if not PACK.path(Path(sys.prefix)).is_file():
        message = f"the default pack {PACK.name} is not installed (./scripts/run or ./scripts/test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.delenv("APPLIANCE_PACKS_DIR")
    return PACK


def test_a_fresh_home_uses_the_default_pack_and_establishes_its_license(default_pack):
    assert json.loads(run_appliance("models", "default", "--json").stdout)["name"] == default_pack.name
    listed = run_appliance("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    row = {r["name"]: r for r in json.loads(listed.stdout)}[default_pack.name]
    assert row["sha256"] == default_pack.sha256
    # The file declares no license; its bytes match Qwen's official release, so the catalog establishes it.
    assert (row["license"], row["license_basis"], row["commercial_use"]) == ("Apache-2.0", "established", "permitted")
    assert "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF" in row["established"]
    shown = run_appliance("models", "show", default_pack.name)
    assert shown.returncode == 0 and "established" in shown.stdout and "evidence" in shown.stdout.lower()


def test_the_default_pack_answers_from_the_library_with_its_source(default_pack):
    added = run_appliance("kb", "add", str(DOCS / "water.md"), str(DOCS / "burns.html"))
    assert added.returncode == 0, added.stderr
    result = run_appliance("ask", "--json", "--max-tokens", "120",
                           "how many drops of bleach in a gallon of water to make it ok to drink")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"]["name"] == default_pack.name and data["model"]["sha256"] == default_pack.sha256
    assert data["answer"].strip() and not data.get("stopped")
    shown = " ".join([q["text"] for q in data["quotes"]] + [data["answer"]]).lower()
    assert "8 drops" in shown or "eight drops" in shown
    cited = [s for s in data["sources"] if s.get("cited")]
    assert cited and all(Path(s["path"]).name in {"water.md", "burns.html"} for s in data["sources"])
    assert any(Path(s["path"]).name == "water.md" for s in cited)


def test_a_fresh_home_answers_how_to_purify_water_from_the_field_guide(default_pack, monkeypatch, appliance_home):
    """Issue 28: nothing added, the shipped field guide registers itself; the answer quotes it, cites it, and says
    to boil."""
    from appliance.answering import field_guide

    monkeypatch.setenv("APPLIANCE_KB_FIELD_GUIDE", "on")
    result = run_appliance("ask", "--json", "--max-tokens", "120", "How do I purify water?")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"]["name"] == default_pack.name
    assert data["notice"] is None and data["emergency"] is None  # answered from the library, not the model alone
    guide = str(appliance_home / "kb" / "shipped" / "field-guide.md")
    cited = [s for s in data["sources"] if s["cited"]]
    assert cited and all(s["path"] == guide for s in cited)
    assert any("Boiling water" in s["section"] for s in cited)
    quoted = " ".join(q["text"] for q in data["quotes"]).lower()
    assert "boil" in quoted and "boil" in data["answer"].lower()
    listed = json.loads(run_appliance("kb", "list", "--json").stdout)
    assert [(r["path"], r["sha256"]) for r in listed] == [(guide, field_guide.SHA256)]


def test_the_same_bytes_from_any_path_establish_the_same_facts(default_pack, tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_PACKS_DIR", str(tmp_path / "none"))  # not as a pack: as a file from a friend's drive
    drive = tmp_path / "friends-drive"
    drive.mkdir()
    copy = drive / "model-from-a-friend.gguf"
    copy.write_bytes(default_pack.path(Path(sys.prefix)).read_bytes())
    imported = run_appliance("models", "import", str(copy), "--json")
    assert imported.returncode == 0, imported.stderr
    listed = {r["name"]: r for r in json.loads(run_appliance("models", "list", "--json").stdout)}
    row = listed["model-from-a-friend"]
    assert (row["license"], row["license_basis"]) == ("Apache-2.0", "established")
    assert "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF" in row["established"]


def test_the_engine_does_not_keep_the_default_models_embedding_table(default_pack):
    """Qwen2.5-Coder-0.5B has an output layer of its own: its 89 MiB embedding table is only looked up, so the
    engine process gives its pages back at load and after each answer (engine/mapped_pages.py). From a cold page
    cache, as after a boot: the file is read into 2 MiB folios, and a looked-up row brings its whole folio back."""
    from appliance.services import Services
    from tests.engine.test_mapped_pages import MESSAGES, resident_kib

    path = default_pack.path(Path(sys.prefix))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the file's cached pages no process maps
    finally:
        os.close(fd)
    services = Services.create()
    loaded = services.engine.load(default_pack.name)
    (start, end), = loaded.lookup_ranges
    assert end - start > 80 << 20
    inode = os.stat(loaded.files.paths[0]).st_ino
    pid = loaded.process.proc.pid
    rss, size = resident_kib(pid, inode)
    assert rss < size - (80 << 10)  # KiB
    for question in ("What is the boiling point of water at sea level?", "Name three ways to make water safe."):
        answer = loaded.generate(MESSAGES[:1] + [{"role": "user", "content": question}], 24, temperature=0.0)
        assert "".join(answer.tokens()).strip()
        assert loaded.token_count("a request after the answer") > 0  # the engine has finished with the answer
        assert resident_kib(pid, inode)[0] < size - (80 << 10)  # the rows it looked up were given back
    services.engine.unload()


def test_a_pack_registered_from_an_environment_since_removed_is_registered_again_where_it_is(default_pack,
                                                                                            appliance_home):
    """A data dir first used from another environment (a worktree's venv, an old install) points at a pack file
    that is gone: the next use registers the pack where it is installed now instead of failing on a missing file."""
    listed = run_appliance("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    library = Path(appliance_home) / "library.json"
    data = json.loads(library.read_text())
    assert PACK.name in data["models"]
    data["models"][PACK.name]["path"] = "/nonexistent/old-venv/share/appliance/packs/" + PACK.filename
    library.write_text(json.dumps(data))
    shown = run_appliance("models", "list", "--json")
    assert shown.returncode == 0, shown.stderr
    row = {r["name"]: r for r in json.loads(shown.stdout)}[PACK.name]
    assert Path(json.loads(library.read_text())["models"][PACK.name]["path"]) == PACK.path(Path(sys.prefix))
    assert row["sha256"] == PACK.sha256
