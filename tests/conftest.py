"""Shared fixtures. Every test gets its own empty APPLIANCE_HOME and answers with SmolLM2 from its wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

import appliance  # noqa: F401 - its environment guards first
from appliance.models import packs

BIN = Path(sys.executable).parent
LOCK_OFF = ("APPLIANCE_AIRGAP_LOCK", "off")


@pytest.fixture(autouse=True)
def appliance_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("APPLIANCE_HOME", str(home))
    for key in list(os.environ):
        if key.startswith("APPLIANCE_") and key != "APPLIANCE_HOME":
            monkeypatch.delenv(key)
    # Tests that only need an engine answer with SmolLM2 (fast): the split packs (the default Qwen pack among them)
    # are hidden behind an empty packs folder. tests/test_default_pack.py takes the real default pack.
    empty = tmp_path / "no-packs"
    empty.mkdir()
    monkeypatch.setenv("APPLIANCE_PACKS_DIR", str(empty))
    # The kernel network lock can never be lifted: never in the pytest process (the CLI runs in it through
    # CliRunner). run_appliance drops this, so the real `appliance` in a subprocess runs locked, as for a user.
    monkeypatch.setenv(LOCK_OFF[0], LOCK_OFF[1])
    # The shipped field guide is registered in a library on its first use; tests of the library itself start
    # from an empty one. tests/answering/test_field_guide.py (and the end-to-end answers) switch it back on.
    monkeypatch.setenv("APPLIANCE_KB_FIELD_GUIDE", "off")
    # The machine's own power supply stays out of the tests (a laptop on battery would shorten every answer and
    # add a line to the TUI's status line): no supplies listed, so the power source is unknown and the low-power
    # profile off. The power tests build their own tree.
    no_power = tmp_path / "no-power-supply"
    no_power.mkdir()
    monkeypatch.setenv("APPLIANCE_POWER_SUPPLY_DIR", str(no_power))
    return home


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    return packs.SMOLLM2.locate()


def appliance_cmd() -> list[str]:
    script = BIN / "appliance"
    return [str(script)] if script.exists() else [sys.executable, "-m", "appliance"]


def run_appliance(*args: str, input: str | None = None, env: dict | None = None, timeout: float = 300,
                  prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `appliance` command for real, stdout and stderr apart."""
    full_env = dict(os.environ, NO_COLOR="1", **(env or {}))
    if full_env.get(LOCK_OFF[0]) == LOCK_OFF[1] and LOCK_OFF[0] not in (env or {}):
        del full_env[LOCK_OFF[0]]  # the pytest process's own switch (above), not the command's
    return subprocess.run(
        (prefix or []) + appliance_cmd() + list(args), input=input, capture_output=True, text=True,
        env=full_env, timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL,
    )


def missing(message: str) -> NoReturn:
    """What this machine lacks for a test: a skip here, a failure under CI (a test must not pass there by skipping)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str) -> str:
    """The path of a system tool; under CI its absence is a failure, not a skip."""
    path = shutil.which(name)
    if path:
        return path
    missing(f"{name} is not installed (scripts/test installs it with apt-get when run as root)")


@pytest.fixture(scope="session")
def namespaces() -> str:
    """`unshare`, when a user and mount namespace may mount a tmpfs here (no root needed); else the test skips,
    and under CI fails (the full-disk and read-only tests must not pass there by skipping)."""
    unshare = require_tool("unshare")
    probe = subprocess.run([unshare, "-rm", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0"', "/tmp"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        missing(f"user and mount namespaces are off here, so nothing can be mounted: {probe.stderr.strip()}")
    return unshare
