"""The registry of model files, library.json: which names exist, where their files and records are, whether
each is quarantined. The file is read afresh at each question and changed under an exclusive lock (the TUI and a
CLI may run at once); a damaged or newer file is one clear error, never a guess.

The library's own copy of each record (APPLIANCE_HOME/models/<name>.manifest.json) is what checks are made against;
a sidecar `<file>.manifest.json` beside the file carries the record with the file when the directory is writable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from appliance.errors import ApplianceError
from appliance.models import manifest
from appliance.models.record import ModelRecord
from appliance.models.verify import read_regular
from appliance.paths import Paths, atomic_write_text

LIBRARY_VERSION = 1
MAX_LIBRARY_BYTES = 64 * 1024 * 1024


@dataclass
class ModelEntry:
    name: str
    path: Path  # the file handed to llama.cpp (the first shard of a split set)
    manifest_path: Path
    mode: str  # "pack", "copy", "in-place" or "download"
    quarantined: bool = False
    _record: dict[str, Any] | None = None

    _info: tuple[dict[str, Any], ModelRecord] | None = None  # (the record it was read from, the typed view)

    @property
    def record(self) -> dict[str, Any]:
        """The record as stored (the versioned JSON document); read it through `info` unless writing it."""
        if self._record is None:
            self._record = manifest.read(self.manifest_path)
        return self._record

    def remember(self, record: dict[str, Any]) -> None:
        """The record as just written (the registry's save_record): later reads see it without reading the file."""
        self._record = record

    @property
    def info(self) -> ModelRecord:
        """The typed view of the record: the license label, commercial use and consent reasons come from here."""
        record = self.record
        if self._info is None or self._info[0] is not record:
            self._info = (record, ModelRecord.from_dict(record))
        return self._info[1]

    @property
    def sha256(self) -> str:
        return self.record["file"]["sha256"]

    @property
    def size(self) -> int:
        return self.record["file"]["size"]

    @property
    def total_size(self) -> int:
        shards = self.record["file"].get("shard_set")
        return shards["total_size"] if shards else self.size

    @property
    def role(self) -> str:
        return self.info.file.role

    @property
    def license_id(self) -> str:
        return self.info.license.id

    @property
    def files(self) -> list[tuple[Path, int, str]]:
        """(path, size, sha256) of every file of the model: one, or each shard of a split set."""
        shards = self.record["file"].get("shard_set")
        if not shards:
            return [(self.path, self.size, self.sha256)]
        return [(self.path.with_name(f["name"]), f["size"], f["sha256"]) for f in shards["files"]]

    @property
    def available(self) -> bool:
        return all(path.exists() for path, _, _ in self.files)

    @property
    def last_check(self) -> dict[str, Any] | None:
        history = self.record.get("verification") or []
        return history[-1] if history else None

    @property
    def state(self) -> str:
        """quarantined, offline (file not reachable: drive unplugged or file moved), verified or failed."""
        if self.quarantined:
            return "quarantined"
        if not self.available:
            return "offline"
        last = self.last_check
        return "verified" if last and last.get("result") == "ok" else "unverified"


def usable(raw: Any) -> bool:
    return isinstance(raw, dict) and isinstance(raw.get("path"), str) and bool(raw["path"]) \
        and isinstance(raw.get("manifest"), str) and bool(raw["manifest"])


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"


def write_sidecar(first: Path, record: dict[str, Any]) -> None:
    """The record beside the file, so it travels with it; a read-only drive keeps only the library's copy."""
    try:
        manifest.write(manifest.sidecar_path(first), record)
    except OSError:
        pass


class Registry:
    """library.json and the library's copies of the records."""

    def __init__(self, paths: Paths):
        self.paths = paths
        self.legacy_default: str | None = None  # an old library.json's "default", moved to config.toml once

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write library.json under an exclusive lock (the TUI and a CLI may run at once)."""
        self.paths.home.mkdir(parents=True, exist_ok=True)
        with open(self.paths.library.with_name(".library.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.load()
            yield data
            self._save(data)

    def load(self) -> dict[str, Any]:
        where = self.paths.library
        try:
            raw = read_regular(where, MAX_LIBRARY_BYTES)
        except FileNotFoundError:
            return {"version": LIBRARY_VERSION, "models": {}}
        except ApplianceError as exc:
            raise ApplianceError(f"{exc}; move {where.name} aside and re-import models") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ApplianceError(f"{where} is damaged ({str(exc)[:120]}); move it aside and re-import models") from None
        if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
            raise ApplianceError(f"{where} is damaged (no table of models); move it aside and re-import models")
        version = data.get("version", LIBRARY_VERSION)
        if not isinstance(version, int) or version > LIBRARY_VERSION:
            raise ApplianceError(f"{where} was written by a newer appliance (version {version!r}); upgrade to read it")
        data.setdefault("models", {})
        if "default" in data:  # an old file: the default model lives in config.toml now
            self._migrate_default(data.pop("default"))
        return data

    def _migrate_default(self, value: Any) -> None:
        """library.json once had a "default" key that nothing set; a hand-set value moves to config.toml once."""
        if not isinstance(value, str) or not value or self.legacy_default is not None:
            return
        self.legacy_default = value
        from appliance.config import Config, set_value

        with contextlib.suppress(ApplianceError, OSError):
            if not Config.load(self.paths.config).model.default:
                set_value(self.paths.config, "model.default", value)

    def _save(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.paths.library, json.dumps(data, indent=2) + "\n")

    def entry(self, name: str, raw: Any) -> ModelEntry:
        if not usable(raw):
            raise ApplianceError(
                f"{self.paths.library} is damaged: the entry for {name!r} does not say where its file and record "
                f"are; remove it with `appliance models remove {name}` and import the file again"
            )
        return ModelEntry(
            name=name,
            path=Path(raw["path"]),
            manifest_path=Path(raw["manifest"]),
            mode=str(raw.get("mode", "in-place")),
            quarantined=bool(raw.get("quarantined", False)),
        )

    def set_quarantine(self, name: str, value: bool) -> None:
        with self.locked() as data:
            if name in data["models"]:
                data["models"][name]["quarantined"] = value

    def record_check(self, entry: ModelEntry, result: str, detail: str) -> None:
        record = dict(entry.record)
        manifest.add_history(record, result, detail, "verify")
        self.save_record(entry, record)

    def save_record(self, entry: ModelEntry, record: dict[str, Any]) -> None:
        """Write the library's copy of the record, and the sidecar beside the file when it can."""
        try:
            manifest.write(entry.manifest_path, record)
        except OSError:
            pass  # a read-only data dir must not stop a verified load
        if entry.mode != "pack" and entry.path.parent.exists() and not entry.quarantined:
            write_sidecar(entry.path, record)
        entry.remember(record)

    def get(self, name: str) -> ModelEntry | None:
        raw = self.load()["models"].get(name)
        return None if raw is None else self.entry(name, raw)

    def names(self) -> list[str]:
        return sorted(self.load()["models"])

    def put(self, name: str, first: Path, manifest_path: Path, mode: str) -> ModelEntry:
        with self.locked() as data:
            data["models"][name] = {"path": str(first), "manifest": str(manifest_path), "mode": mode,
                                    "quarantined": False}
            raw = data["models"][name]
        return self.entry(name, raw)

    def forget(self, name: str) -> None:
        with self.locked() as data:
            data["models"].pop(name, None)
