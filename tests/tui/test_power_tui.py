"""The low-power profile in the TUI, as `appliance ask` applies it: on a (fake) battery a question gets the profile's
threads and answer length from the real model and the status line says so; plugged in while the app is open, the
next question gets the usual ones and the status line says nothing about power. A battery's name (a file name under
/sys) reaches the status line escaped, and is never read as markup."""

from __future__ import annotations

import pytest

from appliance.config import PowerSettings
from appliance.services import Services
from appliance.system import power
from appliance.system.hardware import Hardware
from tests.doctor.test_doctor import _supply
from tests.tui.conftest import ask, wait_for
from tui.app import create_app
from tui.present import power_label
from tui.screens.chat import ChatScreen
from tui.widgets.status import StatusLine


def test_limits_the_one_rule_for_a_question():
    battery = power.PowerState("battery", 17, "on battery (BAT1, 17%, discharging)")
    low = power.profile(PowerSettings(max_tokens=256), 4, battery, usual_max_tokens=512)
    assert low.limits() == (2, 256)
    assert low.limits(threads=3, max_tokens=900) == (3, 900)  # what the caller sets wins (`ask --threads`)
    short = power.profile(PowerSettings(max_tokens=256), 4, battery, usual_max_tokens=40)
    assert short.limits() == (2, 40)  # never longer than the usual default answer
    mains = power.profile(PowerSettings(), 4, power.PowerState("mains"), usual_max_tokens=512)
    assert mains.limits() == (4, None) and mains.limits(1, 7) == (1, 7)  # None: the configured default
    assert power.profile(PowerSettings(low_power="off"), 4, battery).limits() == (4, None)
    assert power_label(low) == "low power: on battery (BAT1, 17%, discharging) · 2 threads · answers ≤ 256 tokens"
    assert power_label(mains) == "" and power_label(None) == ""


def _status(app) -> list[str]:
    return str(app.screen.query_one(StatusLine).render()).splitlines()


@pytest.mark.slow
@pytest.mark.anyio
async def test_on_battery_tui_answers_are_short_and_the_status_line_says_so(tmp_path, monkeypatch):
    root = tmp_path / "power_supply"
    _supply(root, "BAT1", type="Battery", status="Discharging", capacity="17")
    _supply(root, "AC", type="Mains", online="0")
    monkeypatch.setenv("APPLIANCE_POWER_SUPPLY_DIR", str(root))
    monkeypatch.setenv("APPLIANCE_POWER_MAX_TOKENS", "4")
    monkeypatch.setenv("APPLIANCE_MODEL_MAX_TOKENS", "12")
    services = Services.create()
    usual = Hardware.detect().threads(services.config.model.threads)
    low = max(1, usual // 2)  # [power] threads = 0: half the usual
    seen = []
    app = create_app(services)
    async with app.run_test(size=(100, 30), message_hook=seen.append) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", 180, "the model to load")
        await pilot.pause()
        assert services.engine._loaded.threads == low  # preloaded with the threads a question will get
        lines = _status(app)
        assert len(lines) == 2 and app.screen.query_one(StatusLine).size.height == 2
        assert lines[1].strip() == (f"low power: on battery (BAT1, 17%, discharging) · {low} "
                                    f"thread{'s' if low != 1 else ''} · answers ≤ 4 tokens")

        await ask(pilot, "Name a yellow fruit.")
        await wait_for(pilot, lambda: any(isinstance(m, ChatScreen.AnswerDone) for m in seen), 180, "the answer")
        await app.workers.wait_for_complete()
        await pilot.pause()
        first = next(m for m in seen if isinstance(m, ChatScreen.AnswerDone))
        assert first.run.text.strip() and not first.run.cancelled
        assert first.run.settings["max_tokens"] == 4 and 1 <= first.run.timings["tokens"] <= 4
        assert services.engine._loaded.threads == low
        saved = services.history.messages(first.conversation_id)
        assert saved[1]["content"] == first.run.text and saved[1]["timings"]["tokens"] <= 4

        # Plugged in while the app is open: the next question reads the power source again.
        (root / "AC" / "online").write_text("1\n")
        await ask(pilot, "Name a red fruit.")
        await wait_for(pilot, lambda: sum(isinstance(m, ChatScreen.AnswerDone) for m in seen) == 2, 180,
                       "the second answer")
        await app.workers.wait_for_complete()
        await pilot.pause()
        second = [m for m in seen if isinstance(m, ChatScreen.AnswerDone)][1]
        assert second.run.settings["max_tokens"] == 12  # the usual [model] max_tokens
        assert services.engine._loaded.threads == usual
        assert app.power is not None and not app.power.low_power
        lines = _status(app)
        assert len(lines) == 1 and "low power" not in lines[0] and "smollm2-135m-instruct" in lines[0]
        assert app.screen.query_one(StatusLine).size.height == 1


@pytest.mark.anyio
async def test_a_battery_name_reaches_the_status_line_escaped(tmp_path, monkeypatch):
    root = tmp_path / "power_supply"
    _supply(root, "BAT[red]\x1b[2J", type="Battery", status="Discharging", capacity="5")
    monkeypatch.setenv("APPLIANCE_POWER_SUPPLY_DIR", str(root))
    app = create_app(Services.create(), preload=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: app.power is not None, 30, "the power source to be read")
        await pilot.pause()
        line = _status(app)[1]
        assert "on battery (BAT[red]\\x1b[2J, 5%, discharging)" in line  # the markup-like text shown as it is
        assert "\x1b" not in "".join(_status(app))
