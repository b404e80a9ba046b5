"""The registry of model files: which names exist, where their files are, and their provenance records.

library.json lists every model, including files used in place on other drives. Each model's manifest lives in
APPLIANCE_HOME/models/ (and beside the file when the file itself is there). The bundled default model pack
registers itself on first use, after its sha256 matches the pin.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, IntegrityError, ModelNotFound
from appliance.models import manifest, packs
from appliance.models.gguf_meta import read_gguf
from appliance.models.verify import Progress, check_file, sha256_file
from appliance.paths import Paths, atomic_write_text

LIBRARY_VERSION = 1


@dataclass
class ModelEntry:
    name: str
    path: Path
    manifest_path: Path
    mode: str  # "pack", "copy" or "in-place"
    quarantined: bool = False
    _record: dict[str, Any] | None = None

    @property
    def record(self) -> dict[str, Any]:
        if self._record is None:
            self._record = manifest.read(self.manifest_path)
        return self._record

    @property
    def sha256(self) -> str:
        return self.record["file"]["sha256"]

    @property
    def size(self) -> int:
        return self.record["file"]["size"]

    @property
    def license_id(self) -> str:
        return self.record["license"]["id"]

    @property
    def available(self) -> bool:
        return self.path.exists()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"


class ModelLibrary:
    def __init__(self, paths: Paths):
        self.paths = paths

    # -- registry file ---------------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.paths.library.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": LIBRARY_VERSION, "default": None, "models": {}}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApplianceError(f"{self.paths.library} is damaged ({exc}); move it aside and re-import models") from None
        data.setdefault("models", {})
        return data

    def _save(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.paths.library, json.dumps(data, indent=2) + "\n")

    def _entry(self, name: str, raw: dict[str, Any]) -> ModelEntry:
        return ModelEntry(
            name=name,
            path=Path(raw["path"]),
            manifest_path=Path(raw["manifest"]),
            mode=raw.get("mode", "in-place"),
            quarantined=bool(raw.get("quarantined", False)),
        )

    # -- queries ---------------------------------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        self.ensure_default_pack()
        data = self._load()
        return [self._entry(name, raw) for name, raw in sorted(data["models"].items())]

    def default_name(self, configured: str = "") -> str:
        if configured:
            return configured
        data = self._load()
        return data.get("default") or packs.DEFAULT_MODEL.name

    def resolve(self, name: str | None = None, configured_default: str = "") -> ModelEntry:
        self.ensure_default_pack()
        wanted = name or self.default_name(configured_default)
        data = self._load()
        raw = data["models"].get(wanted)
        if raw is None:
            known = ", ".join(sorted(data["models"])) or "none"
            raise ModelNotFound(f"no model named {wanted!r} in the library (known: {known}); see `appliance models list`")
        return self._entry(wanted, raw)

    # -- changes ---------------------------------------------------------------------------------------------
    def register(
        self,
        path: Path,
        *,
        name: str | None = None,
        mode: str = "in-place",
        source: dict[str, Any] | None = None,
        expected_sha256: str | None = None,
        progress: Progress | None = None,
    ) -> ModelEntry:
        """Hash a GGUF, parse its header with limits, write its manifest and add it to the library."""
        path = Path(path).expanduser().resolve()
        info = read_gguf(path)  # rejects truncated or hostile headers before anything else
        name = slug(name or path.name.removesuffix(".gguf"))
        self.paths.models.mkdir(parents=True, exist_ok=True)
        sha = sha256_file(path, progress)
        if expected_sha256 and sha != expected_sha256:
            raise IntegrityError(f"{path}: sha256 {sha} does not match the pinned {expected_sha256}; not registered")
        if mode == "copy":
            target = self.paths.models / path.name
            if target != path:
                tmp = target.with_name(target.name + ".partial")
                shutil.copyfile(path, tmp)
                if sha256_file(tmp) != sha:
                    tmp.unlink(missing_ok=True)
                    raise IntegrityError(f"copy of {path} to {target} does not match the original; not registered")
                tmp.replace(target)
            path = target
        record = manifest.from_gguf(name, path, info.file_size, sha, info,
                                    source or {"kind": "local-import", "original_path": str(path)})
        manifest_path = self.paths.models / f"{name}{manifest.SUFFIX}"
        manifest.write(manifest_path, record)
        data = self._load()
        data["models"][name] = {"path": str(path), "manifest": str(manifest_path), "mode": mode, "quarantined": False}
        self._save(data)
        return self._entry(name, data["models"][name])

    def ensure_default_pack(self) -> None:
        """Register the bundled default model the first time a data dir is used (verified against the pin)."""
        pack = packs.DEFAULT_MODEL
        data = self._load()
        if pack.name in data["models"]:
            return
        path = pack.locate()
        self.register(path, name=pack.name, mode="pack", source=pack.source(), expected_sha256=pack.sha256)

    def verify(self, entry: ModelEntry, progress: Progress | None = None) -> str:
        """Re-hash against the manifest. A mismatch quarantines the model; the file is never loaded."""
        if entry.quarantined:
            raise IntegrityError(
                f"model {entry.name!r} ({entry.path}) is quarantined after a failed check; "
                "re-import it on purpose to use it again"
            )
        try:
            sha = check_file(entry.path, entry.size, entry.sha256, progress)
        except IntegrityError as exc:
            if entry.path.exists():
                self._set_quarantine(entry.name, True)
            self._record_check(entry, "mismatch" if entry.path.exists() else "missing", str(exc))
            raise
        self._record_check(entry, "ok", sha)
        return sha

    def _set_quarantine(self, name: str, value: bool) -> None:
        data = self._load()
        if name in data["models"]:
            data["models"][name]["quarantined"] = value
            self._save(data)

    def _record_check(self, entry: ModelEntry, result: str, detail: str) -> None:
        record = dict(entry.record)
        history = list(record.get("verification", []))[-19:]
        history.append({"at": manifest.now(), "result": result, "detail": detail[:300], "by": "verify"})
        record["verification"] = history
        try:
            manifest.write(entry.manifest_path, record)
        except OSError:
            pass  # a read-only manifest location must not stop a verified load
        entry._record = record
