"""`appliance doctor`: a deliberate connect in the watched self-test is a failure; a corrupted model, a KB passage
without a vector and a damaged history file are found; hardware advice for 4, 8, 16 and 32 GB machines; battery
state from a fake sysfs tree and the low-power profile in `ask --json`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.config import PowerSettings
from appliance.doctor import airgap
from appliance.doctor import checkup as doctor
from appliance.services import Services
from appliance.system import power
from appliance.system.hardware import GIB, Hardware
from tests.conftest import require_tool, run_appliance
from tests.models.fixtures import make_gguf

PLUGIN = """
import socket

def connect():
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1).close()
    except OSError:
        pass
"""


@pytest.mark.slow
def test_doctor_reports_a_deliberate_connect_as_a_failure(tmp_path):
    require_tool("strace")
    (tmp_path / "netplug.py").write_text(PLUGIN)
    result = run_appliance("doctor", "--json", env={"PYTHONPATH": str(tmp_path),
                                                    "APPLIANCE_SELFTEST_PLUGIN": "netplug:connect"})
    assert result.returncode == 1, result.stderr
    assert "air-gap self-test" in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    selftest = checks["air-gap self-test"]
    assert selftest["result"] == "fail" and selftest["section"] == "air gap"
    assert "watched with strace" in selftest["detail"] and "network attempt" in selftest["detail"]
    assert "socket(AF_INET" in selftest["detail"] and "EPERM" in selftest["detail"]  # the lock refused it too
    lock = checks["kernel network lock"]
    assert lock["result"] == "ok" and "EPERM" in lock["detail"] and "seccomp filter" in lock["detail"]
    assert "AF_UNIX only" in lock["detail"] and "syscall(socket, AF_NETLINK): EPERM" in lock["detail"]
    assert checks["online door"]["result"] == "ok"
    assert {c["result"] for name, c in checks.items() if name != "air-gap self-test"} <= {"ok", "warn"}


@pytest.mark.slow
def test_a_clean_watched_self_test_is_ok_and_names_its_method():
    require_tool("strace")
    check = airgap.watched_selftest()
    assert check.status == "ok", check.detail
    assert check.detail.startswith("watched with strace") and "smollm2-135m-instruct" in check.detail


def test_no_way_to_watch_is_not_proven_never_ok(monkeypatch):
    monkeypatch.setattr(airgap.shutil, "which", lambda name: None)
    check = airgap.watched_selftest()
    assert check.status == "warn" and check.detail.startswith("not proven")
    assert "strace is not installed" in check.detail and "unshare is not installed" in check.detail


def test_the_lock_check_in_the_test_process_says_it_is_off():
    check = airgap.lock_check()
    assert check.status == "warn" and "socket(AF_INET) from Python was allowed" in check.detail
    assert "APPLIANCE_AIRGAP_LOCK" in check.fix


def test_integrity_finds_a_corrupted_model_a_passage_without_vector_and_a_damaged_history(tmp_path, appliance_home):
    services = Services.create()
    model = make_gguf(tmp_path / "bad.gguf")
    services.models.import_path(model)
    [clean] = [c for c in doctor.model_checks(services.models) if c.name == "model bad"]
    assert clean.status == "ok"
    with model.open("r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\x01")
    [bad] = [c for c in doctor.model_checks(services.models) if c.name == "model bad"]
    assert bad.status == "fail" and bad.exit_code == 3 and "appliance models remove bad" in bad.fix

    assert doctor.kb_check(services.knowledge).detail == "no knowledge base yet"
    doc = tmp_path / "water.txt"
    doc.write_text("Boil water for one minute to make it safe to drink. " * 20)
    services.knowledge.open().add([doc])
    ok = doctor.kb_check(services.knowledge)
    assert ok.status == "ok" and "journal clean" in ok.detail
    services.knowledge.open().close()
    with sqlite3.connect(appliance_home / "kb" / "text.sqlite") as db:
        db.execute("UPDATE chunks SET vector = zeroblob(0) WHERE id = (SELECT min(id) FROM chunks)")
    damaged = doctor.kb_check(Services.create().knowledge)
    assert damaged.status == "fail" and "bad stored vectors 1" in damaged.detail and "kb repair" in damaged.fix

    history = appliance_home / "history.sqlite"
    assert doctor.history_check(history).detail == "no history yet"
    with sqlite3.connect(history) as db:
        db.execute("CREATE TABLE t(x)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    assert doctor.history_check(history).status == "ok"
    data = bytearray(history.read_bytes())
    data[4096:4096 + 12] = b"\xff" * 12  # the b-tree page header of table t's root (page 2)
    history.write_bytes(bytes(data))
    broken = doctor.history_check(history)
    assert broken.status == "fail" and "history.sqlite" in broken.detail and "move history.sqlite aside" in broken.fix
    error = doctor.exit_error([bad, damaged, broken])
    assert error.exit_code == 3 and "3 check(s) failed: model bad, knowledge base, history" in str(error)


@pytest.mark.parametrize("total_gib, reported_gib, params, repo", [
    (4, 3.8, "1-2B", "Qwen/Qwen2.5-1.5B-Instruct-GGUF"),
    (8, 7.6, "3-4B", "Qwen/Qwen2.5-3B-Instruct-GGUF"),
    (16, 15.5, "7-8B", "Qwen/Qwen2.5-7B-Instruct-GGUF"),
    (32, 31.2, "12-14B", "Qwen/Qwen2.5-14B-Instruct-GGUF"),
])
def test_hardware_advice_for_4_8_16_and_32_gb(total_gib, reported_gib, params, repo):
    """The kernel reports a little less than the label on the box: the table is keyed on what it reports."""
    hw = Hardware(int(reported_gib * GIB), int(reported_gib * GIB * 0.7), cores=4, physical_cores=4)
    check = doctor.sizes_check(hw)
    assert check.status == "ok" and f"({total_gib} GB class)" in check.detail
    assert f"{params}" in check.detail and "Q4_K_M" in check.detail and repo in check.detail


def test_machine_and_fit_for_a_small_machine(tmp_path, appliance_home):
    services = Services.create()
    services.models.ensure_pack("smollm2-135m-instruct")
    roomy = Hardware(8 * GIB, 6 * GIB, cores=4, physical_cores=4)
    [fits] = doctor.fit_checks(services.models, roomy, 4096)
    assert fits.status == "ok" and "configured 4096-token context (up to 8192 here)" in fits.detail
    tight = Hardware(GIB, 180 * 2**20, cores=1, physical_cores=1)  # 180 MiB free: weights fit, a long context not
    [short] = doctor.fit_checks(services.models, tight, 4096)
    assert short.status == "warn" and "fits with at most" in short.detail and "[model] context" in short.fix
    full = Hardware(GIB, 100 * 2**20, cores=1, physical_cores=1)
    [nope] = doctor.fit_checks(services.models, full, 4096)
    assert nope.status == "warn" and nope.detail.startswith("does not fit")
    machine = doctor.machine_check(roomy, appliance_home, flags=("x86_64", ["AVX2", "AVX-512"]))
    assert machine.status == "ok" and "8.0 GiB RAM" in machine.detail and "AVX2, AVX-512" in machine.detail
    old = doctor.machine_check(roomy, appliance_home, flags=("x86_64", []))
    assert old.status == "warn" and "baseline build" in old.fix


def _supply(root: Path, name: str, **files: str) -> None:
    (root / name).mkdir(parents=True)
    for key, value in files.items():
        (root / name / key).write_text(value + "\n")


def test_battery_state_from_a_fake_sysfs_tree(tmp_path):
    root = tmp_path / "power_supply"
    _supply(root, "BAT0", type="Battery", status="Discharging", capacity="42")
    _supply(root, "AC", type="Mains", online="0")
    _supply(root, "hidpp_battery_0", type="Battery", scope="Device", status="Charging", capacity="90")  # a mouse
    state = power.read_sysfs(root)
    assert (state.source, state.percent) == ("battery", 42) and "discharging" in state.detail
    (root / "AC" / "online").write_text("1\n")
    assert power.read_sysfs(root).source == "mains"
    assert power.read_sysfs(tmp_path / "nowhere").source == "unknown"
    (tmp_path / "desktop").mkdir()
    assert power.read_sysfs(tmp_path / "desktop").source == "unknown"  # unknown stays unknown

    (root / "AC" / "online").write_text("0\n")
    low = power.profile(PowerSettings(), normal_threads=8, state=power.read_sysfs(root))
    assert (low.low_power, low.threads, low.max_tokens) == (True, 4, 256)
    assert power.profile(PowerSettings(low_power="off"), 8, power.read_sysfs(root)).low_power is False
    forced = power.profile(PowerSettings(low_power="on", threads=2), 8, power.PowerState("mains"))
    assert (forced.low_power, forced.threads) == (True, 2)
    eight = Hardware(8 * GIB, 6 * GIB, cores=8, physical_cores=8).threads()
    check = doctor.power_check(power.profile(PowerSettings(), eight, power.read_power(root)))
    assert check.status == "warn" and "low-power profile, 4 threads, answers up to 256 tokens" in check.detail
    # What a question really gets: never a longer answer than [model] max_tokens either (as ask and the TUI do).
    capped = doctor.power_check(power.profile(PowerSettings(), eight, power.read_power(root), usual_max_tokens=100))
    assert "answers up to 100 tokens" in capped.detail


@pytest.mark.slow
def test_ask_json_shows_the_low_power_profile_on_battery(tmp_path, monkeypatch):
    from appliance.cli import cli

    root = tmp_path / "power_supply"
    _supply(root, "BAT1", type="Battery", status="Discharging", capacity="17")
    monkeypatch.setenv("APPLIANCE_POWER_SUPPLY_DIR", str(root))
    monkeypatch.setenv("APPLIANCE_POWER_MAX_TOKENS", "6")
    result = CliRunner().invoke(cli, ["ask", "--json", "--no-kb", "--no-history", "Name a yellow fruit."],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["power"] == {"low_power": True, "reason": "on battery (BAT1, 17%, discharging)",
                               "source": "battery", "battery_percent": 17,
                               "threads": answer["power"]["threads"], "max_tokens": 6}
    assert answer["power"]["threads"] >= 1 and answer["timings"]["tokens"] <= 6
    monkeypatch.setenv("APPLIANCE_POWER_LOW_POWER", "off")
    result = CliRunner().invoke(cli, ["ask", "--json", "--no-kb", "--no-history", "--max-tokens", "2", "Hi."],
                                catch_exceptions=False)
    assert json.loads(result.stdout)["power"]["low_power"] is False
