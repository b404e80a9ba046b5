"""The typed view of a model record: schema v1, v2 and v3 files read into one shape, damaged fields read as
unknown (never guessed), and the one license policy (label, basis, commercial use, consent reasons)."""

from __future__ import annotations

import copy
import json

import pytest

from appliance.models import manifest
from appliance.models.record import ModelRecord
from appliance.services import Services
from tests.models.fixtures import make_gguf


@pytest.fixture
def stored(tmp_path) -> dict:
    """A real record (schema 3) of a real GGUF file, as the library wrote it."""
    entry = Services.create().models.register(make_gguf(tmp_path / "typed.gguf", {"general.license": "mit",
                                                                                    "general.file_type": 15}))
    return json.loads(entry.manifest_path.read_text())


def _as_v2(record: dict) -> dict:
    old = copy.deepcopy(record)
    old["schema_version"] = 2
    del old["established"], old["license"]["established"]
    return old


def _as_v1(record: dict) -> dict:
    old = _as_v2(record)
    old["schema_version"] = 1
    del old["file"]["role"], old["file"]["shard_set"], old["signature"], old["content_warnings"]
    old["license"] = {"declared": [{"value": "mit", "from": "gguf:general.license"}], "id": "MIT",
                      "family": "permissive", "commercial_use": "permitted", "status": "confirmed"}
    return old


@pytest.mark.parametrize("downgrade", [lambda r: r, _as_v2, _as_v1], ids=["v3", "v2", "v1"])
def test_the_typed_record_reads_every_schema_version(stored, downgrade):
    data = downgrade(stored)
    view = ModelRecord.from_dict(data)
    assert view.schema_version == 3 and view.name == "typed"
    assert (view.file.name, view.file.role, view.file.size, view.file.sha256) == (
        "typed.gguf", "model", stored["file"]["size"], stored["file"]["sha256"])
    lic = view.license
    assert (lic.id, lic.label, lic.basis, lic.commercial, lic.status) == ("MIT", "MIT", "declared", "yes", "confirmed")
    assert [(d.value, d.origin, d.id) for d in lic.declared] == [("mit", "gguf:general.license", "MIT")]
    assert lic.established is None and lic.user_asserted is None and view.established is None
    assert view.lineage.quantization == "Q4_K_M" and "claim" in view.lineage.claimed_by
    assert view.consent_reasons() == []
    assert data == downgrade(stored)  # reading never changes the document it was given


def test_a_v1_file_on_disk_is_upgraded_when_read(stored, tmp_path):
    path = tmp_path / "old.manifest.json"
    path.write_text(json.dumps(_as_v1(stored)))
    record = manifest.read(path)
    assert record["schema_version"] == 3 and record["file"]["role"] == "model" and record["established"] is None
    assert record["license"]["declared"][0]["id"] == "MIT" and record["license"]["user_asserted"] is None
    path.write_text(json.dumps(dict(stored, schema_version=99)))
    from appliance.errors import ApplianceError

    with pytest.raises(ApplianceError, match="newer appliance"):
        manifest.read(path)


@pytest.mark.parametrize("damage", [
    lambda r: r.update(license="apache-2.0"),
    lambda r: r["license"].update(status="made-up", commercial_use="free!", conflicts="x", declared=["mit"]),
    lambda r: r.update(content_warnings=[None, "plain text", {"kind": "hub-tag", "value": "nsfw"}]),
    lambda r: r.update(verification={"at": "never"}, lineage=None, gguf=[1, 2], established="yes"),
    lambda r: r["file"].update(size="big", shard_set={"files": [None, {"name": 3}]}),
])
def test_damaged_fields_read_as_unknown_never_as_a_guess(stored, damage):
    data = copy.deepcopy(stored)
    damage(data)
    view = ModelRecord.from_dict(data)  # never raises
    assert view.license.label in ("MIT", "UNKNOWN")
    if view.license.label == "UNKNOWN":
        assert view.license.commercial == "unknown" and view.consent_reasons()[0].startswith("Its license is UNKNOWN")


def _view(declared=(), established=None, asserted=None, warnings=()) -> ModelRecord:
    lic = manifest.license_section([{"value": v, "from": "test"} for v in declared],
                                   manifest.user_assertion(asserted) if asserted else None, [], established)
    return ModelRecord.from_dict({"schema": manifest.SCHEMA, "schema_version": 3, "file": {}, "license": lic,
                                  "lineage": {}, "content_warnings": list(warnings)})


def test_one_license_policy():
    by_bytes = {"id": "Apache-2.0", "text": "https://example.invalid/LICENSE", "from": "catalog: test"}
    cases = [
        (_view(["apache-2.0"]), "Apache-2.0", "declared", "yes"),
        (_view([]), "UNKNOWN", "none", "unknown"),
        (_view(["some-custom-thing"]), "UNKNOWN", "none", "unknown"),
        (_view(["apache-2.0", "mit"]), "CONFLICT: Apache-2.0 vs MIT", "conflict", "unknown"),
        (_view([], by_bytes), "Apache-2.0", "established", "yes"),
        (_view(["other"], by_bytes), "Apache-2.0", "established", "yes"),  # 'other' asserts nothing
        (_view(["apache-2.0"], by_bytes), "Apache-2.0", "established", "yes"),
        (_view(["mit"], by_bytes), "CONFLICT: Apache-2.0 vs MIT", "conflict", "unknown"),
        (_view(["ACME EULA"], by_bytes), "CONFLICT: ACME EULA vs Apache-2.0", "conflict", "unknown"),
        (_view(["cc-by-nc-4.0"]), "CC-BY-NC-4.0", "declared", "no"),
        (_view(["llama3.1"]), "LicenseRef-llama3.1-community", "declared", "conditions"),
        (_view([], None, "mit"), "MIT (yours)", "yours", "yes"),
        (_view(["mit"], by_bytes, "mit"), "MIT (yours)", "yours", "yes"),
    ]
    for view, label, basis, commercial in cases:
        assert (view.license.label, view.license.basis, view.license.commercial) == (label, basis, commercial)


def test_consent_reasons():
    assert _view(["apache-2.0"]).consent_reasons() == []
    assert _view([], {"id": "Apache-2.0", "from": "catalog"}).consent_reasons() == []
    assert "UNKNOWN" in _view([]).consent_reasons()[0]
    assert "conflicting" in _view(["apache-2.0", "mit"]).consent_reasons()[0]
    torn = _view(["mit"], {"id": "Apache-2.0", "from": "catalog"}).consent_reasons()[0]
    assert "mit" in torn and "Apache-2.0 (established by its bytes)" in torn
    assert "restricts use" in _view(["cc-by-nc-4.0"]).consent_reasons()[0]
    assert "asserted by you" in _view([], None, "cc-by-nc-4.0").consent_reasons()[0]
    assert _view([], None, "mit").consent_reasons() == []
    warned = _view(["apache-2.0"], warnings=[{"kind": "hub-tag", "value": "not-for-all-audiences", "from": "hub",
                                              "text": "tagged not-for-all-audiences on the hub"}])
    assert warned.consent_reasons() == ["Content warning: tagged not-for-all-audiences on the hub"]
