"""Library (knowledge base) screen: documents with counts, add with progress while the UI stays usable, remove.
Progress mechanics with a fake knowledge base; adding, listing and removing also with the real one."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Static

from tests.tui.conftest import FakeKB, notifications, wait_for, with_fakes
from tui.app import create_app
from tui.screens.dialogs import ConfirmScreen, TextPrompt
from tui.screens.help import HelpScreen
from tui.screens.library import LibraryScreen

IngestFinished, IngestUpdate = LibraryScreen.IngestFinished, LibraryScreen.IngestUpdate

pytestmark = pytest.mark.anyio


async def open_library(pilot) -> LibraryScreen:
    await pilot.press("f4")
    screen = pilot.app.screen
    assert isinstance(screen, LibraryScreen)
    await wait_for(pilot, lambda: pilot.app.kb_stats is not None, 120, "the knowledge base")
    return screen


async def add_path(pilot, path) -> None:
    await pilot.press("a")
    await pilot.pause()
    assert isinstance(pilot.app.screen, TextPrompt)
    pilot.app.screen.query_one(Input).value = str(path)
    await pilot.press("enter")


async def test_ingest_progress_advances_while_keys_are_handled(services, tmp_path):
    kb = FakeKB(files=40, delay=0.05)
    seen = []
    app = create_app(with_fakes(services, kb=kb), preload=False)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        screen = await open_library(pilot)
        assert screen.query_one(DataTable).row_count == 1
        await add_path(pilot, tmp_path)
        await wait_for(pilot, lambda: any(isinstance(m, IngestUpdate) for m in seen), 30, "progress")
        before = max(m.progress.files_done for m in seen if isinstance(m, IngestUpdate))
        assert before < 40
        # A keypress is handled while the ingest runs: switch to help and back.
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("f4")
        assert app.screen is screen
        updates_at_key = sum(isinstance(m, IngestUpdate) for m in seen)
        await wait_for(pilot, lambda: sum(isinstance(m, IngestUpdate) for m in seen) > updates_at_key + 3, 30,
                       "more progress after the keypress")
        bar = screen.query_one("#ingest-bar")
        assert bar.total == 40 and 0 < bar.progress <= 40
        assert "files" in str(screen.query_one("#ingest-label").render())
        await wait_for(pilot, lambda: any(isinstance(m, IngestFinished) for m in seen), 60, "the ingest to finish")
        done = [m.progress.files_done for m in seen if isinstance(m, IngestUpdate)]
        assert done == sorted(done) and done[-1] == 40
        await wait_for(pilot, lambda: screen.query_one(DataTable).row_count == 2, 30, "the new document")
        assert not screen.query_one("#ingest").display
        assert any(n.title == "Added to the library" for n in notifications(app))


async def test_escape_stops_an_ingest(services, tmp_path):
    kb = FakeKB(files=400, delay=0.02)
    seen = []
    app = create_app(with_fakes(services, kb=kb), preload=False)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await open_library(pilot)
        await add_path(pilot, tmp_path)
        await wait_for(pilot, lambda: any(isinstance(m, IngestUpdate) for m in seen), 30, "progress")
        await pilot.press("escape")
        await wait_for(pilot, lambda: any(isinstance(m, IngestFinished) for m in seen), 30, "the stop")
        finished = next(m for m in seen if isinstance(m, IngestFinished))
        assert finished.cancelled and finished.report.added < 400
        await app.workers.wait_for_complete()


async def test_a_knowledge_base_that_cannot_be_opened_is_said_plainly(services):
    services.paths.kb.write_text("a file where the knowledge base directory belongs")
    app = create_app(services, preload=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await app.workers.wait_for_complete()
        await pilot.pause()
        empty = app.screen.query_one("#kb-empty", Static)
        assert empty.display and "could not be opened" in str(empty.render())
        assert any(n.severity == "error" and "Knowledge base" in (n.title or "") for n in app._notifications)
        await pilot.press("a")
        await pilot.pause()
        assert not isinstance(app.screen, TextPrompt)



async def test_real_knowledge_base_add_list_and_remove(services, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "water.md").write_text("# Water\n\n## Purifying water\n\nBring clear water to a rolling boil for one "
                                   "minute, then let it cool in a covered container.\n")
    (docs / "fire.txt").write_text("FIRE\n\nKeep a fire small and watched. Clear the ground around it first.\n")
    seen = []
    app = create_app(services, preload=False)
    async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
        screen = await open_library(pilot)
        assert app.kb_stats["documents"] == 0
        assert "library is empty" in str(screen.query_one("#kb-empty", Static).render())
        await add_path(pilot, docs)
        await wait_for(pilot, lambda: any(isinstance(m, IngestFinished) for m in seen), 180, "the ingest")
        report = next(m for m in seen if isinstance(m, IngestFinished)).report
        assert report.added == 2 and not report.failed
        assert any(isinstance(m, IngestUpdate) for m in seen)
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, 60, "the documents")
        listed = {str(table.get_row(row)[4]): table.get_row(row) for row in table.rows}
        assert set(listed) == {str(docs / "fire.txt"), str(docs / "water.md")}
        assert listed[str(docs / "water.md")][0] == "Water" and int(listed[str(docs / "water.md")][2]) >= 1
        assert app.kb_stats["documents"] == 2
        assert "2 documents" in str(screen.query_one("#kb-summary", Static).render())
        # Remove the selected document (after confirming).
        table.focus()
        table.move_cursor(row=list(listed).index(str(docs / "water.md")))
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.click("#yes")
        await wait_for(pilot, lambda: app.kb_stats["documents"] == 1 and table.row_count == 1, 60, "the removal")
        assert [d["path"] for d in services.kb.documents()] == [str(docs / "fire.txt")]
        await app.workers.wait_for_complete()


async def test_the_field_guide_is_listed_with_its_sections_and_sources(monkeypatch, appliance_home):
    """A fresh data dir, the guide registered on first use (real library, real embedder): the library screen lists
    it, and under it its sections and the sources each names; removing it from here is kept."""
    monkeypatch.setenv("APPLIANCE_KB_FIELD_GUIDE", "on")
    from appliance.services import Services

    services = Services.create()
    app = create_app(services, preload=False)
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await open_library(pilot)
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, 120, "the field guide")
        assert table.get_row_at(0)[0] == "Field guide for the first days"
        guide = screen.query_one("#kb-guide", Static)
        text = str(guide.render())
        assert guide.display and "Field guide 1.0" in text
        assert "Safe water: CDC" in text and "Signalling for rescue: US Army Field Manual FM 21-76" in text
        table.focus()
        await pilot.press("r")
        await pilot.pause()
        await pilot.click("#yes")
        await wait_for(pilot, lambda: app.kb_stats["documents"] == 0, 60, "the removal")
        await app.workers.wait_for_complete()
    services.kb.close()
    assert Services.create().kb.documents() == []  # removed in the TUI: it stays removed


async def test_a_damaged_archive_is_named_in_the_library(services, tmp_path):
    from tests.kb import fixtures

    wiki = fixtures.make_zim(tmp_path / "wiki.zim", {"Water.html": ("Water", [("Boiling", "Boil water one minute.")])})
    services.kb.add([wiki])
    with open(wiki, "r+b") as handle:  # truncated on its drive after it was registered
        handle.truncate(wiki.stat().st_size // 2)
    app = create_app(services, preload=False)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_library(pilot)
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, 60, "the archive's row")
        (row,) = [table.get_row(key) for key in table.rows]
        assert row[1] == "zim CHANGED, not searched"
        await app.workers.wait_for_complete()
