"""Optional Ed25519 signing, checked offline on every verification; a signed model whose signature fails is refused."""

from __future__ import annotations

import json
import shutil

import pytest

from appliance.models import signing
from tests.conftest import run_appliance
from tests.models.fixtures import make_gguf


def _signed(tmp_path, invoke):
    key = tmp_path / "keys" / "signing.pem"
    key.parent.mkdir()  # keygen makes no directories
    made = invoke.json("models", "keygen", str(key))
    assert (key.stat().st_mode & 0o777) == 0o600 and made["key_id"].startswith("ed25519:")
    path = make_gguf(tmp_path / "signed.gguf", {"general.license": "mit"})
    invoke("models", "import", str(path))
    pinned = invoke.json("models", "sign", "signed", "--key", str(key))
    assert pinned["key_id"] == made["key_id"]
    return key, path


def test_sign_then_every_check_verifies_the_signature(tmp_path, invoke):
    key, path = _signed(tmp_path, invoke)
    assert signing.signature_path(path).exists()
    row = {r["name"]: r for r in invoke.json("models", "list")}["signed"]
    assert row["signed"].startswith("ed25519:")
    assert invoke.json("models", "verify", "signed", "--key", str(key) + ".pub")[0]["result"] == "ok"
    history = invoke.json("models", "show", "signed")["record"]["verification"]
    assert history[-1]["detail"].endswith(f"signed {row['signed']}")


@pytest.mark.slow
def test_altered_signature_document_refuses_the_model(tmp_path, invoke):
    key, path = _signed(tmp_path, invoke)
    sig = signing.signature_path(path)
    document = json.loads(sig.read_text())
    document["payload"]["files"][0]["sha256"] = "0" * 64  # claims another file; the signature no longer fits
    sig.write_text(json.dumps(document))
    result = run_appliance("ask", "--model", "signed", "hello")
    assert result.returncode == 3 and "signature check failed" in result.stderr and "Traceback" not in result.stderr
    assert {r["name"]: r["state"] for r in invoke.json("models", "list")}["signed"] == "quarantined"


def test_resigned_by_another_key_or_missing_signature_is_refused(tmp_path, invoke):
    key, path = _signed(tmp_path, invoke)
    sig = signing.signature_path(path)
    saved = sig.read_bytes()
    other = tmp_path / "other.pem"
    invoke("models", "keygen", str(other))
    files = [{"name": path.name, "size": path.stat().st_size,
              "sha256": invoke.json("models", "show", "signed")["record"]["file"]["sha256"]}]
    signing.sign(other, signing.payload_for("signed", files), sig)  # a valid signature, by the wrong key
    refused = invoke("models", "verify", "signed", code=3)
    assert "not by the pinned key" in refused.stderr
    sig.write_bytes(saved)
    invoke("models", "import", str(path))  # re-import on purpose: pins the key found beside the file
    sig.unlink()
    missing = invoke("models", "verify", "signed", code=3)
    assert "signature document is missing" in missing.stderr


def test_a_signature_that_travels_is_checked_on_import(tmp_path, invoke, monkeypatch):
    key, path = _signed(tmp_path, invoke)
    drive = tmp_path / "drive"
    drive.mkdir()
    for name in (path.name, path.name + ".sig.json"):
        shutil.copyfile(tmp_path / name, drive / name)
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "home2"))
    row = invoke.json("models", "import", str(drive / path.name))
    assert row["signed"] and invoke.json("models", "verify", row["name"], "--key", str(key) + ".pub")
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "home3"))
    (drive / (path.name + ".manifest.json")).unlink()  # only the signature travels now
    with (drive / path.name).open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\xff\xff\xff\xff")
    refused = invoke("models", "import", str(drive / path.name), code=3)
    assert "the signed file hashes do not match signed.gguf" in refused.stderr
    unsigned = make_gguf(tmp_path / "plain.gguf")
    invoke("models", "import", str(unsigned))
    assert "not signed" in invoke("models", "verify", "plain", "--key", str(key) + ".pub", code=3).stderr
