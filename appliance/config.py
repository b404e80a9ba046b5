"""Typed settings from config.toml. Precedence: command-line flag > environment > file > defaults.

Read with tomllib; written with tomlkit (so a user's comments survive) by `set_value`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import tomlkit

from appliance.errors import ApplianceError
from appliance.paths import atomic_write_text


@dataclass
class ModelSettings:
    default: str = ""  # empty: the bundled default model pack
    context: int = 4096
    threads: int = 0  # 0: decided from the hardware
    max_tokens: int = 512
    temperature: float = 0.2
    seed: int = 42


@dataclass
class HardwareSettings:
    ram_limit_mb: int = 0  # 0: use what the machine has available; otherwise a cap the owner sets


@dataclass
class EngineSettings:
    mode: str = "auto"  # auto (normal, falling back to safe and remembering), or force normal / safe / baseline
    hang_timeout_s: float = 120.0  # an engine process silent this long is stopped


@dataclass
class Config:
    model: ModelSettings = field(default_factory=ModelSettings)
    hardware: HardwareSettings = field(default_factory=HardwareSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)

    @classmethod
    def load(cls, path: Path) -> "Config":
        data: dict = {}
        if path.exists():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ApplianceError(f"config file {path} is not valid TOML: {exc}") from None
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
        setattr(target, key, _coerce(value, type(getattr(target, key)), f"{where} {key}"))


def _apply_env(target, section: str) -> None:
    for f in fields(target):
        env = os.environ.get(f"APPLIANCE_{section.upper()}_{f.name.upper()}")
        if env is not None:
            setattr(target, f.name, _coerce(env, type(getattr(target, f.name)), f"APPLIANCE_{section.upper()}_{f.name.upper()}"))


def _coerce(value, kind: type, where: str):
    try:
        if kind is bool and isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return kind(value)
    except (TypeError, ValueError):
        raise ApplianceError(f"{where}: expected {kind.__name__}, got {value!r}") from None


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
