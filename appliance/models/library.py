"""The model library: one facade over its three jobs, each in its own module (the CLI, the TUI, the engine and the
bundle call this; none reaches into the parts):

  registry.py      library.json (names, paths, quarantine) and the library's copies of the records; ModelEntry
  importer.py      import a file, a split set or a folder; register a pack on first use
  verification.py  open and hash every file through its descriptor before llama.cpp gets it; quarantine

library.json lists every model, including files used in place on other drives (a drive that is not plugged in
shows its models as offline). Importing a file whose sidecar names another sha256 is refused. A model whose file
fails a check is quarantined: it is never loaded again until the user re-imports it on purpose.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, ModelNotFound, UsageError
from appliance.models import manifest, packs, signing
from appliance.models.importer import SHARD_NAME, Importer, shard_set
from appliance.models.registry import ModelEntry, Registry, slug, usable
from appliance.models.verification import (
    TEMPLATE_CHECKER,
    TemplateRefusedError,
    VerifiedFiles,
    Verifier,
    check_template,
)
from appliance.models.verify import Progress
from appliance.paths import Paths

__all__ = ["ModelLibrary", "ModelEntry", "VerifiedFiles", "TemplateRefusedError", "check_template", "shard_set",
           "slug", "SHARD_NAME", "TEMPLATE_CHECKER"]


class ModelLibrary:
    def __init__(self, paths: Paths):
        self.paths = paths
        self.registry = Registry(paths)
        self.importer = Importer(paths, self.registry)
        self.verifier = Verifier(paths, self.registry)
        # the jobs' entry points, as the facade's own
        self.import_path = self.importer.import_path
        self.register = self.importer.register
        self.ensure_pack = self.importer.ensure_pack
        self.register_split_pack = self.importer.register_split_pack
        self.verify = self.verifier.verify
        self.open_verified = self.verifier.open_verified
        self.save_record = self.registry.save_record

    # -- queries ---------------------------------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        for name in (packs.SMOLLM2.name, *packs.SPLIT_PACKS):
            with contextlib.suppress(ApplianceError):  # a missing or damaged pack must not hide the other models
                self.importer.ensure_pack(name)
        data = self.registry.load()
        return [self.registry.entry(name, raw) for name, raw in sorted(data["models"].items())]

    def default_name(self, configured: str = "") -> str:
        """The model used when none is named: [model] default from config.toml (or APPLIANCE_MODEL_DEFAULT), else
        the default pack when it is installed, else SmolLM2 (packs.default_model_name)."""
        if configured:
            return configured
        self.registry.load()  # an old library.json's "default" moves to config.toml here
        return self.registry.legacy_default or packs.default_model_name()

    def resolve(self, name: str | None = None, configured_default: str = "") -> ModelEntry:
        wanted = name or self.default_name(configured_default)
        self.importer.ensure_pack(wanted)
        entry = self.registry.get(wanted)
        if entry is None:
            known = ", ".join(entry.name for entry in self.entries()) or "none"  # the installed packs included
            raise ModelNotFound(f"no model named {wanted!r} in the library (known: {known}); "
                                "see `appliance models list`")
        return entry

    # -- changes to a record ---------------------------------------------------------------------------------
    def assert_license(self, entry: ModelEntry, value: str | None, note: str = "") -> dict[str, Any]:
        """Add (value) or clear (None) the user's own license assertion; it is marked as the user's."""
        record = dict(entry.record)
        manifest.relicense(record, manifest.user_assertion(value, note) if value else None)
        self.registry.save_record(entry, record)
        return record["license"]

    def add_note(self, entry: ModelEntry, text: str) -> list[dict[str, Any]]:
        record = dict(entry.record)
        record["content_warnings"] = list(record.get("content_warnings", [])) + [
            {"kind": "user-note", "value": text, "from": "user", "at": manifest.now(), "text": f"your note: {text}"}]
        self.registry.save_record(entry, record)
        return record["content_warnings"]

    def sign(self, entry: ModelEntry, private_key: Path, progress: Progress | None = None) -> dict[str, Any]:
        """Verify the files, then sign their hashes and pin the key in the record."""
        self.verify(entry, progress)
        files = [{"name": p.name, "size": s, "sha256": h} for p, s, h in entry.files]
        pinned = signing.sign(private_key, signing.payload_for(entry.name, files), signing.signature_path(entry.path))
        record = dict(entry.record)
        record["signature"] = dict(pinned, pinned_at=manifest.now(), pinned_by="sign")
        self.registry.save_record(entry, record)
        return record["signature"]

    def remove(self, name: str, delete_file: bool = False) -> ModelEntry:
        raw = self.registry.load()["models"].get(name)
        if raw is not None and not usable(raw):  # a damaged entry can always be forgotten
            if delete_file:
                raise UsageError(f"the library's entry for {name!r} is damaged (it does not say where the file is); "
                                 "remove it without --delete-file")
            self.registry.forget(name)
            return ModelEntry(name, Path(str(raw.get("path", "")) if isinstance(raw, dict) else ""), Path(""),
                              "damaged")
        entry = self.resolve(name)
        if entry.mode == "pack":
            raise UsageError(f"{name!r} is a model pack, part of the installation; it registers itself again on "
                             "first use (choose another default with `appliance models default NAME`)")
        if delete_file and not entry.available:
            raise ApplianceError(f"{entry.path} is not reachable (drive unplugged?); remove without --delete-file")
        if delete_file:
            for path, _, _ in entry.files:
                for doomed in (path, manifest.sidecar_path(path), signing.signature_path(path)):
                    doomed.unlink(missing_ok=True)
        self.registry.forget(name)
        entry.manifest_path.unlink(missing_ok=True)
        return entry
