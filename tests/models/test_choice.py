"""The owner's choices as core operations: `models default NAME` (config.toml) and `models accept NAME` (consent
per file sha256, with the reasons shown), and the old places they used to live."""

from __future__ import annotations

import json

import pytest

from appliance.config import Config
from appliance.models.choice import Consents
from appliance.paths import Paths
from appliance.services import Services
from tests.models.fixtures import make_gguf


def test_models_default_writes_config_toml(tmp_path, invoke, appliance_home):
    config = appliance_home / "config.toml"
    assert invoke.json("models", "default") == {"name": "smollm2-135m-instruct", "configured": None}
    invoke("models", "import", str(make_gguf(tmp_path / "other.gguf", {"general.license": "mit"})))
    appliance_home.joinpath("config.toml").write_text("# my settings\n[model]\ncontext = 2048\n")
    result = invoke.json("models", "default", "other")
    assert result["name"] == "other" and result["config"] == str(config) and result["overridden_by"] is None
    assert Config.load(config).model.default == "other" and Config.load(config).model.context == 2048
    assert "# my settings" in config.read_text()  # written with tomlkit: the owner's comments survive
    assert invoke.json("models", "default")["name"] == "other"
    assert "other is now the default model" in invoke("models", "default", "other").stdout
    # The default is the model used when none is named.
    assert invoke.json("models", "verify")[0]["name"] == "other"


def test_models_default_refuses_what_cannot_answer(tmp_path, invoke, monkeypatch):
    invoke("models", "default", "no-such-model", code=1)
    lora = make_gguf(tmp_path / "style-lora.gguf", {"general.type": "adapter", "adapter.type": "lora"})
    invoke("models", "import", str(lora))
    assert "is a lora-adapter, not a model" in invoke("models", "default", "style-lora", code=2).stderr
    bad = make_gguf(tmp_path / "bad.gguf")
    invoke("models", "import", str(bad))
    with bad.open("r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\x01")
    invoke("models", "verify", "bad", code=3)
    assert "quarantined" in invoke("models", "default", "bad", code=1).stderr
    monkeypatch.setenv("APPLIANCE_MODEL_DEFAULT", "smollm2-135m-instruct")
    invoke("models", "import", str(make_gguf(tmp_path / "fine.gguf", {"general.license": "mit"})))
    said = invoke("models", "default", "fine")
    assert "APPLIANCE_MODEL_DEFAULT is set and wins over config.toml" in said.stderr


def test_models_accept_records_consent_for_the_file_and_its_reasons(tmp_path, invoke, appliance_home):
    path = make_gguf(tmp_path / "mystery.gguf")  # no license: needs consent
    row = invoke.json("models", "import", str(path))
    accepted = invoke.json("models", "accept", "mystery")
    assert accepted["recorded"] and accepted["sha256"] == row["sha256"] and accepted["by"] == "cli"
    assert accepted["reasons"] == ["Its license is UNKNOWN: nobody established under which terms you may use it."]
    stored = json.loads((appliance_home / "consents.json").read_text())
    assert stored["accepted"][row["sha256"]]["name"] == "mystery"
    library = Services.create().models
    consents = Consents(appliance_home)
    entry = library.resolve("mystery")
    assert consents.given(entry.info, entry.sha256)
    # A warning added later was never accepted: the owner is asked again, about that warning only.
    invoke("models", "note", "mystery", "writes gore readily")
    entry = library.resolve("mystery")
    assert consents.needed(entry.info, entry.sha256) == ["Content warning: your note: writes gore readily"]
    text = invoke("models", "accept", "mystery").stdout
    assert "accepted mystery" in text and "- Content warning: your note: writes gore readily" in text
    assert consents.given(library.resolve("mystery").info)
    # A model with nothing to accept says so and records nothing.
    clean = invoke.json("models", "accept", "smollm2-135m-instruct")
    assert clean == {"name": "smollm2-135m-instruct", "sha256": clean["sha256"], "reasons": [], "recorded": False}
    invoke("models", "accept", "no-such", code=1)


def test_consents_from_the_old_tui_state_file_still_count(tmp_path, appliance_home, invoke):
    row = invoke.json("models", "import", str(make_gguf(tmp_path / "old.gguf")))
    (appliance_home / "tui-state.json").write_text(json.dumps({"acknowledged": {row["sha256"]: "old"}}))
    entry = Services.create().models.resolve("old")
    assert Consents(appliance_home).given(entry.info, entry.sha256)
    (appliance_home / "tui-state.json").write_text("{ not json")
    assert not Consents(appliance_home).given(entry.info, entry.sha256)  # unreadable: asked again, never assumed


def test_an_old_library_json_default_moves_to_config(tmp_path, appliance_home, invoke):
    invoke("models", "import", str(make_gguf(tmp_path / "picked.gguf", {"general.license": "mit"})))
    library_json = appliance_home / "library.json"
    data = json.loads(library_json.read_text())
    data["default"] = "picked"  # what an older appliance could have written
    library_json.write_text(json.dumps(data))
    assert invoke.json("models", "default")["name"] == "picked"
    assert Config.load(Paths(appliance_home).config).model.default == "picked"
    invoke("models", "import", str(make_gguf(tmp_path / "next.gguf")))  # the next write drops the old key
    assert "default" not in json.loads(library_json.read_text())
    data = json.loads(library_json.read_text())
    data["default"] = None  # the usual old file: the key was there, and empty
    library_json.write_text(json.dumps(data))
    assert invoke.json("models", "default")["name"] == "picked"


@pytest.mark.slow
def test_ask_says_once_per_answer_what_the_owner_has_not_accepted_until_they_do(default_model_path, invoke,
                                                                                tmp_path):
    import shutil

    from tests.conftest import run_appliance

    copy = shutil.copy(default_model_path, tmp_path / "noted.gguf")  # a note is written beside the file it is about
    invoke("models", "import", str(copy), "--name", "noted")
    invoke("models", "note", "noted", "answers medical questions with confidence it has not earned")
    asked = run_appliance("ask", "--model", "noted", "--no-kb", "--max-tokens", "4", "hello")
    assert asked.returncode == 0, asked.stderr
    assert ("note: model noted: Content warning: your note: answers medical questions with confidence it has not "
            "earned (`appliance models accept noted` once you have read this)") in asked.stderr
    invoke("models", "accept", "noted")
    again = run_appliance("ask", "--model", "noted", "--no-kb", "--max-tokens", "4", "hello")
    assert again.returncode == 0 and "Content warning" not in again.stderr
