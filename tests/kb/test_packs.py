"""Knowledge packs: export a real library, import it into another one without embedding, refuse damaged packs."""

from __future__ import annotations

import json

import pytest

from kb import packs
from tests.conftest import run_appliance


@pytest.fixture
def source_kb(make_kb, tmp_path, library):
    knowledge = make_kb(tmp_path / "source-kb")
    report = knowledge.add([library])
    assert report.added == 5 and not report.failed
    return knowledge


def test_export_then_import_gives_the_same_answers_without_embedding(source_kb, make_kb, tmp_path, library):
    pack = tmp_path / "manuals.kbpack"
    exported = packs.export(source_kb, pack)
    assert exported.documents == 5 and exported.chunks == source_kb.stats()["chunks"]
    assert sorted(p.name for p in pack.iterdir()) == ["documents.jsonl", "pack.json", "vectors.f16"]
    assert not pack.with_name(pack.name + ".partial").exists()
    manifest = packs.verify(pack)
    assert manifest["chunks"] == exported.chunks and manifest["embedder"] == packs.embedder_files(source_kb)

    target = make_kb(tmp_path / "target-kb")
    imported = packs.import_pack(target, pack)
    assert (imported.documents, imported.chunks, imported.skipped) == (5, exported.chunks, 0)
    assert target._embedder is None  # nothing was embedded: the embedder was never even loaded
    assert target.vectors.count() == exported.chunks  # the target's own vector index, built from the pack
    assert [d["path"] for d in target.documents()] == [d["path"] for d in source_kb.documents()]
    assert target.verify()["ok"]

    question = "is it ok to run a generator in my garage"
    want = source_kb.search(question, k=3)
    got = target.search(question, k=3)
    assert [(h.path, h.heading, h.page) for h in got] == [(h.path, h.heading, h.page) for h in want]
    assert got[0].path == str(library / "power.pdf")

    again = packs.import_pack(target, pack)
    assert (again.documents, again.skipped) == (0, 5)
    assert target.stats()["chunks"] == exported.chunks


@pytest.mark.parametrize("damage", ["flip-vectors", "flip-documents", "truncate-vectors", "missing-documents",
                                    "flip-manifest"])
def test_a_damaged_pack_is_refused_before_anything_is_written(source_kb, make_kb, tmp_path, damage):
    pack = tmp_path / "pack"
    packs.export(source_kb, pack)
    name = {"flip-vectors": "vectors.f16", "flip-documents": "documents.jsonl", "truncate-vectors": "vectors.f16",
            "missing-documents": "documents.jsonl", "flip-manifest": "pack.json"}[damage]
    path = pack / name
    data = bytearray(path.read_bytes())
    if damage.startswith("flip"):
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage.startswith("truncate"):
        path.write_bytes(bytes(data[: len(data) - 100]))
    else:
        path.unlink()
    target = make_kb(tmp_path / "target-kb")
    with pytest.raises(packs.PackDamaged) as caught:
        packs.import_pack(target, pack)
    assert name in str(caught.value)
    assert target.stats()["documents"] == 0


def test_export_refuses_a_folder_that_is_not_empty(source_kb, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(packs.KBUsageError):
        packs.export(source_kb, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_cli_export_import_and_exit_codes(library, tmp_path):
    assert run_appliance("kb", "add", str(library)).returncode == 0
    pack = tmp_path / "cli.kbpack"
    done = run_appliance("kb", "export", "--json", str(pack))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["documents"] == 5
    assert run_appliance("kb", "export", str(pack)).returncode == 2  # not a new folder

    other = {"APPLIANCE_HOME": str(tmp_path / "other-home")}
    done = run_appliance("kb", "import", "--json", str(pack), env=other)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["documents"] == 5
    listing = json.loads(run_appliance("kb", "list", "--json", env=other).stdout)
    assert {row["path"] for row in listing} == {row["path"] for row in
                                                 json.loads(run_appliance("kb", "list", "--json").stdout)}

    vectors = pack / "vectors.f16"
    vectors.write_bytes(vectors.read_bytes()[:-1])
    third = {"APPLIANCE_HOME": str(tmp_path / "third-home")}
    refused = run_appliance("kb", "import", str(pack), env=third)
    assert refused.returncode == 3 and "vectors.f16" in refused.stderr and "Traceback" not in refused.stderr
    assert run_appliance("kb", "import", str(tmp_path), env=third).returncode == 2  # not a pack
