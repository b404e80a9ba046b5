"""The engine process: a real token stream from the default model, and every way the native layer can fail.

Faults are injected with the test-only APPLIANCE_ENGINE_FAULT switch, read by the engine process alone: it kills
itself with a real signal (SIGSEGV, SIGKILL as the OOM killer would) at a named stage, or hangs.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest

from appliance.errors import EngineCrashed, IntegrityError
from appliance.services import Services
from tests.conftest import run_appliance

QUESTION = "What is the boiling point of water at sea level?"
MESSAGES = [{"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": QUESTION}]


def engine_children(services: Services) -> list[int]:
    loaded = services.engine._loaded
    return [loaded.process.proc.pid] if loaded and loaded.process else []


@pytest.mark.slow
def test_the_engine_answers_with_a_real_token_stream():
    """If llama.cpp cannot run on this CPU, this is the test that fails (and only it), with a clear reason."""
    services = Services.create()
    loaded = services.engine.load()
    assert loaded.process.proc.pid != os.getpid()
    assert loaded.mode == "normal" and loaded.context > 0 and loaded.n_params > 100_000_000
    generation = loaded.generate(MESSAGES, 24, temperature=0.0)
    pieces = list(generation.tokens())
    assert len(pieces) > 1 and "".join(pieces) == generation.text and generation.text.strip()
    assert generation.timings.tokens >= len(pieces)
    assert generation.finish_reason in ("length", "stop")
    # Greedy decoding is deterministic: the same question gives the same text.
    again = loaded.generate(MESSAGES, 24, temperature=0.0)
    assert "".join(again.tokens()) == generation.text
    services.engine.unload()


@pytest.mark.slow
def test_prefix_cache_a_follow_up_processes_fewer_prompt_tokens():
    services = Services.create()
    loaded = services.engine.load()
    first = loaded.generate(MESSAGES, 8, temperature=0.0)
    list(first.tokens())
    follow_up = MESSAGES + [{"role": "assistant", "content": first.text},
                            {"role": "user", "content": "And at the top of a high mountain?"}]
    second = loaded.generate(follow_up, 8, temperature=0.0)
    list(second.tokens())
    assert first.timings.cached_tokens == 0
    assert second.timings.prompt_tokens > first.timings.prompt_tokens
    # The system prompt and the first exchange are already in the KV cache: only the new turn is processed.
    assert second.timings.cached_tokens >= first.timings.prompt_tokens - 1
    assert second.timings.prompt_tokens - second.timings.cached_tokens < first.timings.prompt_tokens
    # A different question still shares the system prompt.
    other = loaded.generate([MESSAGES[0], {"role": "user", "content": "How do I splint an arm?"}], 4, temperature=0.0)
    list(other.tokens())
    system_tokens = loaded.prompt_tokens([MESSAGES[0]])
    assert other.timings.cached_tokens >= system_tokens - 4
    services.engine.unload()


@pytest.mark.slow
def test_other_threads_are_set_in_the_running_engine_and_the_conversation_stays(monkeypatch):
    """Unplugged or plugged in, a question asks for other threads: llama.cpp's context takes them in place, so the
    model file is not hashed again and a follow-up still reuses what the engine holds."""
    services = Services.create()
    loaded = services.engine.load(threads=2)
    first = loaded.generate(MESSAGES, 8, temperature=0.0)
    list(first.tokens())
    pid = loaded.process.proc.pid

    def no_second_verification(*_args, **_kwargs):
        raise AssertionError("the model's files were opened and hashed again")

    monkeypatch.setattr(services.engine.models, "open_verified", no_second_verification)
    again = services.engine.load(threads=1)
    assert again is loaded and again.process.proc.pid == pid and again.threads == 1
    follow_up = MESSAGES + [{"role": "assistant", "content": first.text},
                            {"role": "user", "content": "And at the top of a high mountain?"}]
    second = again.generate(follow_up, 8, temperature=0.0)
    assert "".join(second.tokens()).strip()
    assert second.timings.cached_tokens >= first.timings.prompt_tokens - 1
    assert services.engine.load(threads=2).threads == 2 and loaded.process.proc.pid == pid
    services.engine.unload()


@pytest.mark.slow
def test_cancel_from_another_thread_stops_the_engine_promptly():
    services = Services.create()
    loaded = services.engine.load()
    generation = loaded.generate([{"role": "user", "content": "Write a long story about a lighthouse keeper."}], 400)
    received = []
    for piece in generation.tokens():
        received.append(piece)
        if len(received) == 3:
            stopper = threading.Thread(target=generation.stop)
            stopper.start()
            stopper.join()
    assert generation.cancelled and generation.finish_reason == "cancelled"
    assert len(received) == 3  # nothing shown after the cancel
    # The engine stopped at its next token check, far from the 400 asked for (the latency, a few ms, is measured
    # in scripts/bench; a wall-clock bound here would only measure how busy the machine is).
    assert generation.timings.tokens < 100
    # The engine is immediately usable again.
    follow = loaded.generate(MESSAGES, 4, temperature=0.0)
    assert "".join(follow.tokens()).strip()
    services.engine.unload()


@pytest.mark.slow
def test_cancel_during_a_long_prompt_aborts_prompt_processing():
    services = Services.create()
    loaded = services.engine.load()
    long_text = " ".join(["The river carried silt past the old mill and the bridge."] * 250)
    generation = loaded.generate([{"role": "user", "content": long_text + "\nSummarize."}], 32)
    threading.Timer(0.15, generation.stop).start()
    pieces = list(generation.tokens())
    assert generation.cancelled and pieces == []
    assert generation.timings.tokens == 0
    # The cache holds only what was really processed: the next prompt is still answered correctly.
    again = loaded.generate(MESSAGES, 8, temperature=0.0)
    assert "".join(again.tokens()).strip()
    services.engine.unload()


# -- faults ----------------------------------------------------------------------------------------------------
def ask_with_fault(fault: str, *args: str, extra_env: dict | None = None):
    env = {"APPLIANCE_ENGINE_FAULT": fault, **(extra_env or {})}
    return run_appliance("ask", "--no-kb", "--max-tokens", "24", *args, QUESTION, env=env, timeout=300)


def one_clear_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.mark.slow
def test_crash_while_loading_falls_back_to_safe_mode_and_remembers(appliance_home):
    result = ask_with_fault("segv:load:normal", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"].strip()
    assert "SIGSEGV while loading" in result.stderr and "safe mode" in result.stderr
    state = json.loads((appliance_home / "engine-state.json").read_text())
    [(key, remembered)] = state["modes"].items()
    assert remembered["mode"] == "safe" and "SIGSEGV" in remembered["reason"]
    # The next start goes straight to safe mode: the normal-mode crash is not hit again, nothing is said again.
    again = ask_with_fault("segv:load:normal", "--json")
    assert again.returncode == 0 and "safe mode" not in again.stderr
    # doctor reports the mode; --reset-engine forgets it.
    doctor = run_appliance("doctor", "--json", env={"APPLIANCE_ENGINE_FAULT": "segv:load:normal"})
    engine = next(c for c in json.loads(doctor.stdout) if c["check"] == "engine")
    assert engine["result"] == "ok" and "safe mode" in engine["detail"]
    run_appliance("doctor", "--reset-engine", env={"APPLIANCE_ENGINE_FAULT": "segv:load:normal"})
    state = json.loads((appliance_home / "engine-state.json").read_text())
    assert list(state["modes"].values())[0]["mode"] == "safe"  # re-learned after the reset, by crashing again


@pytest.mark.slow
def test_crash_before_the_first_token_retries_in_safe_mode():
    result = ask_with_fault("segv:prefill:normal")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "SIGSEGV while answering with" in result.stderr and "safe mode" in result.stderr


@pytest.mark.slow
def test_crash_of_the_avx512_build_falls_back_to_its_avx2_build_and_remembers(appliance_home):
    """On a CPU the set-up gives the AVX-512 build (this CI machine), its avx2 fallback is installed beside it and
    takes over when the primary build dies in both its modes, as on a hypervisor that hides the AVX-512 state."""
    from appliance.engine.variants import Build, Cpu
    from tests.engine.test_variants import setup_choice

    chosen = setup_choice(Cpu.detect().flags)
    build = Build.installed()
    if chosen != "x86_64-avx512":
        pytest.skip(f"this CPU gets {chosen}, which has no fallback build (the AVX-512 one does)")
    assert build.primary == chosen and build.variant("fallback") == "x86_64-avx2", build.variants
    result = ask_with_fault("segv:load:primary", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["answer"].strip()
    assert answer["engine"] == {"variant": "x86_64-avx2", "mode": "fallback"}
    assert "SIGSEGV while loading" in result.stderr and "fallback build x86_64-avx2" in result.stderr
    state = json.loads((appliance_home / "engine-state.json").read_text())
    assert list(state["modes"].values())[0]["mode"] == "fallback"
    doctor = run_appliance("doctor", "--json", env={"APPLIANCE_ENGINE_FAULT": "segv:load:primary"})
    engine = next(c for c in json.loads(doctor.stdout) if c["check"] == "engine")
    assert engine["result"] == "ok" and "fallback mode; llama.cpp build x86_64-avx2" in engine["detail"]
    assert "the fallback of x86_64-avx512" in engine["detail"] and "SIGSEGV while loading" in engine["detail"]


@pytest.mark.slow
def test_the_engine_runs_the_build_the_set_up_chose_for_this_cpu(appliance_home):
    """`ask --json` and `doctor` name the variant chosen from this CPU's flags: x86_64-avx512 on this CI machine."""
    from appliance.engine.variants import Cpu
    from tests.engine.test_variants import setup_choice

    chosen = setup_choice(Cpu.detect().flags)
    result = run_appliance("ask", "--no-kb", "--json", "--max-tokens", "8", QUESTION)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["engine"] == {"variant": chosen, "mode": "normal"}
    doctor = run_appliance("doctor", "--json")
    engine = next(c for c in json.loads(doctor.stdout) if c["check"] == "engine")
    assert engine["result"] == "ok", engine
    assert f"normal mode; llama.cpp build {chosen} (the set-up's choice for this CPU" in engine["detail"]
    features = engine["detail"].split(" using ")[1].split(";")[0].split()  # what llama.cpp says it was built with
    assert ("AVX512" in features and "AVX512_VNNI" in features) == (chosen == "x86_64-avx512"), features
    assert "AMX_INT8" not in features and "AVX512_BF16" not in features


def test_crash_in_normal_and_safe_mode_falls_back_to_the_baseline_build(appliance_home):
    from appliance.engine.variants import Build

    if not Build.installed().baseline_lib():
        pytest.skip("no baseline build installed (./scripts/build-engine x86_64-baseline adds it)")
    result = ask_with_fault("segv:load:nonbaseline", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"].strip()
    assert "baseline build" in result.stderr
    state = json.loads((appliance_home / "engine-state.json").read_text())
    assert list(state["modes"].values())[0]["mode"] == "baseline"


@pytest.mark.slow
def test_crash_in_every_mode_is_one_clear_error_with_exit_1(appliance_home):
    result = ask_with_fault("segv:load")
    assert result.returncode == 1  # not 139: the appliance itself did not crash
    line = one_clear_line(result)
    assert "smollm2-135m-instruct" in line and "SIGSEGV" in line and "llama.log" in line
    assert result.stdout == ""
    assert Services.create().history.conversations() == []


@pytest.mark.slow
def test_crash_mid_answer_ends_that_answer_with_one_line_and_keeps_history(appliance_home):
    assert run_appliance("ask", "--no-kb", "--max-tokens", "8", "Say hello.").returncode == 0
    result = ask_with_fault("segv:token:3")
    assert result.returncode == 1
    line = one_clear_line(result)
    assert "SIGSEGV" in line and "while answering with model 'smollm2-135m-instruct'" in line
    conversations = Services.create().history.conversations()
    assert len(conversations) == 1 and conversations[0]["title"] == "Say hello."
    # The next question starts a fresh engine process and is answered.
    assert run_appliance("ask", "--no-kb", "--max-tokens", "8", QUESTION).returncode == 0


@pytest.mark.slow
def test_oom_kill_is_named_as_such():
    result = ask_with_fault("kill:token:2")
    assert result.returncode == 1
    line = one_clear_line(result)
    assert "SIGKILL" in line and "memory" in line


@pytest.mark.slow
def test_hung_engine_is_stopped_after_the_timeout():
    started = time.monotonic()
    result = ask_with_fault("hang:prefill", extra_env={"APPLIANCE_ENGINE_HANG_TIMEOUT_S": "3"})
    assert result.returncode == 1
    line = one_clear_line(result)
    assert "stopped responding for 3 s" in line
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_engine_process_gets_the_offline_guards_and_dies_with_its_parent():
    services = Services.create()
    loaded = services.engine.load()
    pid = loaded.process.proc.pid
    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    assert b"HF_HUB_OFFLINE=1" in environ and b"ORT_DISABLE_TELEMETRY=1" in environ
    assert os.getpgid(pid) != os.getpgid(0)  # its own session: Ctrl+C in the terminal is the parent's
    services.engine.unload()
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


# -- verified is what is loaded ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_file_swapped_after_verification_is_not_what_gets_loaded(tmp_path, default_model_path):
    """The engine loads the descriptors that were hashed, not the path: swap the file right after the check."""
    from tests.tui.conftest import write_tiny_gguf

    model = tmp_path / "model.gguf"
    shutil.copyfile(default_model_path, model)
    services = Services.create()
    services.models.register(model, name="swapme")
    hostile = write_tiny_gguf(tmp_path / "hostile.gguf", name="hostile")
    library = services.models
    original = library.open_verified

    def verify_then_swap(entry, progress=None, public_key=None):
        files = original(entry, progress, public_key)
        os.replace(hostile, model)  # the path now names a different, unverified file
        return files

    library.open_verified = verify_then_swap
    loaded = services.engine.load("swapme")
    assert loaded.n_params > 100_000_000  # the verified SmolLM2, not the one-tensor file now at that path
    generation = loaded.generate(MESSAGES, 8, temperature=0.0)
    assert "".join(generation.tokens()).strip()
    services.engine.unload()


@pytest.mark.slow
def test_a_file_that_fails_verification_never_reaches_the_engine(tmp_path, default_model_path, appliance_home):
    services = Services.create()
    model = tmp_path / "flipped.gguf"
    shutil.copyfile(default_model_path, model)
    services.models.register(model, name="flipped")
    with model.open("r+b") as handle:
        handle.seek(model.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IntegrityError):
        services.engine.load("flipped")
    assert services.engine._loaded is None
    log = appliance_home / "logs" / "llama.log"
    assert "llama_model_load" not in (log.read_text() if log.exists() else "")  # no load request was ever sent


@pytest.mark.slow
def test_no_llama_cpp_text_reaches_the_parents_stdout_or_stderr(appliance_home):
    result = run_appliance("ask", "--no-kb", "--max-tokens", "8", QUESTION)
    assert result.returncode == 0
    for stream in (result.stdout, result.stderr):
        for marker in ("llama_", "ggml", "load_tensors", "print_info", "sched_"):
            assert marker not in stream
    assert "llama_model_loader" in (appliance_home / "logs" / "llama.log").read_text()


def test_engine_crash_error_is_an_appliance_error():
    assert issubclass(EngineCrashed, Exception)
    assert EngineCrashed("x", signal_name="SIGSEGV").exit_code == 1
