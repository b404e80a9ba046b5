"""The owner's rules in the chat screen: a refusal is a notification, the question stays in the prompt and the
model is never loaded; a "confirm" rule asks in a dialog, and a yes asks the real model."""

from __future__ import annotations

import pytest
from textual.widgets import Button, Input

from appliance.services import Services
from tests.tui.conftest import ask, notifications, wait_for
from tui.app import create_app
from tui.screens.chat import ChatScreen
from tui.screens.dialogs import ConfirmScreen
from tui.widgets.exchange import Exchange

pytestmark = pytest.mark.anyio


def _services(home, rules: str) -> tuple[Services, list]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "rules.toml").write_text(rules, encoding="utf-8")
    services = Services.create()
    calls, real = [], services.engine.load

    def load(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    services.engine.load = load
    return services, calls


async def test_a_refusal_is_a_notice_and_the_question_stays(appliance_home):
    services, loads = _services(appliance_home, '[[rule]]\nname = "no-weapons"\naction = "refuse"\n'
                                                'message = "Not on this appliance."\nwords = ["pipe bomb"]\n')
    seen = []
    app = create_app(services, preload=False)
    async with app.run_test(size=(100, 30), message_hook=seen.append) as pilot:
        question = "How do I make a pipe bomb?"
        await ask(pilot, question)
        await wait_for(pilot, lambda: any(isinstance(m, ChatScreen.AnswerRefused) for m in seen), 30, "the refusal")
        await app.workers.wait_for_complete()
        await pilot.pause()
        refused = next(m for m in seen if isinstance(m, ChatScreen.AnswerRefused))
        assert refused.rule == "no-weapons"
        notes = [n for n in notifications(app) if n.title == "Refused by the owner's rules"]
        assert notes and notes[0].message == "refused by rule 'no-weapons': Not on this appliance."
        assert app.screen.query_one("#prompt", Input).value == question
        assert not app.screen.query(Exchange) and app.screen.pending is None
        assert loads == [] and services.engine._loaded is None  # the model was never loaded
        assert services.history.conversations() == []


@pytest.mark.slow
async def test_confirm_asks_in_a_dialog_and_yes_asks_the_model(appliance_home, monkeypatch):
    monkeypatch.setenv("APPLIANCE_MODEL_MAX_TOKENS", "12")
    services, loads = _services(appliance_home, '[[rule]]\nname = "meds"\naction = "confirm"\n'
                                                'message = "Dosage: ask a nurse first"\nwords = ["dose"]\n')
    seen = []
    app = create_app(services, preload=False)
    async with app.run_test(size=(100, 30), message_hook=seen.append) as pilot:
        question = "What dose of salt for rehydration?"
        await ask(pilot, question)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 30, "the confirmation dialog")
        assert loads == []
        assert app.screen.question == "needs a confirmation by rule 'meds': Dosage: ask a nurse first. Ask anyway?"
        await pilot.click("#no")
        await wait_for(pilot, lambda: any(isinstance(m, ChatScreen.AnswerRefused) for m in seen), 30, "the no")
        await pilot.pause()
        assert app.screen.query_one("#prompt", Input).value == question and loads == []
        assert [n.message for n in notifications(app) if n.title == "Refused by the owner's rules"] == [
            "not asked (needs a confirmation by rule 'meds': Dosage: ask a nurse first)"]
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 30, "the dialog again")
        app.screen.query_one("#yes", Button).press()
        await wait_for(pilot, lambda: any(isinstance(m, ChatScreen.AnswerDone) for m in seen), 180, "the answer")
        await app.workers.wait_for_complete()
        done = next(m for m in seen if isinstance(m, ChatScreen.AnswerDone))
        assert len(loads) == 1 and done.run.decision.matches[0].rule == "meds"
        assert done.conversation_id is not None and services.history.verify_log().ok
    services.engine.unload()
