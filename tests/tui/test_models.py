"""Models screen: license shown plainly (UNKNOWN stays unknown), verify with progress, import, set default,
and a model with an unknown license is shown to the user before its first use."""

from __future__ import annotations

import pytest
from textual.widgets import Checkbox, DataTable, Input, Static

from appliance.config import Config
from tests.tui.conftest import notifications, wait_for, with_fakes, write_tiny_gguf
from tui.app import ApplianceApp, create_app
from tui.screens.dialogs import ConsentScreen, ImportPrompt
from tui.screens.models import ModelsScreen

ModelLoading = ApplianceApp.ModelLoading
VerifyFinished, VerifyProgress = ModelsScreen.VerifyFinished, ModelsScreen.VerifyProgress

pytestmark = pytest.mark.anyio


def rows(table: DataTable) -> dict[str, list[str]]:
    return {str(row.value): [str(c) for c in table.get_row(row)] for row in table.rows}


async def open_models(pilot) -> ModelsScreen:
    await pilot.press("f3")
    screen = pilot.app.screen
    assert isinstance(screen, ModelsScreen)
    await wait_for(pilot, lambda: screen.query_one(DataTable).row_count > 0, 120, "the model list")
    return screen


async def test_unknown_license_is_shown_as_unknown(services, tiny_unknown_gguf):
    services.models.register(tiny_unknown_gguf, name="mystery")
    app = create_app(with_fakes(services), preload=False)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_models(pilot)
        table = screen.query_one(DataTable)
        shown = rows(table)
        assert shown["mystery"][:5] == ["mystery", "UNKNOWN", "unknown", "unknown", "ok"]
        assert shown["smollm2-135m-instruct"][:4] == ["smollm2-135m-instruct *", "Apache-2.0", "permissive", "yes"]
        assert shown["smollm2-135m-instruct"][5] == "bundled"
        table.move_cursor(row=list(shown).index("mystery"))
        await pilot.pause()
        details = screen.query_one("#model-details", Static)
        text = str(details.render())
        assert "license is UNKNOWN" in text and details.has_class("warning")


async def test_verify_reports_progress_and_the_result(services):
    seen = []
    app = create_app(with_fakes(services), preload=False)
    async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
        screen = await open_models(pilot)
        await pilot.press("v")
        await wait_for(pilot, lambda: any(isinstance(m, VerifyFinished) for m in seen), 120, "verification")
        progress = [m for m in seen if isinstance(m, VerifyProgress)]
        assert progress and progress[-1].done == progress[-1].total == services.models.resolve(None).size
        assert [m.done for m in progress] == sorted(m.done for m in progress)
        finished = next(m for m in seen if isinstance(m, VerifyFinished))
        assert finished.name == "smollm2-135m-instruct" and finished.error == ""
        assert any(n.title == "Verified" for n in notifications(app))
        assert not screen.query_one("#model-progress").display
    checks = services.models.resolve(None).record["verification"]
    assert checks[-1]["result"] == "ok"


@pytest.mark.slow
async def test_import_a_file_and_make_it_the_default_after_the_license_warning(services, tmp_path):
    path = write_tiny_gguf(tmp_path / "odd.gguf", license=None, name="odd")
    seen = []
    app = create_app(with_fakes(services), preload=False)
    async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
        screen = await open_models(pilot)
        await pilot.press("i")
        await pilot.pause()
        assert isinstance(app.screen, ImportPrompt)
        app.screen.query_one("#path", Input).value = str(path)
        app.screen.query_one("#name", Input).value = "odd-one"
        app.screen.query_one("#copy", Checkbox).value = True
        await pilot.click("#ok")
        await wait_for(pilot, lambda: "odd-one" in rows(screen.query_one(DataTable)), 60, "the imported model")
        entry = services.models.resolve("odd-one")
        assert entry.mode == "copy" and entry.path.parent == services.paths.models
        table = screen.query_one(DataTable)
        table.move_cursor(row=list(rows(table)).index("odd-one"))
        table.focus()
        await pilot.press("d")
        await pilot.pause()
        # Unknown license: shown plainly before the model is used, and nothing is loaded until the user agrees.
        assert isinstance(app.screen, ConsentScreen)
        body = str(app.screen.query_one(".dialog-body", Static).render())
        assert "license is UNKNOWN" in body
        assert not any(isinstance(m, ModelLoading) for m in seen)
        await pilot.click("#accept")
        await wait_for(pilot, lambda: any(isinstance(m, ModelLoading) for m in seen), 30, "the load to start")
        assert Config.load(services.paths.config).model.default == "odd-one"
        assert services.config.model.default == "odd-one"
        assert app.consents.given(entry.info, entry.sha256)
        await wait_for(pilot, lambda: rows(table).get("odd-one", [""])[0] == "odd-one *", 30, "the default mark")
        await app.workers.wait_for_complete()


async def test_unknown_license_default_asks_before_first_use_in_chat(services, tiny_unknown_gguf):
    services.models.register(tiny_unknown_gguf, name="mystery")
    services.config.model.default = "mystery"
    app = create_app(with_fakes(services))
    seen = []
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ConsentScreen), 60, "the license warning")
        assert app.model_state == "needs-consent"
        assert [m.name for m in seen if isinstance(m, ModelLoading)] == [""]  # resolved, never loaded
        await pilot.pause()
        await pilot.click("#decline")
        await wait_for(pilot, lambda: app.model_state == "declined", 10, "the refusal")
        assert not isinstance(app.screen, ConsentScreen)
        # Asking shows the warning again instead of silently using the model.
        prompt = app.screen.query_one("#prompt", Input)
        prompt.value = "hello"
        prompt.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConsentScreen)
        await pilot.press("escape")
        await app.workers.wait_for_complete()


@pytest.mark.slow
async def test_models_default_and_accept_from_the_cli_reach_the_tui(tmp_path):
    """The owner sets the default and accepts its unknown license from the shell; the TUI then loads that model
    without asking, because it reads the same config.toml and the same consent record."""
    from click.testing import CliRunner

    from appliance.cli import cli
    from appliance.services import Services

    path = write_tiny_gguf(tmp_path / "mystery.gguf", license=None, name="mystery")
    run = CliRunner()
    assert run.invoke(cli, ["models", "import", str(path)]).exit_code == 0
    assert run.invoke(cli, ["models", "default", "mystery"]).exit_code == 0
    services = Services.create()
    assert services.config.model.default == "mystery"
    seen = []
    app = create_app(with_fakes(services))
    async with app.run_test(size=(100, 30), message_hook=seen.append) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ConsentScreen), 60, "the license warning")
        assert [m.name for m in seen if isinstance(m, ModelLoading)] == [""]  # asked first, not loaded
        await pilot.press("escape")
        await app.workers.wait_for_complete()
    accepted = run.invoke(cli, ["models", "accept", "mystery"])
    assert accepted.exit_code == 0 and "accepted mystery" in accepted.stdout
    seen.clear()
    app = create_app(with_fakes(Services.create()))
    async with app.run_test(size=(100, 30), message_hook=seen.append) as pilot:
        await wait_for(pilot, lambda: "mystery" in [m.name for m in seen if isinstance(m, ModelLoading)], 60,
                       "the accepted default to load")
        assert not isinstance(app.screen, ConsentScreen) and app.model_name == "mystery"
        await app.workers.wait_for_complete()  # the tiny file then fails in the engine: a notification, no more


@pytest.mark.slow
async def test_the_tui_set_default_is_the_core_operation(services, tmp_path):
    """Set default in the Models screen writes the same config.toml as `appliance models default` (and a model
    accepted from the CLI is not asked about again)."""
    from click.testing import CliRunner

    from appliance.cli import cli

    path = write_tiny_gguf(tmp_path / "chosen.gguf", license=None, name="chosen")
    services.models.register(path, name="chosen")
    assert CliRunner().invoke(cli, ["models", "accept", "chosen"]).exit_code == 0
    seen = []
    app = create_app(with_fakes(services), preload=False)
    async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
        screen = await open_models(pilot)
        table = screen.query_one(DataTable)
        table.move_cursor(row=list(rows(table)).index("chosen"))
        table.focus()
        await pilot.press("d")
        await wait_for(pilot, lambda: any(isinstance(m, ModelLoading) for m in seen), 30, "the load to start")
        assert not isinstance(app.screen, ConsentScreen)
        assert Config.load(services.paths.config).model.default == "chosen" == services.config.model.default
        await wait_for(pilot, lambda: rows(table).get("chosen", [""])[0] == "chosen *", 30, "the default mark")
        await app.workers.wait_for_complete()
    shown = CliRunner().invoke(cli, ["models", "default"])
    assert shown.stdout.strip() == "chosen"
