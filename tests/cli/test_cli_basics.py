"""The command line without a model: help, version, usage errors, bad data dirs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import appliance
from appliance.cli import cli
from tests.conftest import run_appliance


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert appliance.__version__ in result.output


def _all_commands(group, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if hasattr(command, "commands"):
            yield from _all_commands(command, prefix + (name,))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(cli)], ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`appliance {' '.join(path)} --help` shows no example"


def test_empty_question_is_a_usage_error():
    runner = CliRunner()
    result = runner.invoke(cli, ["ask", "   "])
    assert result.exit_code == 2
    assert "question is empty" in result.output
    assert "Traceback" not in result.output


def test_empty_stdin_is_a_usage_error():
    result = run_appliance("ask", input="\n")
    assert result.returncode == 2
    assert "question is empty" in result.stderr
    assert result.stdout == ""


def test_unwritable_home_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_appliance("ask", "hello", env={"APPLIANCE_HOME": str(blocker / "home")})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not usable" in lines[0] and str(blocker) in lines[0]


def test_invalid_config_is_reported(appliance_home):
    appliance_home.mkdir(parents=True)
    (appliance_home / "config.toml").write_text("[model\ncontext = ")
    result = run_appliance("ask", "hello")
    assert result.returncode == 1
    assert "not valid TOML" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_question_without_the_library_never_imports_numpy(default_model_path):
    """numpy (15 MiB of the CLI's RSS, 60 ms of its start) comes with the library's vectors, not with the CLI, the
    services, a GGUF header (gguf's constants without its package) or the engine client."""
    import subprocess
    import sys

    code = ("import sys; import appliance.cli.root, appliance.services, appliance.engine.client; "
            "from appliance.models.gguf_meta import read_gguf; from appliance.models.manifest import _file_type_name; "
            f"info = read_gguf({str(default_model_path)!r}); "
            "assert info.tensors['token_embd.weight'][1] > 0 and _file_type_name(3) == 'Q4_1'; "
            "print('numpy' in sys.modules, [m for m in sys.modules if m == 'gguf' or m.startswith('gguf.')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "[]"]
