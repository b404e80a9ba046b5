"""Mains or battery, and the low-power profile: fewer threads and shorter default answers while on battery.

Linux: /sys/class/power_supply (APPLIANCE_POWER_SUPPLY_DIR, or the `root` parameter, points elsewhere: the tests
build a fake tree). Elsewhere: macOS's `pmset -g batt`; otherwise the source is unknown, and unknown stays unknown
(the profile is then only on when the owner says `[power] low_power = "on"`).
PowerProfile.limits() is the one rule for what a question gets under the profile; Services.power_profile() reads
the profile afresh for each question (the CLI's `ask`, the TUI's chat and its status line).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SYSFS = Path("/sys/class/power_supply")
ROOT_ENV = "APPLIANCE_POWER_SUPPLY_DIR"


@dataclass(frozen=True)
class PowerState:
    source: str  # "mains", "battery" or "unknown"
    percent: int | None = None  # battery charge, when there is a battery
    detail: str = ""

    @property
    def on_battery(self) -> bool:
        return self.source == "battery"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""


def read_sysfs(root: Path) -> PowerState:
    """The power supplies under `root` (Linux's /sys/class/power_supply layout)."""
    try:
        supplies = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return PowerState("unknown", detail=f"{root} cannot be read")
    batteries, mains_online, mains_seen = [], False, False
    for supply in supplies:
        kind = _read(supply / "type")
        if kind == "Battery":
            if _read(supply / "scope") == "Device":  # a mouse's or headset's battery says nothing of this machine
                continue
            capacity = _read(supply / "capacity")
            batteries.append((supply.name, _read(supply / "status"), int(capacity) if capacity.isdigit() else None))
        elif kind in ("Mains", "USB", "USB_C", "USB_PD"):
            mains_seen = True
            mains_online |= _read(supply / "online") == "1"
    if not batteries:
        if mains_seen:
            return PowerState("mains", detail="on mains power (no battery)")
        return PowerState("unknown", detail=f"no battery or mains adapter listed in {root}")
    percent = batteries[0][2]
    discharging = any(status == "Discharging" for _, status, _ in batteries)
    charge = f", {percent}%" if percent is not None else ""
    if mains_online or not discharging and any(s in ("Charging", "Full", "Not charging") for _, s, _ in batteries):
        return PowerState("mains", percent, f"on mains power (battery {batteries[0][0]}{charge})")
    if discharging:
        return PowerState("battery", percent, f"on battery ({batteries[0][0]}{charge}, discharging)")
    return PowerState("unknown", percent, f"battery {batteries[0][0]} reports {batteries[0][1] or 'no status'}")


def _pmset() -> PowerState:
    tool = shutil.which("pmset")
    if not tool:
        return PowerState("unknown", detail="no power information on this system")
    try:
        text = subprocess.run([tool, "-g", "batt"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return PowerState("unknown", detail="pmset could not be run")
    match = re.search(r"(\d+)%", text)
    percent = int(match.group(1)) if match else None
    if "'Battery Power'" in text:
        return PowerState("battery", percent, f"on battery ({percent}%)" if percent is not None else "on battery")
    if "'AC Power'" in text:
        return PowerState("mains", percent, "on mains power")
    return PowerState("unknown", percent, "pmset did not say")


def read_power(root: Path | None = None) -> PowerState:
    env = os.environ.get(ROOT_ENV)
    if root is None and env:
        root = Path(env)
    if root is not None or sys.platform.startswith("linux"):
        return read_sysfs(root or SYSFS)
    if sys.platform == "darwin":
        return _pmset()
    return PowerState("unknown", detail=f"no power information on {sys.platform}")


@dataclass(frozen=True)
class PowerProfile:
    low_power: bool
    reason: str
    state: PowerState
    threads: int | None = None  # in low power: the thread count to use unless the caller set one
    max_tokens: int | None = None  # in low power: the default answer length ([power] max_tokens)
    usual_threads: int | None = None  # the thread count otherwise ([model] threads, else one per physical core)
    usual_max_tokens: int | None = None  # the default answer length otherwise ([model] max_tokens)

    def as_dict(self) -> dict:
        return {"low_power": self.low_power, "reason": self.reason, "source": self.state.source,
                "battery_percent": self.state.percent, "threads": self.threads, "max_tokens": self.max_tokens}

    def limits(self, threads: int | None = None, max_tokens: int | None = None) -> tuple[int | None, int | None]:
        """The threads and max_tokens a question gets (the CLI and the TUI ask here): the caller's own when set;
        in low power the profile's, and no longer an answer than the usual default either; otherwise the usual
        threads and the caller's max_tokens (None: the configured default)."""
        if not self.low_power:
            return threads or self.usual_threads, max_tokens
        usual, low = self.usual_max_tokens, self.max_tokens
        answer = min(low, usual) if usual and low is not None else low
        return threads or self.threads, max_tokens or answer


def profile(settings, normal_threads: int, state: PowerState | None = None,
            usual_max_tokens: int | None = None) -> PowerProfile:
    """The profile for `settings` (config [power]) on a machine whose usual thread count is `normal_threads` and
    whose usual default answer length is `usual_max_tokens` (config [model] max_tokens)."""
    state = state or read_power()
    usual = {"usual_threads": normal_threads, "usual_max_tokens": usual_max_tokens}
    mode = settings.low_power
    if mode == "off":
        return PowerProfile(False, "[power] low_power = off", state, **usual)
    if mode == "on":
        reason = "[power] low_power = on"
    elif state.on_battery:
        reason = state.detail
    else:
        return PowerProfile(False, state.detail or state.source, state, **usual)
    threads = settings.threads or max(1, normal_threads // 2)
    return PowerProfile(True, reason, state, threads=threads, max_tokens=settings.max_tokens, **usual)
