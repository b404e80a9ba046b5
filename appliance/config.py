"""Typed settings from config.toml. Precedence: command-line flag > environment > file > defaults.

Read with tomllib; written with tomlkit (so a user's comments survive) by `set_value`. Every value is checked at
the edge, with the offending key named: its type (4096.7 is not a context size, `true` is not a thread count),
its range, and that floats are finite.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import tomlkit

from appliance.errors import ApplianceError
from appliance.paths import atomic_write_text

_WHOLE = re.compile(r"[+-]?[0-9]{1,18}")  # a whole number as config.toml or the environment may spell it


def max_threads() -> int:
    return 2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _range(low, high, choices: tuple = ()) -> dict:
    return {"low": low, "high": high, "choices": choices}


@dataclass
class ModelSettings:
    default: str = ""  # empty: the default model pack (packs.default_model_name)
    context: int = field(default=4096, metadata=_range(256, 1 << 20))  # capped at the model's own at load time
    threads: int = field(default=0, metadata=_range(0, max_threads))  # 0: one per physical core
    max_tokens: int = field(default=512, metadata=_range(1, 32768))
    temperature: float = field(default=0.2, metadata=_range(0.0, 2.0))
    repeat_penalty: float = field(default=1.1, metadata=_range(1.0, 2.0))  # >1 discourages repeating tokens
    seed: int = field(default=42, metadata=_range(0, 2**32 - 1))


@dataclass
class HardwareSettings:
    ram_limit_mb: int = field(default=0, metadata=_range(0, 1 << 24))  # 0: what the machine has available


@dataclass
class EngineSettings:
    # auto (normal, falling back to safe, fallback, baseline and remembering), or force one of them
    mode: str = field(default="auto", metadata=_range(None, None, ("auto", "normal", "safe", "fallback", "baseline")))
    hang_timeout_s: float = field(default=120.0, metadata=_range(1.0, 86400.0))  # a silent engine is stopped


@dataclass
class AirgapSettings:
    # the seccomp lock (appliance/system/netlock.py): no AF_INET/AF_INET6 socket for any command but the online ones
    lock: bool = True


@dataclass
class PowerSettings:
    # low-power profile: auto (on battery), on (always), off (never)
    low_power: str = field(default="auto", metadata=_range(None, None, ("auto", "on", "off")))
    threads: int = field(default=0, metadata=_range(0, max_threads))  # in low power; 0: half the usual threads
    max_tokens: int = field(default=256, metadata=_range(1, 32768))  # default answer length in low power


@dataclass
class KBSettings:
    # register the shipped field guide in a library on its first use (appliance.answering.field_guide); an owner
    # who removed the guide needs nothing here (the removal is kept); false for a library with no guide at all
    field_guide: bool = True
    # read a question's 20 best passages again with the reranker pack (all-mpnet-base-v2), when it is installed:
    # better passages first, about 2 s more a question on 2 cores (docs/knowledge-base.md)
    rerank: bool = True


@dataclass
class Config:
    model: ModelSettings = field(default_factory=ModelSettings)
    hardware: HardwareSettings = field(default_factory=HardwareSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    airgap: AirgapSettings = field(default_factory=AirgapSettings)
    power: PowerSettings = field(default_factory=PowerSettings)
    kb: KBSettings = field(default_factory=KBSettings)

    @classmethod
    def load(cls, path: Path) -> "Config":
        data: dict = {}
        if path.exists() or path.is_symlink():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ApplianceError(f"config file {path} is not valid TOML: {exc}") from None
            except OSError as exc:
                raise ApplianceError(f"config file {path} cannot be read ({exc.strerror or exc})") from None
        config = cls()
        for section in fields(cls):
            target = getattr(config, section.name)
            _apply(target, data.get(section.name, {}), f"{path}: [{section.name}]")
            _apply_env(target, section.name)
        return config


def _apply(target, values: dict, where: str) -> None:
    if not isinstance(values, dict):
        raise ApplianceError(f"{where} must be a table")
    known = {f.name: f for f in fields(target)}
    for key, value in values.items():
        if key not in known:
            continue  # unknown keys are kept in the file and ignored, so newer configs still load
        setattr(target, key, _checked(value, known[key], f"{where} {key}"))


def _apply_env(target, section: str) -> None:
    for f in fields(target):
        name = f"APPLIANCE_{section.upper()}_{f.name.upper()}"
        env = os.environ.get(name)
        if env is not None:
            setattr(target, f.name, _checked(env, f, name))


def _checked(value, spec, where: str):
    """`value` (from TOML or the environment) as the field's type, within its range; else one clear error."""
    kind = type(spec.default)
    text = value.strip() if isinstance(value, str) else None
    shown = repr(value)[:60]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return text.lower() in {"1", "true", "yes", "on"}
        raise ApplianceError(f"{where}: expected true or false, got {shown}")
    number: float  # an int for int fields
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif text is not None and _WHOLE.fullmatch(text):  # ASCII digits only: "²".isdigit() is True, int() refuses it
            number = int(text)
        else:
            raise ApplianceError(f"{where}: expected a whole number, got {shown}")
    elif kind is float:
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            number = float(value)
        except ValueError:
            raise ApplianceError(f"{where}: expected a number, got {shown}") from None
        if not math.isfinite(number):
            raise ApplianceError(f"{where}: expected a finite number, got {shown}")
    else:
        if not isinstance(value, str):
            raise ApplianceError(f"{where}: expected text, got {shown}")
        choices = spec.metadata.get("choices") if spec.metadata else ()
        if choices and value not in choices:
            raise ApplianceError(f"{where}: expected one of {', '.join(choices)}, got {shown}")
        return value
    low, high = spec.metadata.get("low"), spec.metadata.get("high")
    high = high() if callable(high) else high
    if (low is not None and number < low) or (high is not None and number > high):
        raise ApplianceError(f"{where}: {number} is out of range ({low} to {high})")
    return number


def set_value(path: Path, dotted_key: str, value) -> None:
    """Set `section.key` in config.toml, keeping the rest of the file (comments included) as it was."""
    section, _, key = dotted_key.partition(".")
    if not key:
        raise ApplianceError(f"config keys look like section.key, not {dotted_key!r}")
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    if section not in document:
        document[section] = tomlkit.table()
    document[section][key] = value
    atomic_write_text(path, tomlkit.dumps(document))
