"""The emergency notice: a question that reads as an emergency, answered by the model alone, says so before the
model's words (CLI and TUI), pointing to the field guide's section; a grounded answer or a calm question has none."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance.answering import field_guide
from appliance.answering.emergency import read_as_emergency
from appliance.cli import cli
from appliance.services import Services
from tests.tui.conftest import ask, wait_for
from tui.app import create_app
from tui.screens.chat import ChatScreen
from tui.widgets.exchange import Exchange

# In a frightened non-expert's words.
READS_AS = {
    "my husband cut his leg really bad and it wont stop bleeding": ("bleeding", "Severe bleeding"),
    "he collapsed and he's not breathing what do i do": ("not breathing", "CPR"),
    "my toddler swallowed some of the dishwasher tablets": ("poisoning", "Poisoning"),
    "i spilled boiling water on my arm and the skin is peeling, it burns": ("burn", "Burns"),
    "the baby is choking on something": ("choking", "Choking"),
    "my daughter has a fever and she is all floppy": ("unwell child", None),
    "we all have headaches, is it the generator fumes": ("carbon monoxide", "Carbon monoxide"),
    "my daughter got bitten by a snake what do i do": ("snake bite", "Snake bites"),
}


@pytest.mark.parametrize("question", list(READS_AS))
def test_questions_that_read_as_an_emergency(question):
    kind, chapter = READS_AS[question]
    notice = read_as_emergency(question)
    assert notice is not None and kind in notice.kinds
    assert "call your local emergency number" in notice.text
    assert "from the model alone" in notice.text
    if chapter:
        assert chapter in notice.chapters and f'appliance kb guide "{chapter}"' in notice.text
        assert field_guide.section_text(chapter)  # the pointer leads somewhere


@pytest.mark.parametrize("question", ["How do I purify water?", "What is the capital of France?",
                                      "How do I store rice for a long time?", "how do I reset my router"])
def test_calm_questions_get_no_notice(question):
    assert read_as_emergency(question) is None


def test_a_chapter_the_guide_lacks_points_nowhere():
    notice = read_as_emergency("she is bleeding", chapters=["Safe water"])
    assert notice is not None and notice.chapters == () and "field guide covers" not in notice.text


@pytest.mark.slow
def test_cli_says_it_first_and_json_carries_it():
    """The real model (SmolLM2), an empty library: the notice is the first thing on stdout, before the model's
    words; --json carries it."""
    runner = CliRunner()
    question = "my son cut his hand and it is bleeding a lot"
    shown = runner.invoke(cli, ["ask", "--no-history", "--max-tokens", "8", question])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "!" * 72 and lines[1].startswith("EMERGENCY? This reads like bleeding.")
    assert 'appliance kb guide "Severe bleeding"' in shown.stdout.split("!" * 72)[1]
    assert "The library has nothing on this" in shown.stderr
    as_json = runner.invoke(cli, ["ask", "--json", "--no-history", "--max-tokens", "8", question])
    result = json.loads(as_json.stdout)
    assert result["emergency"]["kinds"] == ["bleeding"]
    assert result["emergency"]["guide_sections"] == ["Severe bleeding"]
    calm = json.loads(runner.invoke(cli, ["ask", "--json", "--no-history", "--max-tokens", "4",
                                          "What colour is the sky?"]).stdout)
    assert calm["emergency"] is None


@pytest.mark.slow
def test_a_grounded_answer_has_no_notice(monkeypatch):
    """With the guide in the library, a bleeding question is answered from it: no emergency notice."""
    monkeypatch.setenv("APPLIANCE_KB_FIELD_GUIDE", "on")
    result = json.loads(CliRunner().invoke(cli, ["ask", "--json", "--no-history", "--max-tokens", "8",
                                                 "how do I stop heavy bleeding from a leg"]).stdout)
    assert result["sources"] and "Severe bleeding" in result["sources"][0]["section"]
    assert result["emergency"] is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.slow
async def test_tui_shows_it_above_the_answer():
    services = Services.create()
    services.config.model.max_tokens = 8
    app = create_app(services)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", 180, "the model to load")
        await ask(pilot, "he is not breathing what do I do")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen.pending is None
                       and app.screen.query(Exchange), 180, "the answer")
        await app.workers.wait_for_complete()
        await pilot.pause()
        label = app.screen.query_one(Exchange).query_one(".emergency")
        assert label.display and "EMERGENCY? This reads like not breathing." in str(label.render())
        assert 'appliance kb guide "CPR"' in str(label.render())
