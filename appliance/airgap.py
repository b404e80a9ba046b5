"""Offline by default: the one door to the network, and the self-check behind `appliance doctor`.

`appliance/__init__.py` sets the environment guards (HF_HUB_OFFLINE=1 and friends) before anything else is
imported. huggingface_hub reads HF_HUB_OFFLINE into `huggingface_hub.constants` once, at its own import, so
changing the variable later does nothing; `online()` lifts both the variable and the constant for the duration of
one explicit download, and puts both back afterwards, whatever happens. Nothing but `appliance models download`
calls it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import appliance

_door = threading.Lock()
_OFFLINE_KEYS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@contextlib.contextmanager
def online(reason: str) -> Iterator[None]:
    """Allow huggingface_hub to reach the network inside this block only. `reason` says who asked (for the log)."""
    import huggingface_hub.constants as hub_constants

    with _door:
        saved_env = {key: os.environ.get(key) for key in _OFFLINE_KEYS}
        saved_const = hub_constants.HF_HUB_OFFLINE
        try:
            for key in _OFFLINE_KEYS:
                os.environ[key] = "0"
            hub_constants.HF_HUB_OFFLINE = False
            yield
        finally:
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            hub_constants.HF_HUB_OFFLINE = saved_const


def is_offline() -> bool:
    """True when the guards are in force (outside `online()`)."""
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        return False
    hub_constants = sys.modules.get("huggingface_hub.constants")
    return hub_constants is None or bool(hub_constants.HF_HUB_OFFLINE)


# -- the self-check --------------------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped (e.g. a model on an unplugged drive)
    detail: str
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "result": "skipped" if self.ok is None else ("ok" if self.ok else "failed"),
                "detail": self.detail}


@dataclass
class NetworkWatch:
    """Every socket connect/getaddrinfo Python makes while active (an audit hook; hooks cannot be removed, so it
    only records while `active`)."""

    attempts: list[str] = field(default_factory=list)
    active: bool = False

    def hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event == "socket.connect":
            sock, address = args[0], args[1]
            if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
                self.attempts.append(f"connect {address!r}")
        elif event == "socket.getaddrinfo":
            self.attempts.append(f"getaddrinfo {args[0]!r}")


_watch: NetworkWatch | None = None


def network_watch() -> NetworkWatch:
    global _watch
    if _watch is None:
        _watch = NetworkWatch()
        sys.addaudithook(_watch.hook)
    return _watch


def env_guards() -> Check:
    wrong = {key: os.environ.get(key) for key, value in appliance._OFFLINE_ENV.items() if os.environ.get(key) != value}
    if wrong:
        return Check("environment guards", False, "not set as expected: " +
                     ", ".join(f"{k}={v!r}" for k, v in sorted(wrong.items())))
    return Check("environment guards", True, f"{len(appliance._OFFLINE_ENV)} variables set (HF_HUB_OFFLINE=1, "
                 "telemetry off for huggingface_hub, onnxruntime, chromadb, opentelemetry)")


def hub_refuses() -> Check:
    """huggingface_hub is in offline mode: a request is refused before any socket is opened."""
    import huggingface_hub.constants as hub_constants
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.utils import get_session

    if not hub_constants.HF_HUB_OFFLINE:
        return Check("huggingface_hub offline", False, "huggingface_hub.constants.HF_HUB_OFFLINE is False")
    try:
        get_session().head(f"{hub_constants.ENDPOINT}/api/models", timeout=1)
    except OfflineModeIsEnabled:
        return Check("huggingface_hub offline", True, "a hub request is refused before any socket is opened")
    except Exception as exc:  # pragma: no cover - would mean the guard did not hold
        return Check("huggingface_hub offline", False, f"a hub request was attempted ({type(exc).__name__})")
    return Check("huggingface_hub offline", False, "a hub request went through")


def engine_canary(engine) -> Check:
    """Load the default model in the engine process and generate a few tokens: `doctor` never says "ok" on a
    machine where `ask` crashes."""
    from appliance.errors import ApplianceError

    try:
        report = engine.canary()
    except ApplianceError as exc:
        return Check("engine", False, str(exc), exc.exit_code)
    detail = (f"{report['model']} answered: {report['tokens']} tokens at {report['tokens_per_s'] or 0:.1f} tokens/s "
              f"in {report['mode']} mode; llama.cpp build {report['variant']} using "
              f"{' '.join(report['features']) or 'no SIMD'}; CPU {report['cpu']} "
              f"({' '.join(report['cpu_flags']) or 'flags unknown'}); {report['threads']} threads")
    if report.get("notice"):
        detail += f"; {report['notice']}"
    return Check("engine", True, detail)


def pack_advice(default_name: str, hardware=None) -> Check:
    """Which shipped model packs fit this machine, and how to get the better one (advice, never a failure)."""
    from appliance.hardware import Hardware
    from appliance.models import packs

    hw = hardware or Hardware.detect()
    cores, ram_gib = hw.physical_cores or hw.cores, hw.total_ram / 2**30
    fits = [pack for pack in packs.SPLIT_PACKS.values() if pack.recommended_cores
            and cores >= pack.recommended_cores and ram_gib >= pack.recommended_ram_gib]
    best = max(fits, key=lambda pack: pack.size, default=None)
    machine = f"{cores} cores, {ram_gib:.0f} GiB RAM"
    if best is None:
        return Check("model choice", True, f"default {default_name}; no shipped pack is recommended for this "
                                           f"machine ({machine}): keep the small default")
    if best.name == default_name:
        return Check("model choice", True, f"default {default_name}, the best pack for this machine ({machine})")
    step = ("" if best.installed else f"`appliance models install-pack {best.name}` (online), then ")
    return Check("model choice", True, f"default {default_name}; this machine ({machine}) fits {best.name}, which "
                                       f"answers better: {step}`appliance models default {best.name}`")


def doctor(library, progress_for=None, engine=None, default_name: str = "") -> list[Check]:
    """The self-check: env guards, hub offline mode, every reachable model verifies, the engine answers, and no
    network was used."""
    from appliance.errors import ApplianceError

    watch = network_watch()
    watch.attempts.clear()
    watch.active = True
    checks = [env_guards()]
    try:
        checks.append(hub_refuses())
        for entry in library.entries():
            label = f"model {entry.name}"
            if not entry.available:
                checks.append(Check(label, None, f"offline: {entry.path} is not reachable"))
                continue
            try:
                library.verify(entry, progress_for(entry.name) if progress_for else None)
                checks.append(Check(label, True, f"sha256 matches the record ({entry.total_size / 1e6:.1f} MB)"))
            except ApplianceError as exc:
                checks.append(Check(label, False, str(exc), exc.exit_code))
        if engine is not None:
            checks.append(engine_canary(engine))
        checks.append(pack_advice(default_name or library.default_name()))
    finally:
        watch.active = False
    attempts = list(watch.attempts)
    checks.append(Check("no network used", not attempts,
                        "no socket connect or name lookup during this check" if not attempts
                        else f"{len(attempts)} attempt(s): {'; '.join(attempts[:3])}"))
    return checks
