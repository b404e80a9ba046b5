"""The library on real files: lineage, roles, split sets, drives that come and go, sidecars, quarantine, remove."""

from __future__ import annotations

import json
import shutil

import pytest

from appliance.models import manifest
from appliance.services import Services
from tests.conftest import run_appliance
from tests.models.fixtures import make_gguf

LINEAGE = {
    "general.license": "llama3.1",
    "general.base_model.count": 2,
    "general.base_model.0.name": "Llama 3.1 8B Instruct",
    "general.base_model.0.organization": "Meta Llama",
    "general.base_model.0.repo_url": "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct",
    "general.base_model.1.name": "Some Merge",
    "general.source.url": "https://huggingface.co/acme/merged-8b",
    "general.file_type": 15,
    "general.quantized_by": "bartowski",
}


def _flip(path, offset=-8):
    with path.open("r+b") as handle:
        handle.seek(offset, 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_lineage_is_recorded_as_the_converters_claim(tmp_path, invoke):
    path = make_gguf(tmp_path / "merged-8b.Q4_K_M.gguf", LINEAGE)
    invoke("models", "import", str(path), "--name", "merged")
    record = invoke.json("models", "show", "merged")["record"]
    lineage = record["lineage"]
    assert lineage["quantization"] == "Q4_K_M" and lineage["quantized_by"] == "bartowski"
    assert "claim" in lineage["claimed_by"] and "claim" in record["gguf"]["claimed_by"]
    assert lineage["base_models"] == [
        {"name": "Llama 3.1 8B Instruct", "organization": "Meta Llama",
         "repo_url": "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct", "relation": "unknown",
         "from": "gguf:general.base_model.0"},
        {"name": "Some Merge", "relation": "unknown", "from": "gguf:general.base_model.1"},
        {"repo_url": "https://huggingface.co/acme/merged-8b", "name": None, "relation": "converted-from",
         "from": "gguf:general.source"},
    ]
    assert record["license"]["commercial_use"] == "conditional"
    assert record["gguf"]["chat_template_sha256"] and len(record["gguf"]["chat_template_sha256"]) == 64
    text = invoke("models", "show", "merged").stdout
    assert "Llama 3.1 8B Instruct  relation unknown" in text


def test_roles_adapter_and_projector_are_never_loaded_as_models(tmp_path, invoke):
    lora = make_gguf(tmp_path / "style-lora.gguf", {"general.type": "adapter", "adapter.type": "lora"})
    proj = make_gguf(tmp_path / "mmproj.gguf", {"general.license": "apache-2.0"}, arch="clip")
    assert invoke.json("models", "import", str(lora))["role"] == "lora-adapter"
    assert invoke.json("models", "import", str(proj))["role"] == "projector"
    result = run_appliance("ask", "--model", "style-lora", "hello")
    assert result.returncode == 1 and "is a lora-adapter, not a model" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_split_set_is_one_model_and_every_shard_is_checked(tmp_path, invoke):
    make_gguf(tmp_path / "big.gguf", {"general.license": "mit"}, tensors=3, split_max_tensors=1)
    second = tmp_path / "big-00002-of-00003.gguf"
    row = invoke.json("models", "import", str(second))  # any shard names the set
    assert (row["name"], row["shards"], row["path"]) == ("big", 3, str(tmp_path / "big-00001-of-00003.gguf"))
    shards = invoke.json("models", "show", "big")["record"]["file"]["shard_set"]
    assert [f["name"] for f in shards["files"]] == [f"big-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert shards["total_size"] == sum((tmp_path / f["name"]).stat().st_size for f in shards["files"])
    assert invoke.json("models", "verify", "big")[0]["result"] == "ok"
    _flip(tmp_path / "big-00003-of-00003.gguf")
    result = run_appliance("ask", "--model", "big", "hello")  # the real command refuses before llama.cpp
    assert result.returncode == 3 and "big-00003-of-00003.gguf" in result.stderr and "sha256 differs" in result.stderr
    (tmp_path / "big-00002-of-00003.gguf").unlink()
    other = tmp_path / "other"
    other.mkdir()
    make_gguf(other / "cut.gguf", tensors=2, split_max_tensors=1)
    (other / "cut-00002-of-00002.gguf").unlink()
    missing = invoke("models", "import", str(other / "cut-00001-of-00002.gguf"), code=1)
    assert "split set is incomplete; missing cut-00002-of-00002.gguf" in missing.stderr


def test_in_place_model_on_a_drive_that_disappears(tmp_path, invoke):
    drive = tmp_path / "usb"
    drive.mkdir()
    path = make_gguf(drive / "travel.gguf", {"general.license": "apache-2.0"})
    row = invoke.json("models", "import", str(path), "--in-place")
    assert row["mode"] == "in-place" and row["location"] == str(drive) and row["state"] == "verified"
    assert manifest.sidecar_path(path).exists()  # the record travels with the file
    unplugged = tmp_path / "usb-unplugged"
    drive.rename(unplugged)
    listing = invoke("models", "list")  # not an error
    assert "offline" in next(line for line in listing.stdout.splitlines() if line.startswith("travel"))
    assert {r["name"]: r["state"] for r in invoke.json("models", "list")}["travel"] == "offline"
    assert invoke.json("models", "show", "travel")["record"]["license"]["id"] == "Apache-2.0"
    assert {r["name"]: r["result"] for r in invoke.json("models", "verify", "--all")}["travel"] == "offline"
    gone = invoke("models", "verify", "travel", code=3)
    assert str(path) in gone.stdout + gone.stderr and "missing" in gone.stderr
    asked = run_appliance("ask", "--model", "travel", "hello")
    assert asked.returncode == 3 and "is missing (drive unplugged or file moved)" in asked.stderr
    unplugged.rename(drive)  # plugged back in: usable again, never quarantined for being away
    assert invoke.json("models", "verify", "travel")[0]["result"] == "ok"
    assert {r["name"]: r["state"] for r in invoke.json("models", "list")}["travel"] == "verified"


def test_mismatch_quarantines_until_reimported_on_purpose(tmp_path, invoke):
    path = make_gguf(tmp_path / "q.gguf")
    invoke("models", "import", str(path))
    _flip(path)
    failed = invoke("models", "verify", "q", code=3)
    assert str(path) in failed.stderr and "sha256 differs" in failed.stderr
    assert {r["name"]: r["state"] for r in invoke.json("models", "list")}["q"] == "quarantined"
    again = invoke("models", "verify", "q", code=3)
    assert "quarantined" in again.stderr
    history = invoke.json("models", "show", "q")["record"]["verification"]
    assert history[-1]["result"] == "mismatch" and history[0]["by"] == "import"
    row = invoke.json("models", "import", str(path))  # on purpose: a fresh record of the file as it is now
    assert row["state"] == "verified" and row["sha256"] != history[0]["detail"]
    assert invoke.json("models", "verify", "q")[0]["result"] == "ok"


def test_sidecar_travels_to_another_machine_and_must_match(tmp_path, invoke, appliance_home, monkeypatch):
    path = make_gguf(tmp_path / "carry.gguf")
    invoke("models", "import", str(path))
    invoke("models", "license", "carry", "cc-by-4.0", "--note", "paper's appendix")
    invoke("models", "note", "carry", "trained on forum posts")
    # Another machine: a fresh data dir, the file and its sidecar copied to a new drive.
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "other-home"))
    drive = tmp_path / "drive2"
    drive.mkdir()
    for name in ("carry.gguf", "carry.gguf.manifest.json"):
        shutil.copyfile(tmp_path / name, drive / name)
    record = invoke.json("models", "show", invoke.json("models", "import", str(drive / "carry.gguf"))["name"])["record"]
    assert record["license"]["user_asserted"]["id"] == "CC-BY-4.0"
    assert record["content_warnings"][0]["value"] == "trained on forum posts"
    assert record["source"]["record_from"] == "sidecar carry.gguf.manifest.json"
    assert record["verification"][-1]["detail"].startswith("matches the sidecar")
    # A file that is not the one its sidecar describes is refused (exit 3), naming the file.
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "third-home"))
    _flip(drive / "carry.gguf")
    refused = invoke("models", "import", str(drive / "carry.gguf"), code=3)
    assert str(drive / "carry.gguf") in refused.stderr
    assert "does not match the record that travels with it" in refused.stderr


def test_copy_import_and_remove(tmp_path, invoke, appliance_home):
    path = make_gguf(tmp_path / "copied.gguf")
    row = invoke.json("models", "import", str(path), "--copy")
    copy = appliance_home / "models" / "copied.gguf"
    assert row["mode"] == "copy" and row["path"] == str(copy) and copy.read_bytes() == path.read_bytes()
    invoke("models", "remove", "copied")
    assert copy.exists() and "copied" not in [r["name"] for r in invoke.json("models", "list")]
    invoke("models", "import", str(copy), "--name", "again")
    result = invoke.json("models", "remove", "again", "--delete-file")
    assert result["file_deleted"] and not copy.exists() and not manifest.sidecar_path(copy).exists()
    assert path.exists()  # the original was never touched
    refused = invoke("models", "remove", "smollm2-135m-instruct", code=2)
    assert "is a model pack, part of the installation" in refused.stderr
    invoke("models", "remove", "no-such", code=1)


def test_names_do_not_collide(tmp_path, invoke):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    invoke("models", "import", str(make_gguf(a / "same.gguf")))
    clash = invoke("models", "import", str(make_gguf(b / "same.gguf", {"general.license": "mit"})), code=1)
    assert "already in the library" in clash.stderr
    assert invoke.json("models", "import", str(b / "same.gguf"), "--name", "same-b")["name"] == "same-b"
    invoke("models", "import", str(a / "same.gguf"), "--name", "smollm2-135m-instruct", code=2)


def test_a_version_1_record_is_read_and_upgraded(tmp_path, appliance_home):
    services = Services.create()
    entry = services.models.register(make_gguf(tmp_path / "old.gguf", {"general.license": "mit"}))
    old = json.loads(entry.manifest_path.read_text())
    old["schema_version"] = 1
    del old["file"]["role"], old["file"]["shard_set"], old["signature"]
    old["license"] = {"declared": [{"value": "mit", "from": "gguf:general.license"}], "id": "MIT",
                      "family": "permissive", "commercial_use": "permitted", "status": "confirmed"}
    entry.manifest_path.write_text(json.dumps(old))
    record = manifest.read(entry.manifest_path)
    assert record["schema_version"] == 3 and record["file"]["role"] == "model" and record["established"] is None
    assert record["license"]["declared"][0]["id"] == "MIT" and record["license"]["user_asserted"] is None
    future = dict(old, schema_version=99)
    entry.manifest_path.write_text(json.dumps(future))
    import pytest

    from appliance.errors import ApplianceError

    with pytest.raises(ApplianceError, match="newer appliance"):
        manifest.read(entry.manifest_path)
