"""Offline by default: the single online() door, `appliance doctor`, and the library commands under `unshare -n`
with strace watching for any AF_INET/AF_INET6 connect."""

from __future__ import annotations

import json
import os

import pytest

from appliance.system import online
from tests.airgap import run_offline
from tests.conftest import run_appliance
from tests.models.fixtures import make_gguf
from tests.models.hubserver import HubServer, HubState


def test_the_door_lifts_offline_mode_for_its_block_only():
    import huggingface_hub.constants as hub_constants

    assert online.is_offline() and hub_constants.HF_HUB_OFFLINE is True
    with online.online("test"):
        assert os.environ["HF_HUB_OFFLINE"] == "0" and hub_constants.HF_HUB_OFFLINE is False
        assert not online.is_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hub_constants.HF_HUB_OFFLINE is True
    with pytest.raises(RuntimeError):
        with online.online("test"):
            raise RuntimeError("boom")
    assert online.is_offline() and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_inside_the_door_huggingface_hub_really_goes_online(tmp_path, monkeypatch):
    from appliance.models import hub

    state = HubState("acme/x-GGUF", "x.gguf", b"GGUF" + b"\0" * 60)
    with HubServer(state) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        with online.online("test"):
            meta = hub.fetch_info("acme/x-GGUF", "x.gguf", None)
    assert meta.sha256 == state.sha256 and meta.size == 64
    assert len(state.requests) == 1 and state.requests[0][1].startswith("/api/models/acme/x-GGUF")


@pytest.mark.slow
def test_doctor_offline_under_strace(tmp_path):
    traced = run_offline("doctor", "--json", trace_file=tmp_path / "trace")
    assert traced.result.returncode == 0, traced.result.stderr
    checks = {c["check"]: c for c in json.loads(traced.result.stdout)}
    assert checks["environment guards"]["result"] == "ok"
    assert checks["huggingface_hub offline"]["result"] == "ok"
    assert checks["model smollm2-135m-instruct"]["result"] == "ok"
    assert checks["no network used"]["result"] == "ok"
    assert "execve(" in traced.trace and traced.inet_attempts == []


def test_library_commands_make_no_inet_connection(tmp_path):
    path = make_gguf(tmp_path / "offline.gguf", {"general.license": "mit"})
    for args in (("models", "import", str(path), "--json"), ("models", "verify", "--all"),
                 ("models", "bom", "offline")):
        traced = run_offline(*args, trace_file=tmp_path / f"trace-{args[1]}")
        assert traced.result.returncode == 0, (args, traced.result.stderr)
        assert "execve(" in traced.trace and traced.inet_attempts == [], args


@pytest.mark.slow
def test_doctor_reports_a_tampered_model_with_exit_3_and_skips_an_unplugged_one(tmp_path, invoke):
    bad = make_gguf(tmp_path / "bad.gguf")
    (tmp_path / "away").mkdir()
    away = make_gguf(tmp_path / "away" / "away.gguf")
    invoke("models", "import", str(bad))
    invoke("models", "import", str(away))
    with bad.open("r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\x01")
    (tmp_path / "away").rename(tmp_path / "gone")
    result = run_appliance("doctor")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "FAIL  model bad:" in result.stdout and str(bad) in result.stdout
    assert "skip  model away: offline" in result.stdout
    assert "ok    no network used" in result.stdout
    assert "1 check(s) failed: model bad" in result.stderr
