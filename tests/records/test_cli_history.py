"""`appliance history`: the exchanges `ask` saved, listed and shown from the same SQLite file."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_appliance


@pytest.mark.slow
def test_ask_then_list_and_show():
    asked = json.loads(run_appliance("ask", "--json", "--no-kb", "--max-tokens", "12", "What is frostbite?").stdout)
    listing = json.loads(run_appliance("history", "list", "--json").stdout)
    assert [row["title"] for row in listing] == ["What is frostbite?"]
    assert listing[0]["messages"] == 2
    conversation_id = str(listing[0]["id"])
    shown = json.loads(run_appliance("history", "show", conversation_id, "--format", "json").stdout)
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"]
    assert shown["messages"][1]["content"] == asked["answer"]
    assert shown["messages"][1]["model"] == asked["model"]["name"]
    markdown = run_appliance("history", "show", conversation_id).stdout
    assert markdown.startswith("# What is frostbite?") and asked["answer"].strip() in markdown


@pytest.mark.slow
def test_no_history_flag_saves_nothing():
    assert run_appliance("ask", "--no-history", "--no-kb", "--max-tokens", "4", "hello").returncode == 0
    assert json.loads(run_appliance("history", "list", "--json").stdout) == []


def test_unknown_conversation_is_a_clear_error():
    result = run_appliance("history", "show", "999")
    assert result.returncode == 1
    assert "no conversation 999" in result.stderr and "Traceback" not in result.stderr
