"""Chat screen: streaming, cancel, failures, history. Mechanics with a fake answerer; every feature also with
the real default model (SmolLM2-135M from its wheel)."""

from __future__ import annotations

import shutil

import pytest
from textual.widgets import Input, Markdown, OptionList

from appliance.services import Services
from tests.tui.conftest import ANSWER_PIECES, FakeAnswerer, ask, notifications, wait_for, with_fakes
from tui.app import ApplianceApp, create_app
from tui.screens.chat import ChatScreen
from tui.screens.dialogs import ConversationsScreen, SourceScreen
from tui.widgets.exchange import Exchange, SourceList

AnswerDone, AnswerStarted, AnswerToken = ChatScreen.AnswerDone, ChatScreen.AnswerStarted, ChatScreen.AnswerToken
ModelFailed, ModelReady = ApplianceApp.ModelFailed, ApplianceApp.ModelReady

QUESTION = "What is the boiling point of water at sea level?"

pytestmark = pytest.mark.anyio


def recorder():
    seen = []
    return seen, seen.append


# -- fake answerer: UI mechanics -------------------------------------------------------------------------------
async def test_tokens_stream_in_order_into_markdown(fake_services):
    seen, hook = recorder()
    app = create_app(fake_services, preload=False)
    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        await ask(pilot, "How do I purify water?")
        await wait_for(pilot, lambda: any(isinstance(m, AnswerDone) for m in seen), 30, "the answer")
        await app.workers.wait_for_complete()
        await pilot.pause()
        tokens = [m.text for m in seen if isinstance(m, AnswerToken)]
        assert tokens == ANSWER_PIECES
        done = next(m for m in seen if isinstance(m, AnswerDone))
        assert done.run.text == "".join(ANSWER_PIECES)
        exchange = app.screen.query_one(Exchange)
        assert exchange.markdown.source == "".join(ANSWER_PIECES)
        assert app.screen.query_one("#prompt", Input).value == ""
        assert app.screen.pending is None
        assert app.tokens_per_s == 50.0


async def test_escape_cancels_ends_the_worker_and_restores_the_prompt(services):
    answerer = FakeAnswerer(["tick "] * 400, delay=0.02)
    app = create_app(with_fakes(services, answerer), preload=False)
    seen, hook = recorder()
    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        await ask(pilot, "Count slowly")
        await wait_for(pilot, lambda: sum(isinstance(m, AnswerToken) for m in seen) >= 3, 30, "first tokens")
        worker = next(w for w in app.workers if w.group == "answer")
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert worker.is_finished
        run = answerer.runs[0]
        assert run.finished.is_set() and run.cancelled
        assert len(run.text) < len("tick " * 400)
        prompt = app.screen.query_one("#prompt", Input)
        assert prompt.value == "Count slowly"
        assert prompt.has_focus
        assert not app.screen.query(Exchange)
        assert app.screen.pending is None
        assert services.history.conversations() == []  # a cancelled answer is not saved


async def test_answer_failure_is_a_notification_and_the_prompt_comes_back(services):
    app = create_app(with_fakes(services, FakeAnswerer([], error="the model file is missing")), preload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(pilot, "Anything?")
        await wait_for(pilot, lambda: notifications(app), 30, "a notification")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert any("the model file is missing" in n.message and n.severity == "error" for n in notifications(app))
        assert app.screen.query_one("#prompt", Input).value == "Anything?"
        assert app.screen.pending is None and not app.screen.query(Exchange)
        assert app.is_running


async def test_sources_are_listed_and_open_the_passage(fake_services):
    app = create_app(fake_services, preload=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, "How do I purify water?")
        await wait_for(pilot, lambda: app.screen.pending is None and app.screen.query(Exchange), 30, "the answer")
        await app.workers.wait_for_complete()
        await pilot.pause()
        sources = app.screen.query_one(SourceList)
        labels = [str(sources.get_option_at_index(i).prompt) for i in range(sources.option_count)]
        assert labels == ["[1] water.md · Purifying water", "[2] field-guide.pdf · Chapter 3 · p. 12"]
        sources.focus()
        sources.highlighted = 1
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, SourceScreen)
        assert app.screen.source.page == 12
        assert "Cover stored water." in app.screen.query_one(Markdown).source
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)


async def test_conversations_persist_reopen_continue_and_export(fake_services):
    history = fake_services.history
    app = create_app(fake_services, preload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(pilot, "How do I purify water?")
        await wait_for(pilot, lambda: app.screen.conversation_id is not None, 30, "the saved answer")
        first = app.screen.conversation_id
        # A second question continues the same conversation and gives the model the earlier exchange.
        await ask(pilot, "And then?")
        await wait_for(pilot, lambda: len(history.messages(first)) == 4, 30, "the second answer")
        assert fake_services.answerer.calls[1][1] == [  # the earlier turns the model was shown
            {"role": "user", "content": "How do I purify water?"},
            {"role": "assistant", "content": "".join(ANSWER_PIECES)},
        ]
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        exported = list((fake_services.paths.home / "exports").glob("*.md"))
        assert len(exported) == 1
        text = exported[0].read_text()
        assert "How do I purify water?" in text and "And then?" in text and "[2] /library/field-guide.pdf" in text
        # New conversation, then reopen the first one from the list.
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.conversation_id is None and not app.screen.query(Exchange)
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, ConversationsScreen)
        await pilot.press("enter")
        await pilot.pause()
        chat = app.screen
        assert isinstance(chat, ChatScreen) and chat.conversation_id == first
        shown = chat.query(Exchange)
        assert [e.question for e in shown] == ["How do I purify water?", "And then?"]
        assert shown[0].markdown.source == "".join(ANSWER_PIECES)
        assert shown[0].query_one(SourceList).option_count == 2
        # Rename and delete from the list.
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        app.screen.query_one(Input).value = "Water"
        await pilot.press("enter")
        await pilot.pause()
        assert history.conversation(first)["title"] == "Water"
        await pilot.press("d")
        await pilot.pause()
        await pilot.click("#yes")
        await pilot.pause()
        assert history.conversation(first) is None
        assert app.screen.query_one(OptionList).option_count == 1  # "No conversations yet."
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen) and app.screen.conversation_id is None


# -- the real default model ------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_real_model_streams_in_order_and_writes_history(services):
    services.config.model.max_tokens = 40
    seen, hook = recorder()
    app = create_app(services)
    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        # First paint comes before the model: the prompt is there while it is still loading.
        assert app.screen.query_one("#prompt", Input).display
        await wait_for(pilot, lambda: app.model_state == "ready", 180, "the model to load")
        assert app.model_name == "smollm2-135m-instruct" and app.model_license == "Apache-2.0"
        await ask(pilot, QUESTION)
        await wait_for(pilot, lambda: any(isinstance(m, AnswerDone) for m in seen), 180, "the answer")
        await app.workers.wait_for_complete()
        await pilot.pause()
        tokens = [m.text for m in seen if isinstance(m, AnswerToken)]
        done = next(m for m in seen if isinstance(m, AnswerDone))
        assert len(tokens) > 1
        assert "".join(tokens) == done.run.text and done.run.text.strip()
        assert app.screen.query_one(Exchange).markdown.source == done.run.text
        assert done.run.model_name == "smollm2-135m-instruct"
        assert any(isinstance(m, AnswerStarted) for m in seen)
        assert app.tokens_per_s and app.tokens_per_s > 0
    conversations = services.history.conversations()
    assert len(conversations) == 1 and conversations[0]["title"] == QUESTION
    messages = services.history.messages(conversations[0]["id"])
    assert [(m["role"], m["content"]) for m in messages] == [("user", QUESTION), ("assistant", done.run.text)]
    assert messages[1]["model"] == "smollm2-135m-instruct"
    # The CLI reads the same history.
    assert Services.create().history.conversations()[0]["id"] == conversations[0]["id"]


@pytest.mark.slow
async def test_real_model_cancel_stops_the_generation(services):
    services.config.model.max_tokens = 400
    seen, hook = recorder()
    app = create_app(services)
    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", 180, "the model to load")
        await ask(pilot, "Write a long story about a lighthouse keeper.")
        await wait_for(pilot, lambda: sum(isinstance(m, AnswerToken) for m in seen) >= 2, 180, "first tokens")
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
        done = [m for m in seen if isinstance(m, AnswerDone)]
        assert done and done[0].run.cancelled is True
        assert done[0].run.timings["tokens"] < 400
        assert app.screen.query_one("#prompt", Input).value == "Write a long story about a lighthouse keeper."
        assert not app.screen.query(Exchange)
    assert services.history.conversations() == []


@pytest.mark.slow
async def test_model_load_inside_the_app_does_not_write_to_the_terminal(services, capfd, appliance_home):
    app = create_app(services)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.model_state in ("ready", "failed"), 180, "the model to load")
        assert app.model_state == "ready"
    captured = capfd.readouterr()
    for stream in (captured.out, captured.err):
        assert "llama" not in stream and "ggml" not in stream and "gguf" not in stream.lower()
    assert "llama_model_loader" in (appliance_home / "logs" / "llama.log").read_text()


@pytest.mark.slow
async def test_failing_model_load_shows_an_error_and_the_app_stays_usable(services, tmp_path, default_model_path):
    cut = tmp_path / "cut.gguf"
    shutil.copyfile(default_model_path, cut)
    services.models.register(cut, name="cut")
    with cut.open("r+b") as handle:
        handle.truncate(cut.stat().st_size - 4096)
    services.config.model.default = "cut"
    services.config.model.max_tokens = 16
    seen, hook = recorder()
    app = create_app(services)
    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        await wait_for(pilot, lambda: app.model_state == "failed", 120, "the load to fail")
        failed = next(m for m in seen if isinstance(m, ModelFailed))
        assert "size differs" in failed.error and str(cut) in failed.error
        assert any(n.severity == "error" and "size differs" in n.message for n in notifications(app))
        # Asking with the broken model fails the same way, as a notification, and the question comes back.
        await ask(pilot, "Still there?")
        await wait_for(pilot, lambda: app.screen.pending is None and app.screen.query_one("#prompt", Input).value,
                       60, "the failed answer")
        assert app.screen.query_one("#prompt", Input).value == "Still there?"
        # Still usable: other screens open, and after choosing a good model the question is answered.
        await pilot.press("f1")
        await pilot.pause()
        await pilot.press("f2")
        await pilot.pause()
        services.config.model.default = ""
        app.prepare_model()
        await wait_for(pilot, lambda: any(isinstance(m, ModelReady) for m in seen), 180, "the default model")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(isinstance(m, AnswerDone) for m in seen), 180, "the answer")
        await app.workers.wait_for_complete()
        assert next(m for m in seen if isinstance(m, AnswerDone)).run.text.strip()


@pytest.mark.slow
async def test_real_answer_cites_a_document_from_the_knowledge_base(services, tmp_path):
    doc = tmp_path / "water.md"
    doc.write_text("# Water\n\n## Purifying water\n\nTo purify water, bring it to a rolling boil for one minute. "
                   "At altitudes above 2000 metres, boil it for three minutes. Store it covered.\n")
    report = services.kb.add([doc])
    assert report.added == 1
    services.config.model.max_tokens = 32
    seen, hook = recorder()
    app = create_app(services)
    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        await wait_for(pilot, lambda: app.kb_stats is not None, 180, "the knowledge base figures")
        assert app.kb_stats["documents"] == 1
        assert "KB 1 doc" in str(app.screen.query_one("#status").render())
        await ask(pilot, "How long should I boil water to purify it?")
        await wait_for(pilot, lambda: any(isinstance(m, AnswerDone) for m in seen), 180, "the answer")
        await app.workers.wait_for_complete()
        await pilot.pause()
        started = next(m for m in seen if isinstance(m, AnswerStarted))
        assert started.sources and started.sources[0].path == str(doc)
        sources = app.screen.query_one(SourceList)
        assert str(sources.get_option_at_index(0).prompt) == "[1] water.md · Water > Purifying water"
        sources.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, SourceScreen)
        assert "rolling boil for one minute" in app.screen.query_one(Markdown).source
    saved = services.history.messages(services.history.conversations()[0]["id"])[1]
    assert saved["sources"][0]["path"] == str(doc)


# -- the engine process dies: the TUI stays up ------------------------------------------------------------------
@pytest.mark.slow
async def test_engine_crash_mid_answer_keeps_the_app_the_question_and_history(services, monkeypatch):
    services.config.model.max_tokens = 40
    services.history.record_exchange("Earlier question", {"answer": "Earlier answer", "model": {"name": "m"}})
    monkeypatch.setenv("APPLIANCE_ENGINE_FAULT", "segv:token:3")
    seen, hook = recorder()
    app = create_app(services)
    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", 180, "the model to load")
        await ask(pilot, QUESTION)
        await wait_for(pilot, lambda: app.screen.pending is None and app.screen.query_one("#prompt", Input).value,
                       180, "the failed answer")
        assert app.screen.query_one("#prompt", Input).value == QUESTION
        assert any(n.severity == "error" and "SIGSEGV" in n.message for n in notifications(app))
        assert not any(isinstance(m, AnswerDone) for m in seen)
        # Still usable: the next answer starts a fresh engine process.
        monkeypatch.delenv("APPLIANCE_ENGINE_FAULT")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(isinstance(m, AnswerDone) for m in seen), 180, "the answer")
        await app.workers.wait_for_complete()
        assert next(m for m in seen if isinstance(m, AnswerDone)).run.text.strip()
    titles = [c["title"] for c in services.history.conversations()]
    assert "Earlier question" in titles and QUESTION in titles


@pytest.mark.slow
async def test_engine_crash_while_loading_falls_back_to_safe_mode_and_says_so(services, monkeypatch):
    services.config.model.max_tokens = 16
    monkeypatch.setenv("APPLIANCE_ENGINE_FAULT", "segv:load:normal")
    app = create_app(services)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.model_state in ("ready", "failed"), 180, "the model to load")
        assert app.model_state == "ready"
        assert [n for n in notifications(app) if "safe mode" in n.message and n.severity == "warning"]
        await ask(pilot, QUESTION)
        await wait_for(pilot, lambda: app.screen.pending is None, 180, "the answer")
        await app.workers.wait_for_complete()
        assert app.screen.query_one(Exchange).markdown.source.strip()


async def test_unsupported_and_wrongly_marked_sentences_are_listed_under_the_answer(services):
    """What the support check found (appliance.answering.evidence, tested with real parts in
    tests/answering/test_evidence.py) is shown under the answer: sentences not found in the library, then those
    marked with a passage that does not say them."""

    class Checked(FakeAnswerer):
        def ask(self, question, earlier):
            run = super().ask(question, earlier)
            run.unsupported = ["Boil it for 20 minutes."]
            run.misplaced = ["Bring it to a rolling boil. (marked [2]; [1] says it)"]
            return run

    app = create_app(with_fakes(services, Checked(ANSWER_PIECES)), preload=False)
    seen, hook = recorder()
    async with app.run_test(size=(100, 40), message_hook=hook) as pilot:
        await ask(pilot, "How do I purify water?")
        await wait_for(pilot, lambda: any(isinstance(m, AnswerDone) for m in seen), 30, "the answer")
        await app.workers.wait_for_complete()
        await pilot.pause()
        label = app.screen.query_one(Exchange).query_one(".unsupported")
        shown = str(label.render())
        assert label.display and "Not found in your library" in shown and "20 minutes" in shown
        assert "Marked with a passage that does not say it:" in shown and "(marked [2]; [1] says it)" in shown
