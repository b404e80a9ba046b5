"""Hostile input at the edges: every invocation ends on its own, with at most three lines on stderr, no traceback,
and the documented exit code; nothing from a file reaches the terminal raw; settings are typed and range-checked.
"""

from __future__ import annotations

import json
import math
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.sanitize import clean, clean_line
from tests.conftest import run_appliance

CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


# -- the sanitizer ---------------------------------------------------------------------------------------------
def test_escape_sequences_become_visible():
    assert clean("\x1b]0;OWNED\x07title") == "\\x1b]0;OWNED\\x07title"
    assert clean("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert clean("\x1b]52;c;aGk=\x07") == "\\x1b]52;c;aGk=\\x07"  # OSC 52 would write the clipboard
    assert clean("line one\nline\ttwo") == "line one\nline\ttwo"
    assert clean_line("name\nwith\ttab") == "name\\x0awith\\x09tab"
    assert clean("\u202eevil") == "\\u202eevil"  # right-to-left override
    assert clean("\x9b2J") == "\\x9b2J"  # C1 CSI


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_sanitized_text_never_holds_a_control_character(text):
    assert not CONTROL.search(clean(text))
    assert not CONTROL.search(clean_line(text)) and "\n" not in clean_line(text) and "\t" not in clean_line(text)
    if not CONTROL.search(text):
        assert clean(text) == text  # ordinary text is untouched


# -- settings ----------------------------------------------------------------------------------------------------
BAD_SETTINGS = [
    ("MODEL_CONTEXT", "4096.7", "expected a whole number"),
    ("MODEL_CONTEXT", "10", "out of range"),
    ("MODEL_THREADS", "true", "expected a whole number"),
    ("MODEL_THREADS", "10000", "out of range"),
    ("MODEL_THREADS", "100000", "out of range"),
    ("MODEL_TEMPERATURE", "nan", "finite"),
    ("MODEL_TEMPERATURE", "inf", "finite"),
    ("MODEL_TEMPERATURE", "-50", "out of range"),
    ("MODEL_MAX_TOKENS", "-1", "out of range"),
    ("ENGINE_MODE", "turbo", "expected one of"),
    ("ENGINE_HANG_TIMEOUT_S", "0", "out of range"),
    ("HARDWARE_RAM_LIMIT_MB", "lots", "expected a whole number"),
]


@pytest.mark.parametrize("key,value,reason", BAD_SETTINGS)
def test_bad_settings_name_the_key(tmp_path, monkeypatch, key, value, reason):
    monkeypatch.setenv(f"APPLIANCE_{key}", value)
    with pytest.raises(ApplianceError, match=re.escape(f"APPLIANCE_{key}") + ".*" + reason):
        Config.load(tmp_path / "none.toml")


def test_bad_settings_in_the_file_name_the_key(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[model]\ncontext = 4096.7\n")
    with pytest.raises(ApplianceError, match=r"\[model\] context: expected a whole number"):
        Config.load(path)
    path.write_text("[model]\nthreads = true\n")
    with pytest.raises(ApplianceError, match="threads: expected a whole number"):
        Config.load(path)
    path.write_text("[model]\ntemperature = nan\n")
    with pytest.raises(ApplianceError, match="temperature: expected a finite number"):
        Config.load(path)
    # Found by the property test below: Unicode digits that str.isdigit() accepts and int() refuses, and two signs.
    for text in ("²", "٣", "+-5"):
        path.write_text(f'[model]\ncontext = "{text}"\n')
        with pytest.raises(ApplianceError, match=r"\[model\] context: expected a whole number"):
            Config.load(path)


@settings(max_examples=200, deadline=None)
@given(section=st.sampled_from(["model", "hardware", "engine"]),
       key=st.sampled_from(["context", "threads", "max_tokens", "temperature", "seed", "ram_limit_mb", "mode",
                            "hang_timeout_s", "default"]),
       value=st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=True), st.booleans()))
def test_the_settings_loader_accepts_or_refuses_with_a_clear_error(tmp_path_factory, section, key, value):
    import tomlkit

    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    document = tomlkit.document()
    document[section] = {key: value}
    try:
        path.write_text(tomlkit.dumps(document))
    except Exception:  # noqa: BLE001 - a value TOML cannot hold; not the loader's business
        return
    try:
        config = Config.load(path)
    except ApplianceError as exc:
        assert key in str(exc) or "TOML" in str(exc)
        return
    for value in (config.model.context, config.model.threads, config.model.max_tokens, config.model.seed):
        assert isinstance(value, int) and not isinstance(value, bool)
    assert math.isfinite(config.model.temperature) and 0 <= config.model.temperature <= 2
    assert config.model.context >= 256 and config.model.max_tokens >= 1


# -- hostile invocations ---------------------------------------------------------------------------------------
def _bounded(result, code: int) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 3, result.stderr


def test_a_config_file_that_is_a_directory(appliance_home):
    (appliance_home / "config.toml").mkdir(parents=True)
    _bounded(run_appliance("ask", "--no-kb", "hi", timeout=60), 1)


def test_a_garbage_history_file(appliance_home):
    appliance_home.mkdir(parents=True, exist_ok=True)
    (appliance_home / "history.sqlite").write_bytes(os.urandom(8192))
    result = run_appliance("history", "list", timeout=60)
    _bounded(result, 1)
    assert "history database" in result.stderr


INVOCATIONS = [
    (["history", "show", "99999999999999999999999"], 2),
    (["history", "show", "-5"], 2),
    (["history", "show", "12345"], 1),
    (["ask", "--threads", "100000", "hi"], 2),
    (["ask", "--continue", "abc", "question", "--no-kb"], 2),
    (["ask", "   "], 2),
    (["ask", "--model", "no-such-model", "hi"], 1),
]


@pytest.mark.parametrize("args,code", INVOCATIONS)
def test_hostile_invocations_end_with_one_clear_line(args, code):
    _bounded(run_appliance(*args, timeout=60), code)


@pytest.mark.slow
def test_a_question_with_bytes_that_are_not_utf8(appliance_home):
    result = run_appliance("ask", "--json", "--no-kb", "--no-history", "--max-tokens", "4", input="caf\xe9 \xff?")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["question"]


@pytest.mark.slow
def test_a_question_longer_than_the_context(appliance_home):
    result = run_appliance("ask", "--no-kb", "water " * 3000, env={"APPLIANCE_MODEL_CONTEXT": "512"}, timeout=120)
    _bounded(result, 2)
    assert re.search(r"the question is \d+ tokens; model '.+' reads \d+", result.stderr)


def test_an_unexpected_failure_is_one_line_and_a_report(appliance_home, tmp_path):
    """A bug (here: an unreadable, undecodable history path type) must not print a traceback."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys\n"
        "import appliance.cli.root as cli\n"
        "def boom(*a, **k):\n"
        "    raise RuntimeError('simulated bug')\n"
        "cli.Context.services = property(boom)\n"
        "sys.argv = ['appliance', 'history', 'list']\n"
        "cli.main()\n")
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, APPLIANCE_HOME=str(appliance_home)))
    _bounded(result, 1)
    assert "unexpected failure (RuntimeError: simulated bug)" in result.stderr
    report = re.search(r"the full report is in (\S+)", result.stderr).group(1)
    assert "Traceback" in open(report).read() and "simulated bug" in open(report).read()
