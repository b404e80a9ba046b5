"""Helpers for the model-library tests: in-process CLI runs (click's CliRunner, stdout and stderr apart)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner


class Invoker:
    def __call__(self, *args: str, code: int = 0):
        from appliance.cli import cli

        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        if code:
            error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
            assert len(error_lines) >= 1, result.stderr  # a clear one-line message
        return result

    def json(self, *args: str, code: int = 0):
        return json.loads(self(*args, "--json", code=code).stdout)


@pytest.fixture
def invoke() -> Invoker:
    return Invoker()
