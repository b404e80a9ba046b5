"""The registry of model files: which names exist, where their files are, and their provenance records.

library.json lists every model, including files used in place on other drives (a drive that is not plugged in
shows its models as offline). The library's own copy of each record (APPLIANCE_HOME/models/<name>.manifest.json)
is what checks are made against; a sidecar `<file>.manifest.json` beside the file carries the record with the
file when the directory is writable. Importing a file whose sidecar names another sha256 is refused.

A model whose file fails a check is quarantined: it is never loaded again until the user re-imports it on purpose.
Installed model packs register themselves on first use, after their sha256 matches the pin.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from appliance.errors import ApplianceError, IntegrityError, ModelNotFound, UsageError
from appliance.models import catalog, manifest, packs, signing
from appliance.models.gguf_meta import GGUFError, GGUFInfo, read_gguf
from appliance.models.record import ModelRecord
from appliance.models.verify import CHUNK, Progress, check_fd, open_regular, read_regular, sha256_file
from appliance.paths import Paths, atomic_write_text

LIBRARY_VERSION = 1
MAX_LIBRARY_BYTES = 64 * 1024 * 1024
TEMPLATE_CHECKER = 1  # bump when the template sandbox's budget changes: stored verdicts are then made again
SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
MAX_SHARDS = 1024


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


def _usable(raw: Any) -> bool:
    return isinstance(raw, dict) and isinstance(raw.get("path"), str) and bool(raw["path"]) \
        and isinstance(raw.get("manifest"), str) and bool(raw["manifest"])


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"


def shard_set(path: Path) -> list[Path]:
    """All files of the split set `path` belongs to (in order), or [path] for a single file."""
    match = SHARD_NAME.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    if not 1 <= count <= MAX_SHARDS:
        raise UsageError(f"{path.name}: a split set of {count} files is not supported")
    files = [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise ApplianceError(f"{path.name}: split set is incomplete; missing {', '.join(missing)} in {path.parent}")
    return files


@dataclass
class VerifiedFiles:
    """Open descriptors of a model's files whose content was just hashed; close them when done."""

    fds: list[int]
    paths: list[Path]

    def fd_path(self, index: int = 0) -> Path:
        """A path that reopens exactly the verified file (the same inode), whatever happened to its name since."""
        return Path(f"/proc/self/fd/{self.fds[index]}")

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())

    def __enter__(self) -> "VerifiedFiles":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


class _Cumulative:
    """One progress callback over several files."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.base = progress, total, 0

    def part(self) -> Progress | None:
        if not self.progress:
            return None
        base, progress = self.base, self.progress
        return lambda done, _total: progress(base + done, self.total)

    def advance(self, size: int) -> None:
        self.base += size


class ModelLibrary:
    def __init__(self, paths: Paths):
        self.paths = paths
        self._legacy_default: str | None = None

    # -- registry file ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write library.json under an exclusive lock (the TUI and a CLI may run at once)."""
        self.paths.home.mkdir(parents=True, exist_ok=True)
        with open(self.paths.library.with_name(".library.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            yield data
            self._save(data)

    def _load(self) -> dict[str, Any]:
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
        if not isinstance(value, str) or not value or self._legacy_default is not None:
            return
        self._legacy_default = value
        from appliance.config import Config, set_value

        with contextlib.suppress(ApplianceError, OSError):
            if not Config.load(self.paths.config).model.default:
                set_value(self.paths.config, "model.default", value)

    def _save(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.paths.library, json.dumps(data, indent=2) + "\n")

    def _entry(self, name: str, raw: Any) -> ModelEntry:
        if not _usable(raw):
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

    # -- queries ---------------------------------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        for name in (packs.SMOLLM2.name, *packs.SPLIT_PACKS):
            with contextlib.suppress(ApplianceError):  # a missing or damaged pack must not hide the other models
                self.ensure_pack(name)
        data = self._load()
        return [self._entry(name, raw) for name, raw in sorted(data["models"].items())]

    def default_name(self, configured: str = "") -> str:
        """The model used when none is named: [model] default from config.toml (or APPLIANCE_MODEL_DEFAULT), else
        the default pack when it is installed, else SmolLM2 (packs.default_model_name)."""
        if configured:
            return configured
        self._load()  # an old library.json's "default" moves to config.toml here
        return self._legacy_default or packs.default_model_name()

    def resolve(self, name: str | None = None, configured_default: str = "") -> ModelEntry:
        wanted = name or self.default_name(configured_default)
        self.ensure_pack(wanted)
        data = self._load()
        raw = data["models"].get(wanted)
        if raw is None:
            known = ", ".join(entry.name for entry in self.entries()) or "none"  # the installed packs included
            raise ModelNotFound(f"no model named {wanted!r} in the library (known: {known}); "
                                "see `appliance models list`")
        return self._entry(wanted, raw)

    # -- import ----------------------------------------------------------------------------------------------
    def import_path(self, path: Path, *, name: str | None = None, mode: str = "in-place",
                    progress_for=None) -> list[tuple[Path, ModelEntry | ApplianceError]]:
        """Import one GGUF, a split set (any of its files), or every GGUF in a directory.

        Returns (path, entry or the error that stopped it) for each model found; `progress_for(label)` gives a
        progress callback per model.
        """
        path = Path(path).expanduser().resolve()
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
        if path.is_dir():
            if name:
                raise UsageError("--name names one model; it cannot be used when importing a directory")
            firsts = []
            for candidate in sorted(path.glob("*.gguf")):
                match = SHARD_NAME.match(candidate.name)
                if not match or int(match["index"]) == 1:
                    firsts.append(candidate)
            if not firsts:
                raise UsageError(f"{path}: no .gguf files in this directory")
        else:
            firsts = [path]
        results: list[tuple[Path, ModelEntry | ApplianceError]] = []
        for first in firsts:
            try:
                progress = progress_for(first.name) if progress_for else None
                results.append((first, self.register(first, name=name, mode=mode, progress=progress)))
            except ApplianceError as exc:
                results.append((first, exc))
        return results

    def register(
        self,
        path: Path,
        *,
        name: str | None = None,
        mode: str = "in-place",
        source: dict[str, Any] | None = None,
        expected_sha256: str | None = None,
        progress: Progress | None = None,
        extra_declared: list[dict[str, str]] | None = None,
        hub_card: tuple[dict[str, Any], list[str]] | None = None,
    ) -> ModelEntry:
        """Parse the header(s) with limits, hash, write the record and add the model to the library."""
        path = Path(path).expanduser().resolve()
        files = shard_set(path)
        infos = [read_gguf(f) for f in files]  # rejects truncated or hostile headers before anything else
        _check_split(files, infos)
        first, info = files[0], infos[0]
        name = slug(name or SHARD_NAME.sub(r"\g<stem>", first.name).removesuffix(".gguf"))
        if packs.is_pack_name(name) and mode != "pack":
            raise UsageError(f"{name!r} is the name of a model pack the appliance ships; choose another --name")
        data = self._load()
        existing = data["models"].get(name)
        if existing and Path(existing["path"]) != first and Path(existing["path"]).resolve() != first:
            raise ApplianceError(
                f"a model named {name!r} is already in the library ({existing['path']}); "
                "choose another --name, or `appliance models remove` it first"
            )
        self.paths.models.mkdir(parents=True, exist_ok=True)
        measured = self._hash_all(files, progress)
        if expected_sha256 and measured[0]["sha256"] != expected_sha256:
            raise IntegrityError(
                f"{first}: sha256 {measured[0]['sha256']} does not match the pinned {expected_sha256}; not registered")
        template_check = check_template(info, f"{first.name}: not imported")  # a hostile template: refused up front
        # Re-importing a registered model is the user's deliberate act (it lifts a quarantine): the record is made
        # afresh from the file as it is now. Otherwise a sidecar beside the file must describe this very file. A pack
        # is shared by every data dir of the environment: its record comes from its pin, never from a file beside it.
        travelling = None if existing or mode == "pack" else self._read_sidecar(first, measured)
        if mode == "copy":
            files = self._copy_in(files, measured)
            first = files[0]
        shard_info = None
        if len(files) > 1:
            shard_info = {"count": len(files), "total_size": sum(m["size"] for m in measured),
                          "files": [dict(m, index=i) for i, m in enumerate(measured)]}
        source = source or {"kind": "local-import", "original_path": str(path), "imported_at": manifest.now()}
        record = manifest.from_gguf(name, first, measured[0]["size"], measured[0]["sha256"], info, source,
                                    shard_info, extra_declared)
        if hub_card:
            manifest.add_hub_card(record, *hub_card)
        if travelling:
            for key in ("source", "license", "lineage", "content_warnings", "signature"):
                if key in travelling:
                    record[key] = travelling[key]
            record["source"] = dict(record["source"], record_from=f"sidecar {manifest.sidecar_path(first).name}")
            record["verification"] = travelling.get("verification", [])[-(manifest.HISTORY_KEEP - 1):]
            manifest.add_history(record, "ok", "matches the sidecar record that travels with the file", "import")
        if existing:
            manifest.add_history(record, "ok",
                                 f"re-imported on purpose (was quarantined: {existing.get('quarantined')})", "import")
        record["gguf"]["template_check"] = template_check
        # What the bytes establish comes from this machine's catalog, never from a record that travelled with them.
        record["license"]["established"] = None
        record["established"] = None
        manifest.establish(record, self._established(measured))
        sig_path = signing.signature_path(first)
        if sig_path.exists() and not record.get("signature"):
            signing.check(sig_path, name, measured)  # a signature that fails refuses the import
            record["signature"] = dict(signing.load_for_pin(sig_path), pinned_at=manifest.now(), pinned_by="import")
        elif record.get("signature"):
            signing.check(sig_path, name, measured, record["signature"]["public_key"])
        manifest_path = self.paths.models / f"{name}{manifest.SUFFIX}"
        manifest.write(manifest_path, record)
        if mode != "pack":
            self._write_sidecar(first, record)
        with self._locked() as data:
            data["models"][name] = {"path": str(first), "manifest": str(manifest_path), "mode": mode,
                                    "quarantined": False}
            raw = data["models"][name]
        return self._entry(name, raw)

    def _hash_all(self, files: list[Path], progress: Progress | None) -> list[dict[str, Any]]:
        total = sum(f.stat().st_size for f in files)
        cumulative = _Cumulative(progress, total)
        measured = []
        for f in files:
            size = f.stat().st_size
            measured.append({"name": f.name, "size": size, "sha256": sha256_file(f, cumulative.part())})
            cumulative.advance(size)
        return measured

    def _read_sidecar(self, first: Path, measured: list[dict[str, Any]]) -> dict[str, Any] | None:
        path = manifest.sidecar_path(first)
        if not path.exists():
            return None
        record = manifest.read(path)
        if record["file"].get("sha256") != measured[0]["sha256"] or record["file"].get("size") != measured[0]["size"]:
            raise IntegrityError(
                f"{first}: the file does not match the record that travels with it ({path.name} says sha256 "
                f"{record['file'].get('sha256')}, the file has {measured[0]['sha256']}); not imported. "
                "If the file was changed on purpose, move the old sidecar aside and import again"
            )
        return record

    def _copy_in(self, files: list[Path], measured: list[dict[str, Any]]) -> list[Path]:
        targets = []
        for f, m in zip(files, measured, strict=True):
            target = self.paths.models / f.name
            if target != f:
                if target.exists():
                    if sha256_file(target) != m["sha256"]:
                        raise ApplianceError(f"{target} already exists with other content; import under another file "
                                             "name")
                else:
                    _copy_checked(f, target, m["size"], m["sha256"])
                sig = signing.signature_path(f)
                if sig.exists():
                    signing.copy_document(sig, signing.signature_path(target))
            targets.append(target)
        return targets

    def _established(self, measured: list[dict[str, Any]]) -> dict[str, Any] | None:
        """What the catalog establishes for a single-file model with these bytes (a split set matches nothing)."""
        if len(measured) != 1:
            return None
        match = catalog.Catalog.load(self.paths.home).match(measured[0]["sha256"], measured[0]["size"])
        return match.as_record(manifest.now()) if match else None

    def _write_sidecar(self, first: Path, record: dict[str, Any]) -> None:
        try:
            manifest.write(manifest.sidecar_path(first), record)
        except OSError:
            pass  # a read-only drive: the library's own copy still holds the record

    def ensure_pack(self, name: str) -> None:
        """Register an installed model pack the first time a data dir uses it (verified against its pin), so a fresh
        APPLIANCE_HOME just works. A name that is no pack, or is registered already, is left alone."""
        if name in self._load()["models"]:
            return
        if name == packs.SMOLLM2.name:
            pack = packs.SMOLLM2
            declared = manifest.declare(pack.license, f"wheel:{pack.distribution} (pinned in packs.py)")
            self.register(pack.locate(), name=pack.name, mode="pack", source=pack.source(),
                          expected_sha256=pack.sha256, extra_declared=[declared] if declared else [])
        elif name in packs.SPLIT_PACKS and packs.SPLIT_PACKS[name].installed:
            self.register_split_pack(packs.SPLIT_PACKS[name])

    def register_split_pack(self, pack: "packs.SplitPack") -> ModelEntry:
        """Register an installed split pack in place (its file lives in the environment, shared by data dirs)."""
        existing = self._load()["models"].get(pack.name)
        if existing is not None:
            return self.resolve(pack.name)
        return self.register(pack.locate(), name=pack.name, mode="pack", source=pack.source(),
                             expected_sha256=pack.sha256)

    # -- checks ----------------------------------------------------------------------------------------------
    def verify(self, entry: ModelEntry, progress: Progress | None = None, public_key: bytes | None = None) -> str:
        """Re-hash every file against the record (and check its signature when it is signed).

        A mismatch quarantines the model; a missing file does not (the drive may just be unplugged). Returns the
        sha256 of the file handed to llama.cpp.
        """
        with self.open_verified(entry, progress, public_key):
            return entry.sha256

    def open_verified(self, entry: ModelEntry, progress: Progress | None = None,
                      public_key: bytes | None = None) -> "VerifiedFiles":
        """Open every file of the model and hash it through that descriptor: the returned descriptors hold the
        bytes that were verified, so a file swapped on disk afterwards is never what gets loaded."""
        if entry.quarantined:
            raise IntegrityError(
                f"model {entry.name!r} ({entry.path}) is quarantined after a failed check; "
                "re-import it on purpose to use it again"
            )
        missing = [str(path) for path, _, _ in entry.files if not path.exists()]
        if missing:
            exc = IntegrityError(f"model {entry.name!r}: file {missing[0]} is missing (drive unplugged or file moved)")
            self._record_check(entry, "missing", str(exc))
            raise exc
        opened = VerifiedFiles([], [])
        try:
            cumulative = _Cumulative(progress, sum(size for _, size, _ in entry.files))
            for path, size, sha in entry.files:
                fd = open_regular(path)
                opened.fds.append(fd)
                opened.paths.append(path)
                check_fd(fd, path, size, sha, cumulative.part())
                cumulative.advance(size)
            self._check_sidecar(entry)
            signed = self._check_signature(entry, public_key)
            template_check = self._template_check(entry, opened)
        except IntegrityError as exc:
            opened.close()
            self._set_quarantine(entry.name, True)
            entry.quarantined = True
            self._record_check(entry, "refused" if isinstance(exc, TemplateRefusedError) else "mismatch", str(exc))
            raise
        except BaseException:
            opened.close()
            raise
        record = dict(entry.record)
        if template_check is not None:
            record["gguf"] = dict(record.get("gguf") or {}, template_check=template_check)
        self._establish(entry, record)
        manifest.add_history(record, "ok", entry.sha256 + (f" signed {signed}" if signed else ""), "verify")
        self.save_record(entry, record)
        return opened

    def _template_check(self, entry: ModelEntry, opened: "VerifiedFiles") -> dict[str, Any] | None:
        """Check the chat template of the verified bytes once (per checker version); None when already done."""
        gguf = entry.record.get("gguf") or {}
        done = gguf.get("template_check") or {}
        if done.get("checker") == TEMPLATE_CHECKER and done.get("result") in ("ok", "none") \
                and done.get("sha256") == gguf.get("chat_template_sha256"):
            return None
        info = read_gguf(opened.fd_path(0))
        if info.chat_template_sha256 != gguf.get("chat_template_sha256"):
            raise IntegrityError(f"model {entry.name!r}: chat template differs from the manifest; not loaded")
        return check_template(info, f"model {entry.name!r}")

    def _establish(self, entry: ModelEntry, record: dict[str, Any]) -> None:
        """Match the (just verified) bytes against the catalog; say in the history when that changes anything."""
        measured = [{"sha256": sha, "size": size} for _, size, sha in entry.files]
        before = (record.get("established") or {}).get("statement")
        if manifest.establish(record, self._established(measured)):
            after = (record.get("established") or {}).get("statement")
            detail = f"established: {after}" if after else (
                f"no longer established: {before}" if before else "catalog: these bytes are known, no release")
            manifest.add_history(record, "ok", detail, "catalog")

    def _check_sidecar(self, entry: ModelEntry) -> None:
        path = manifest.sidecar_path(entry.path)
        if entry.mode == "pack" or not path.exists():
            return
        try:
            travelling = manifest.read(path)
        except ApplianceError:
            return  # an unreadable sidecar is rewritten below; the library's copy is the one that counts
        if travelling["file"].get("sha256") != entry.sha256:
            raise IntegrityError(
                f"{path}: the record beside the file names sha256 {travelling['file'].get('sha256')}, the library "
                f"registered {entry.sha256}; one of them was replaced"
            )

    def _check_signature(self, entry: ModelEntry, public_key: bytes | None) -> str | None:
        pinned = entry.record.get("signature")
        if not pinned and public_key is None:
            return None
        import base64

        key_b64 = base64.b64encode(public_key).decode() if public_key is not None else (pinned or {})["public_key"]
        if not pinned and public_key is not None:
            raise IntegrityError(f"model {entry.name!r} is not signed, so it cannot be checked against that key")
        files = [{"name": p.name, "size": s, "sha256": h} for p, s, h in entry.files]
        return signing.check(signing.signature_path(entry.path), entry.name, files, key_b64)

    def _set_quarantine(self, name: str, value: bool) -> None:
        with self._locked() as data:
            if name in data["models"]:
                data["models"][name]["quarantined"] = value

    def _record_check(self, entry: ModelEntry, result: str, detail: str) -> None:
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
            self._write_sidecar(entry.path, record)
        entry._record = record

    # -- changes to a record ---------------------------------------------------------------------------------
    def assert_license(self, entry: ModelEntry, value: str | None, note: str = "") -> dict[str, Any]:
        """Add (value) or clear (None) the user's own license assertion; it is marked as the user's."""
        record = dict(entry.record)
        manifest.relicense(record, manifest.user_assertion(value, note) if value else None)
        self.save_record(entry, record)
        return record["license"]

    def add_note(self, entry: ModelEntry, text: str) -> list[dict[str, Any]]:
        record = dict(entry.record)
        record["content_warnings"] = list(record.get("content_warnings", [])) + [
            {"kind": "user-note", "value": text, "from": "user", "at": manifest.now(), "text": f"your note: {text}"}]
        self.save_record(entry, record)
        return record["content_warnings"]

    def sign(self, entry: ModelEntry, private_key: Path, progress: Progress | None = None) -> dict[str, Any]:
        """Verify the files, then sign their hashes and pin the key in the record."""
        self.verify(entry, progress)
        files = [{"name": p.name, "size": s, "sha256": h} for p, s, h in entry.files]
        pinned = signing.sign(private_key, signing.payload_for(entry.name, files), signing.signature_path(entry.path))
        record = dict(entry.record)
        record["signature"] = dict(pinned, pinned_at=manifest.now(), pinned_by="sign")
        self.save_record(entry, record)
        return record["signature"]

    def remove(self, name: str, delete_file: bool = False) -> ModelEntry:
        raw = self._load()["models"].get(name)
        if raw is not None and not _usable(raw):  # a damaged entry can always be forgotten
            if delete_file:
                raise UsageError(f"the library's entry for {name!r} is damaged (it does not say where the file is); "
                                 "remove it without --delete-file")
            with self._locked() as data:
                data["models"].pop(name, None)
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
        with self._locked() as data:
            data["models"].pop(name, None)
        entry.manifest_path.unlink(missing_ok=True)
        return entry


def _check_split(files: list[Path], infos: list[GGUFInfo]) -> None:
    if len(files) == 1:
        if infos[0].split:
            raise ApplianceError(f"{files[0].name}: this is one file of a split set of {infos[0].split[1]}, but its "
                                 "name does not say which (expected NAME-00001-of-0000N.gguf)")
        return
    for index, (path, info) in enumerate(zip(files, infos, strict=True)):
        if info.split != (index, len(files)):
            raise GGUFError(f"{path.name}: its header says split {info.split}, its name says {index + 1} "
                            f"of {len(files)}; the set is mixed up")


class TemplateRefusedError(IntegrityError):
    """The file's chat template broke the sandbox's rules or budget: the model is refused (exit 3)."""


def check_template(info: GGUFInfo, refusal: str) -> dict[str, Any]:
    """Render the file's chat template in the sandbox, in a child process with a deadline (the same renderer the
    engine uses). A template that loops, explodes or escapes would hang or break every answer: IntegrityError."""
    template = info.chat_template
    verdict = {"checker": TEMPLATE_CHECKER, "sha256": info.chat_template_sha256, "at": manifest.now()}
    if not template:
        return dict(verdict, result="none")
    from appliance.models.chat_template import TemplateRefused, check_template_isolated

    try:
        check_template_isolated(template)
    except TemplateRefused as exc:
        raise TemplateRefusedError(f"{refusal}: its chat template is refused ({exc}); every answer would hang or "
                                   "fail") from None
    return dict(verdict, result="ok")


def _copy_checked(source: Path, target: Path, size: int, sha256: str) -> None:
    """Copy through a temporary file in the target's directory, hashing as it goes; rename only when the copy has
    the measured size and sha256. On any failure (a full disk, a read error) nothing is left behind."""
    src = open_regular(source)
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        tmp = Path(tmp_name)
        digest, done = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            while chunk := os.pread(src, CHUNK, done):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if done != size or digest.hexdigest() != sha256:
            raise IntegrityError(f"the copy of {source} does not match the file as it was hashed (it changed while "
                                 "being copied); not registered")
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise ApplianceError(f"copying {source.name} into {target.parent} failed: {exc.strerror or exc}; nothing was "
                             "left behind") from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(src)
