"""License cases: known, unknown, conflicting, user-asserted; each from real GGUF files and from the table."""

from __future__ import annotations

import pytest

from appliance.models import licenses, manifest
from tests.models.fixtures import make_gguf


@pytest.mark.parametrize("value, license_id, family, commercial", [
    ("apache-2.0", "Apache-2.0", "permissive", "permitted"),
    ("MIT", "MIT", "permissive", "permitted"),
    ("bsd-3-clause", "BSD-3-Clause", "bsd", "permitted"),
    ("bsd-2-clause", "BSD-2-Clause", "bsd", "permitted"),
    ("cc-by-4.0", "CC-BY-4.0", "cc-by", "permitted"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0", "cc-by-sa", "permitted"),
    ("cc-by-nc-4.0", "CC-BY-NC-4.0", "cc-by-nc", "restricted"),
    ("cc-by-nc-sa-4.0", "CC-BY-NC-SA-4.0", "cc-by-nc", "restricted"),
    ("openrail", "LicenseRef-OpenRAIL", "openrail", "conditional"),
    ("creativeml-openrail-m", "LicenseRef-CreativeML-OpenRAIL-M", "openrail", "conditional"),
    ("bigscience-openrail-m", "LicenseRef-BigScience-OpenRAIL-M", "openrail", "conditional"),
    ("llama2", "LicenseRef-llama2-community", "llama", "conditional"),
    ("llama3", "LicenseRef-llama3-community", "llama", "conditional"),
    ("llama3.1", "LicenseRef-llama3.1-community", "llama", "conditional"),
    ("llama3.2", "LicenseRef-llama3.2-community", "llama", "conditional"),
    ("llama3.3", "LicenseRef-llama3.3-community", "llama", "conditional"),
    ("gemma", "LicenseRef-gemma", "gemma", "conditional"),
    ("qwen", "LicenseRef-qwen", "qwen", "conditional"),
    ("qwen-research", "LicenseRef-qwen-research", "qwen", "restricted"),
    ("deepseek", "LicenseRef-deepseek", "deepseek", "conditional"),
    ("other", "NOASSERTION", "other", "unknown"),
    ("unknown", "NOASSERTION", "unknown", "unknown"),
    ("some-vendor-eula", "NOASSERTION", "unknown", "unknown"),
    ("apache", "NOASSERTION", "unknown", "unknown"),  # close to a known id is still not a known id
])
def test_license_table(value, license_id, family, commercial):
    info = licenses.lookup(value)
    assert (info.id, info.family, info.commercial_use) == (license_id, family, commercial)


def _lic(*pairs):
    return manifest.license_section([manifest.declare(value, origin) for value, origin in pairs])


def test_verdicts_from_declarations():
    assert _lic(("mit", "a"), ("MIT License", "b"))["status"] == "confirmed"
    other = _lic(("other", "hub:card.license"), ("llama3.1", "hub:card.license_name"))
    assert (other["status"], other["id"], other["commercial_use"]) == (
        "confirmed", "LicenseRef-llama3.1-community", "conditional")
    unknown = _lic(("other", "gguf:general.license"))
    assert (unknown["status"], unknown["id"], unknown["commercial_use"]) == ("unknown", "NOASSERTION", "unknown")
    assert _lic()["status"] == "unknown" and _lic()["family"] == "unknown"
    # An unreadable value next to a readable one: we cannot tell they agree, so it is a conflict, not a guess.
    mixed = _lic(("mit", "gguf:general.license"), ("ACME Model License v2", "hub:card.license_name"))
    assert mixed["status"] == "conflict" and mixed["commercial_use"] == "unknown"
    assert mixed["conflicts"] == ["ACME Model License v2", "MIT"]


def test_known_license_from_gguf(tmp_path, invoke):
    path = make_gguf(tmp_path / "nc.gguf", {"general.license": "cc-by-nc-4.0"})
    row = invoke.json("models", "import", str(path))
    assert (row["license"], row["license_family"], row["commercial_use"], row["license_status"]) == (
        "CC-BY-NC-4.0", "cc-by-nc", "restricted", "confirmed")
    shown = invoke.json("models", "show", "nc")["record"]["license"]
    assert shown["declared"] == [{"value": "cc-by-nc-4.0", "from": "gguf:general.license", "id": "CC-BY-NC-4.0"}]
    listed = {r["name"]: r for r in invoke.json("models", "list")}
    assert listed["nc"]["commercial_use"] == "restricted"


def test_unknown_license_stays_unknown(tmp_path, invoke):
    bare = make_gguf(tmp_path / "bare.gguf")
    custom = make_gguf(tmp_path / "custom.gguf", {"general.license": "Proprietary, ask ACME"})
    for path in (bare, custom):
        row = invoke.json("models", "import", str(path))
        assert (row["license"], row["license_label"], row["commercial_use"]) == ("NOASSERTION", "UNKNOWN", "unknown")
    record = invoke.json("models", "show", "custom")["record"]
    assert record["license"]["declared"][0]["value"] == "Proprietary, ask ACME"  # the raw value is kept
    assert "UNKNOWN" in invoke("models", "list").stdout


def test_conflicting_declarations_are_shown_side_by_side(tmp_path, invoke):
    path = make_gguf(tmp_path / "torn.gguf", {"general.license": "apache-2.0", "general.license.name": "cc-by-nc-4.0",
                                               "general.license.link": "https://example.invalid/LICENSE"})
    row = invoke.json("models", "import", str(path))
    assert row["license_status"] == "conflict" and row["commercial_use"] == "unknown"
    assert row["license_label"] == "CONFLICT: Apache-2.0 vs CC-BY-NC-4.0"
    text = invoke("models", "show", "torn").stdout
    assert "'apache-2.0'" in text and "'cc-by-nc-4.0'" in text
    assert "gguf:general.license " in text and "gguf:general.license.name" in text
    assert "https://example.invalid/LICENSE" in text


def test_user_asserted_license_is_marked_as_theirs(tmp_path, invoke, appliance_home):
    path = make_gguf(tmp_path / "mine.gguf")
    invoke("models", "import", str(path))
    lic = invoke.json("models", "license", "mine", "mit", "--note", "vendor README")
    assert (lic["id"], lic["status"], lic["declared_status"], lic["commercial_use"]) == (
        "MIT", "user-asserted", "unknown", "permitted")
    assert lic["user_asserted"]["by"] == "user" and lic["user_asserted"]["note"] == "vendor README"
    assert {r["name"]: r for r in invoke.json("models", "list")}["mine"]["license_label"] == "MIT (yours)"
    # The assertion travels with the file: it is in the sidecar too.
    sidecar = manifest.read(manifest.sidecar_path(path))
    assert sidecar["license"]["user_asserted"]["id"] == "MIT"
    # An id the table does not know is refused (usage error), not recorded as a guess.
    bad = invoke("models", "license", "mine", "free-for-all", code=2)
    assert "not a license id this appliance knows" in bad.stderr
    cleared = invoke.json("models", "license", "mine", "--clear")
    assert (cleared["status"], cleared["id"], cleared["user_asserted"]) == ("unknown", "NOASSERTION", None)
