"""CycloneDX 1.6 export, validated against the 1.6 JSON schema bundled with cyclonedx-python-lib."""

from __future__ import annotations

import json

import pytest

from appliance.models import bom
from appliance.services import Services
from tests.models.fixtures import make_gguf
from tests.models.test_library import LINEAGE


def _schema_errors(document: dict) -> str | None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    return None if error is None else str(error)


def _model(document: dict) -> dict:
    (component,) = document["components"]
    return component


def _props(component: dict) -> dict:
    return {p["name"]: p["value"] for p in component.get("properties", [])}


def test_default_model_bom_from_the_cli(tmp_path, invoke):
    out = tmp_path / "smollm2.cdx.json"
    invoke("models", "bom", "smollm2-135m-instruct", "--format", "cyclonedx", "-o", str(out))
    document = json.loads(out.read_text())
    assert _schema_errors(document) is None
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    model = _model(document)
    assert model["type"] == "machine-learning-model"
    assert model["hashes"] == [{"alg": "SHA-256",
                                "content": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"}]
    assert {"license": {"id": "Apache-2.0", "acknowledgement": "concluded"}} in model["licenses"]
    assert {"license": {"id": "Apache-2.0", "acknowledgement": "declared"}} in model["licenses"]
    assert model["modelCard"]["modelParameters"]["architectureFamily"] == "llama"
    assert "claim" in model["modelCard"]["considerations"]["technicalLimitations"][0]
    assert _props(model)["appliance:license.commercial_use"] == "permitted"
    assert json.loads(invoke("models", "bom", "smollm2-135m-instruct").stdout)["components"][0]["name"] == model["name"]


def test_lineage_conflict_and_hub_source(tmp_path):
    library = Services.create().models
    path = make_gguf(tmp_path / "merged.gguf", dict(LINEAGE, **{"general.license.name": "cc-by-nc-4.0"}))
    source = {"kind": "hub", "endpoint": "https://huggingface.co", "repo_id": "acme/merged-GGUF",
              "commit": "a" * 40, "url": "https://huggingface.co/acme/merged-GGUF/resolve/" + "a" * 40 + "/merged.gguf",
              "lfs_sha256": "b" * 64}
    entry = library.register(path, name="merged", source=source,
                             hub_card=({"base_model": "meta-llama/Llama-3.1-8B-Instruct",
                                        "base_model_relation": "finetune"}, ["not-for-all-audiences"]))
    document = bom.export(entry)
    assert _schema_errors(document) is None
    model = _model(document)
    assert model["purl"] == "pkg:huggingface/acme/merged-GGUF@" + "a" * 40
    # Conflicting declarations: both declared, nothing concluded; the status says so.
    assert all(item["license"]["acknowledgement"] == "declared" for item in model["licenses"])
    assert {"license": {"name": "LicenseRef-llama3.1-community", "acknowledgement": "declared"}} in model["licenses"]
    assert {"license": {"id": "CC-BY-NC-4.0", "acknowledgement": "declared"}} in model["licenses"]
    assert _props(model)["appliance:license.status"] == "conflict"
    ancestors = model["pedigree"]["ancestors"]
    assert ancestors[0]["name"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert _props(ancestors[0])["appliance:relation"] == "finetune"
    assert [a["name"] for a in ancestors[1:3]] == ["Llama 3.1 8B Instruct", "Some Merge"]
    assert _props(ancestors[1])["appliance:relation"] == "unknown"
    ethical = model["modelCard"]["considerations"]["ethicalConsiderations"]
    assert ethical[0]["name"] == "hub-tag: not-for-all-audiences"


def test_unknown_license_and_split_set(tmp_path):
    library = Services.create().models
    make_gguf(tmp_path / "parts.gguf", tensors=2, split_max_tensors=1)
    entry = library.register(tmp_path / "parts-00001-of-00002.gguf")
    document = bom.export(entry)
    assert _schema_errors(document) is None
    model = _model(document)
    assert "licenses" not in model  # nothing declared, nothing concluded: never a guess
    assert _props(model)["appliance:license.status"] == "unknown"
    assert [c["name"] for c in model["components"]] == ["parts-00001-of-00002.gguf", "parts-00002-of-00002.gguf"]


def test_the_schema_check_can_fail(tmp_path):
    document = bom.build(Services.create().models.resolve())
    document["components"][0]["hashes"][0]["alg"] = "SHA256"
    assert _schema_errors(document) is not None
    with pytest.raises(ValueError, match="not valid CycloneDX 1.6"):
        bom.validate(document)


def test_the_bom_can_include_the_knowledge_sources_with_their_hashes_and_licenses(tmp_path, invoke):
    import hashlib

    from tests.kb import fixtures

    wiki = fixtures.make_zim(tmp_path / "wiki.zim", {"Water.html": ("Water", [("Boiling", "Boil water a minute.")])})
    epub = fixtures.make_epub(tmp_path / "repair.epub", [("Knots", "The bowline makes a fixed loop.")])
    services = Services.create()
    services.kb.add([wiki, epub])
    out = tmp_path / "with-kb.cdx.json"
    invoke("models", "bom", "smollm2-135m-instruct", "--with-kb", "-o", str(out))
    document = json.loads(out.read_text())
    assert _schema_errors(document) is None
    data = {c["name"]: c for c in document["components"] if c["type"] == "data"}
    assert set(data) == {"wiki.zim", "repair.epub"}
    assert data["wiki.zim"]["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(wiki.read_bytes()).hexdigest()}]
    assert "licenses" not in data["wiki.zim"]  # the archive states none: none is invented
    props = _props(data["wiki.zim"])
    assert props["appliance:kb.license"] == "unknown (the file states none)"
    assert props["appliance:kb.publisher"] == "tests" and props["appliance:kb.sha256.taken_by"] == "registration"
    assert props["appliance:kb.origin.kind"] == "path"
    assert data["repair.epub"]["hashes"][0]["content"] == hashlib.sha256(epub.read_bytes()).hexdigest()
    plain = tmp_path / "plain.cdx.json"
    invoke("models", "bom", "smollm2-135m-instruct", "-o", str(plain))
    assert [c["type"] for c in json.loads(plain.read_text())["components"]] == ["machine-learning-model"]


def test_a_stated_license_is_a_declared_one():
    stated = {"License": {"value": "CC-BY-SA-4.0", "from": "the ZIM's metadata (M/License)"}}
    component = bom.knowledge_component(1, {"path": "/m/wikimed.zim", "kind": "zim", "mode": "registered",
                                            "record": {"sha256": "ab" * 32, "facts": stated}})
    assert component["licenses"] == [{"license": {"id": "CC-BY-SA-4.0", "acknowledgement": "declared"}}]
