"""The owner's choices about models: which one is the default, and which ones they accepted despite a warning.

Both are core operations with CLI commands (`appliance models default NAME`, `appliance models accept NAME`); the
TUI calls the same functions. The default lives in config.toml ([model] default, written with
appliance.config.set_value so comments survive). Consent lives in APPLIANCE_HOME/consents.json, per file sha256,
with the reasons that were shown: accepting a model's unknown license does not accept a content warning added
later, and a different file under the same name is a different model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, UsageError
from appliance.models import manifest
from appliance.models.record import ModelRecord
from appliance.models.verify import read_regular
from appliance.paths import atomic_write_text

CONSENTS = "consents.json"
LEGACY_CONSENTS = "tui-state.json"  # where the TUI kept them before (its "acknowledged" map is still honoured)
MAX_BYTES = 4 * 1024 * 1024


# -- the default model -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DefaultChoice:
    name: str  # the model that will be used when none is named
    written: str  # what config.toml now says
    overridden_by: str | None  # an environment variable that wins over the file, if one is set


def set_default(library: Any, config: Any, config_path: Path, name: str) -> DefaultChoice:
    """Make `name` the default model: it must be registered, loadable as a model and not quarantined.

    Writes [model] default to config.toml and updates `config` (the running Config) to match."""
    from appliance.config import Config, set_value

    entry = library.resolve(name)
    if entry.role != "model":
        raise UsageError(f"{entry.name!r} is a {entry.role}, not a model that can answer on its own")
    if entry.quarantined:
        raise ApplianceError(f"{entry.name!r} is quarantined after a failed check; re-import it on purpose first")
    value = entry.name
    try:
        set_value(config_path, "model.default", value)
    except OSError as exc:
        raise ApplianceError(f"cannot write {config_path}: {exc.strerror or exc}") from None
    effective = Config.load(config_path).model.default
    config.model.default = effective
    env = "APPLIANCE_MODEL_DEFAULT"
    return DefaultChoice(name=library.default_name(effective), written=value,
                         overridden_by=env if os.environ.get(env) is not None else None)


# -- consent -----------------------------------------------------------------------------------------------------
class Consents:
    """Which model files the owner accepted despite a license or content warning (by sha256, with the reasons)."""

    def __init__(self, home: Path):
        self.path = Path(home) / CONSENTS
        self.legacy = Path(home) / LEGACY_CONSENTS

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(read_regular(path, MAX_BYTES).decode("utf-8"))
        except (FileNotFoundError, ApplianceError, ValueError, UnicodeDecodeError, RecursionError):
            return {}  # unreadable: nothing was accepted (the owner is asked again, never assumed to agree)
        return data if isinstance(data, dict) else {}

    def _accepted(self) -> dict[str, Any]:
        accepted = self._read(self.path).get("accepted")
        return accepted if isinstance(accepted, dict) else {}

    def _legacy(self) -> dict[str, Any]:
        acknowledged = self._read(self.legacy).get("acknowledged")
        return acknowledged if isinstance(acknowledged, dict) else {}

    def needed(self, record: ModelRecord | dict[str, Any], sha256: str | None = None) -> list[str]:
        """The reasons to show before this file is used that the owner has not accepted yet."""
        record = ModelRecord.of(record)
        reasons = record.consent_reasons()
        sha = sha256 or record.file.sha256
        if not reasons:
            return []
        if sha in self._legacy():
            return []  # accepted in the TUI before reasons were recorded
        given = self._accepted().get(sha)
        shown = set(given.get("reasons") or []) if isinstance(given, dict) else set()
        return [reason for reason in reasons if reason not in shown]

    def given(self, record: ModelRecord | dict[str, Any], sha256: str | None = None) -> bool:
        return not self.needed(record, sha256)

    def give(self, name: str, record: ModelRecord | dict[str, Any], by: str, sha256: str | None = None
             ) -> dict[str, Any]:
        """Record that the owner accepted this file with the reasons it has now. Returns what was recorded."""
        record = ModelRecord.of(record)
        sha = sha256 or record.file.sha256
        data = self._read(self.path)
        accepted: dict[str, Any] = data["accepted"] if isinstance(data.get("accepted"), dict) else {}
        entry = {"name": name, "at": manifest.now(), "by": by, "reasons": record.consent_reasons()}
        accepted[sha] = entry
        try:
            atomic_write_text(self.path, json.dumps({"version": 1, "accepted": accepted}, indent=2,
                                                    ensure_ascii=False) + "\n")
        except OSError as exc:
            raise ApplianceError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        return dict(entry, sha256=sha)


def accept(library: Any, home: Path, name: str, by: str = "cli") -> dict[str, Any]:
    """`appliance models accept NAME`: record the owner's consent to the model's current warnings."""
    entry = library.resolve(name)
    consents = Consents(home)
    record = entry.info
    reasons = record.consent_reasons()
    if not reasons:
        return {"name": entry.name, "sha256": entry.sha256, "reasons": [], "recorded": False}
    given = consents.give(entry.name, record, by, entry.sha256)
    return dict(given, recorded=True)
