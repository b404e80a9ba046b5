"""The prompt's fixed start (chat template + system message) read once and kept on disk: a second `appliance ask`
(a new process) reads fewer prompt tokens and gives the same answer; a state whose bytes do not match their hash,
or one whose load was cut short (a crash inside llama.cpp), is never given to llama.cpp. Real SmolLM2, real
processes, real files."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.conftest import run_appliance

QUESTION = "How long should I boil water to make it safe to drink?"


def ask() -> dict:
    result = run_appliance("ask", "--json", "--no-history", "--no-kb", "--max-tokens", "12", QUESTION)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def states(home) -> list:
    return sorted((home / "cache" / "prompt-prefix").glob("*.state"))


@pytest.mark.slow
def test_a_second_process_reads_only_what_follows_the_kept_start_and_answers_the_same(appliance_home):
    first = ask()
    assert first["timings"]["cached_tokens"] == 0
    [state] = states(appliance_home)
    meta = json.loads(state.with_suffix(".json").read_text())
    assert 0 < meta["tokens"] < first["timings"]["prompt_tokens"]

    second = ask()
    assert second["timings"]["cached_tokens"] == meta["tokens"]  # the template and system message came from disk
    assert second["timings"]["prompt_tokens"] == first["timings"]["prompt_tokens"]
    assert second["answer"] == first["answer"]  # the same numbers as reading it


@pytest.mark.slow
def test_a_damaged_or_half_loaded_state_is_never_given_to_llama_cpp(appliance_home):
    first = ask()
    [state] = states(appliance_home)
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))

    damaged = ask()
    assert damaged["timings"]["cached_tokens"] == 0  # its hash did not match: the prefix was read again
    assert damaged["answer"] == first["answer"]
    [state] = states(appliance_home)
    assert hashlib.sha256(state.read_bytes()).hexdigest() == json.loads(state.with_suffix(".json").read_text())[
        "sha256"]  # written afresh

    # A load that never finished (the engine process died inside llama.cpp) leaves `.loading`: not offered again.
    os.replace(state, state.with_suffix(".loading"))
    crashed = ask()
    assert crashed["timings"]["cached_tokens"] == 0 and crashed["answer"] == first["answer"]
    assert not list((appliance_home / "cache" / "prompt-prefix").glob("*.loading"))
    [state] = states(appliance_home)
    assert state.with_suffix(".json").is_file()
    assert ask()["timings"]["cached_tokens"] > 0  # the fresh state is used again
