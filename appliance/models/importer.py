"""Bringing model files into the registry: one GGUF, a split set or a folder, in place or copied in (a temporary
file renamed only when its bytes match, nothing left on failure), the header parsed with limits and the chat
template checked in the sandbox before anything is registered; the record made from the file, its sidecar, the
catalog and a signature beside it. Installed model packs register themselves on first use, after their sha256
matches the pin.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, IntegrityError, UsageError
from appliance.models import manifest, packs, signing
from appliance.models.gguf_meta import GGUFError, GGUFInfo, read_gguf
from appliance.models.registry import ModelEntry, Registry, slug, write_sidecar
from appliance.models.verification import Cumulative, catalog_match, check_template
from appliance.models.verify import CHUNK, Progress, open_regular, sha256_file
from appliance.paths import Paths

SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
MAX_SHARDS = 1024


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


class Importer:
    """import_path / register / the packs' first-use registration, into the registry."""

    def __init__(self, paths: Paths, registry: Registry):
        self.paths = paths
        self.registry = registry

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
        data = self.registry.load()
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
        manifest.establish(record, catalog_match(self.paths.home, measured))
        sig_path = signing.signature_path(first)
        if sig_path.exists() and not record.get("signature"):
            signing.check(sig_path, name, measured)  # a signature that fails refuses the import
            record["signature"] = dict(signing.load_for_pin(sig_path), pinned_at=manifest.now(), pinned_by="import")
        elif record.get("signature"):
            signing.check(sig_path, name, measured, record["signature"]["public_key"])
        manifest_path = self.paths.models / f"{name}{manifest.SUFFIX}"
        manifest.write(manifest_path, record)
        if mode != "pack":
            write_sidecar(first, record)
        return self.registry.put(name, first, manifest_path, mode)

    def _hash_all(self, files: list[Path], progress: Progress | None) -> list[dict[str, Any]]:
        total = sum(f.stat().st_size for f in files)
        cumulative = Cumulative(progress, total)
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

    def ensure_pack(self, name: str) -> None:
        """Register an installed model pack the first time a data dir uses it (verified against its pin), so a fresh
        APPLIANCE_HOME just works. A name that is no pack, or is registered already, is left alone; a pack
        registered where its file no longer is (the data dir was first used from another environment) is registered
        again where it is installed now."""
        existing = self.registry.get(name)
        if existing is not None and (existing.path.is_file() or not packs.is_pack_name(name)):
            return
        if name == packs.SMOLLM2.name:
            pack = packs.SMOLLM2
            located = pack.locate()  # raises, naming the pack, when it is not installed here
            if existing is not None:  # registered where it no longer is
                self.registry.forget(name)
            declared = manifest.declare(pack.license, f"wheel:{pack.distribution} (pinned in packs.py)")
            self.register(located, name=pack.name, mode="pack", source=pack.source(),
                          expected_sha256=pack.sha256, extra_declared=[declared] if declared else [])
        elif name in packs.SPLIT_PACKS and packs.SPLIT_PACKS[name].installed:
            self.register_split_pack(packs.SPLIT_PACKS[name])

    def register_split_pack(self, pack: "packs.SplitPack") -> ModelEntry:
        """Register an installed split pack in place (its file lives in the environment, shared by data dirs). A
        registration whose file is gone while the pack is installed elsewhere (a data dir first used from another
        environment, since moved or removed) is made again where the pack is now, verified against its pin."""
        existing = self.registry.get(pack.name)
        if existing is not None:
            if existing.path.is_file() or not pack.installed:
                return existing
            self.registry.forget(pack.name)
        return self.register(pack.locate(), name=pack.name, mode="pack", source=pack.source(),
                             expected_sha256=pack.sha256)


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
