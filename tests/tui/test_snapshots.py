"""Layout snapshots at 80x24 and 120x40 (layout only; behaviour is tested elsewhere).

Deterministic: a fake answerer with fixed timings, no knowledge base or a fake one with fixed dates, no model
load, and HOME pointed at the test's directory so paths print as ~/home/...
Update after an intended change: pytest tests/tui/test_snapshots.py --snapshot-update (and look at the SVGs)."""

from __future__ import annotations

import pytest

from tests.tui.conftest import FakeKB, wait_for, with_fakes
from tui.app import create_app


@pytest.fixture
def fixed_home(monkeypatch, appliance_home):
    monkeypatch.setenv("HOME", str(appliance_home.parent))


async def _answered(pilot) -> None:
    prompt = pilot.app.screen.query_one("#prompt")
    prompt.value = "How do I purify water?"
    await pilot.press("enter")
    await wait_for(pilot, lambda: pilot.app.screen.conversation_id is not None, 30, "the answer")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_chat_empty_80x24(snap_compare, fake_services, fixed_home):
    assert snap_compare(create_app(fake_services, preload=False), terminal_size=(80, 24))


def test_chat_answer_with_sources_80x24(snap_compare, fake_services, fixed_home):
    assert snap_compare(create_app(fake_services, preload=False), terminal_size=(80, 24), run_before=_answered)


def test_chat_answer_with_sources_120x40(snap_compare, fake_services, fixed_home):
    assert snap_compare(create_app(fake_services, preload=False), terminal_size=(120, 40), run_before=_answered)


def test_help_80x24(snap_compare, fake_services, fixed_home):
    assert snap_compare(create_app(fake_services, preload=False), terminal_size=(80, 24), press=["f1"])


def test_library_120x40(snap_compare, services, fixed_home):
    kb = FakeKB()
    kb.docs = [
        {"path": "/library/water.md", "title": "Water", "kind": "md", "chunks": 3, "added": "2025-01-02"},
        {"path": "/library/field-guide.pdf", "title": "Field guide", "kind": "pdf", "chunks": 41,
         "added": "2025-01-03"},
        {"path": "/library/wikimed.zim", "title": "WikiMed", "kind": "zim", "chunks": 0, "added": "2025-01-04"},
    ]

    async def opened(pilot) -> None:
        await pilot.press("f4")
        await wait_for(pilot, lambda: pilot.app.kb_stats is not None, 30, "the library")
        await pilot.pause()

    assert snap_compare(create_app(with_fakes(services, kb=kb), preload=False), terminal_size=(120, 40),
                        run_before=opened)
