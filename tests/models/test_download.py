"""`models download` against a local stand-in for the hub on 127.0.0.1: resume after a cut link, the sha256 check
against the LFS sha256 captured before the download, the hub card in the record, clear failures when offline."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from tests.airgap import run_offline
from tests.conftest import require_tool, run_appliance
from tests.models.fixtures import make_gguf
from tests.models.hubserver import COMMIT, HubServer, HubState

REPO, FILE = "acme/tiny-GGUF", "tiny.Q8_0.gguf"
CARD = {"license": "other", "license_name": "qwen-research", "license_link": "https://example.invalid/LICENSE",
        "base_model": "Qwen/Qwen2.5-0.5B-Instruct", "base_model_relation": "quantized"}
TAGS = ["gguf", "not-for-all-audiences", "base_model:quantized:Qwen/Qwen2.5-0.5B-Instruct", "license:other"]


@pytest.fixture
def hub(tmp_path):
    (tmp_path / "src").mkdir()
    content = make_gguf(tmp_path / "src" / FILE, tensors=60, template=None).read_bytes()
    state = HubState(REPO, FILE, content, card=dict(CARD), tags=list(TAGS))
    with HubServer(state) as server:
        yield server


def _env(server, tmp_path):
    return {"HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "hf-home"), "NO_PROXY": "127.0.0.1"}


def test_cut_link_resumes_and_the_record_has_the_hub_facts(hub, tmp_path, appliance_home):
    state = hub.state
    cut = 4096
    state.cut_first_at = cut
    trace = tmp_path / "trace"
    result = run_appliance("models", "download", REPO, FILE, "--json", env=_env(hub, tmp_path),
                           prefix=[require_tool("strace"), "-f", "-qq", "-e", "trace=connect", "-o", str(trace)])
    assert result.returncode == 0, result.stderr
    # Resumed: the second request asked for the rest, and the bytes sent add up to the file once, not twice.
    files = state.file_requests()
    assert [(r[2], r[3]) for r in files] == [(None, cut), (f"bytes={cut}-", len(state.content) - cut)]
    assert sum(r[3] for r in files) == len(state.content)
    # Pinned to the commit the revision pointed at when the sha256 was captured.
    assert all(f"/resolve/{COMMIT}/" in r[1] for r in files)
    # The only address ever contacted was the local stand-in.
    connects = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
    assert connects and all('inet_addr("127.0.0.1")' in line for line in connects), connects
    row = json.loads(result.stdout)
    path = appliance_home / "models" / FILE
    assert row["path"] == str(path) and path.read_bytes() == state.content
    assert not list((appliance_home / "models").glob("*.partial"))
    record = json.loads(run_appliance("models", "show", row["name"], "--json").stdout)["record"]
    source = record["source"]
    assert (source["kind"], source["repo_id"], source["commit"], source["lfs_sha256"]) == (
        "hub", REPO, COMMIT, hashlib.sha256(state.content).hexdigest())
    assert source["card"]["license_name"] == "qwen-research"
    lic = record["license"]
    assert (lic["id"], lic["commercial_use"], lic["status"]) == ("LicenseRef-qwen-research", "restricted", "confirmed")
    declared = {"value": "qwen-research", "from": "hub:card.license_name", "id": "LicenseRef-qwen-research"}
    assert declared in lic["declared"]
    assert lic["links"] == [{"value": "https://example.invalid/LICENSE", "from": "hub:card.license_link"}]
    assert record["lineage"]["base_models"][0] == {
        "name": "Qwen/Qwen2.5-0.5B-Instruct", "repo_url": "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct",
        "relation": "quantized", "relation_from": "hub:card.base_model_relation", "from": "hub:card.base_model"}
    assert [w["value"] for w in record["content_warnings"]] == ["not-for-all-audiences"]
    assert record["verification"][-1]["result"] == "ok"


def test_partial_file_survives_a_failed_run_and_the_next_run_resumes(hub, tmp_path, appliance_home):
    state = hub.state
    state.cut_first_at, state.fail_after_first = 3000, 503
    first = run_appliance("models", "download", REPO, FILE, env=_env(hub, tmp_path))
    assert first.returncode == 1 and "Traceback" not in first.stderr
    assert "3000 of" in first.stderr and "run the same command again to resume" in first.stderr
    partials = list((appliance_home / "models").glob(f"{FILE}.*.partial"))
    assert len(partials) == 1 and partials[0].read_bytes() == state.content[:3000]  # kept, not deleted
    state.fail_after_first = None
    sent_before = len(state.file_requests())
    second = run_appliance("models", "download", REPO, FILE, env=_env(hub, tmp_path))
    assert second.returncode == 0, second.stderr
    resumed = state.file_requests()[sent_before:]
    assert [(r[2], r[3]) for r in resumed] == [("bytes=3000-", len(state.content) - 3000)]
    assert (appliance_home / "models" / FILE).read_bytes() == state.content


def test_a_file_that_does_not_match_the_lfs_sha256_is_refused(hub, tmp_path, appliance_home):
    hub.state.advertised_sha256 = "0" * 64
    result = run_appliance("models", "download", REPO, FILE, env=_env(hub, tmp_path))
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "does not match the hub's LFS sha256 " + "0" * 64 in result.stderr
    models = appliance_home / "models"
    assert not (models / FILE).exists() and (models / f"{FILE}.rejected").exists()
    assert "tiny" not in run_appliance("models", "list").stdout


def test_unknown_repo_and_file_are_clear_errors(hub, tmp_path):
    missing_file = run_appliance("models", "download", REPO, "nope.gguf", env=_env(hub, tmp_path))
    assert missing_file.returncode == 1 and f"has no file 'nope.gguf'; its GGUF files: {FILE}" in missing_file.stderr
    missing_repo = run_appliance("models", "download", "acme/none", FILE, env=_env(hub, tmp_path))
    assert missing_repo.returncode == 1 and "no such repository" in missing_repo.stderr
    usage = run_appliance("models", "download", REPO, "../etc/passwd", env=_env(hub, tmp_path))
    assert usage.returncode == 2 and "a .gguf file" in usage.stderr


def test_offline_download_fails_with_a_clear_message(tmp_path):
    # No network at all (a fresh network namespace), against the real default endpoint.
    traced = run_offline("models", "download", REPO, FILE, trace_file=tmp_path / "trace")
    result = traced.result
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.search(r"cannot reach https://huggingface\.co .*needs a network connection", result.stderr)
    assert result.stderr.count("\n") == 1


def test_nothing_reaches_the_hub_outside_the_door(hub):
    from huggingface_hub.errors import OfflineModeIsEnabled

    from appliance.models import hub as hubmod

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(OfflineModeIsEnabled):
            hubmod.fetch_info(REPO, FILE, None)
    assert hub.state.requests == []
