"""Checking a registered model's files before llama.cpp gets them: every file opened and hashed through its
descriptor (the descriptors handed on hold the bytes that were verified), the sidecar and the signature checked,
the chat template checked in the sandbox once per checker version, the catalog asked what the bytes establish. A
mismatch quarantines the model; a missing file does not (the drive may just be unplugged).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, IntegrityError
from appliance.models import catalog, manifest, signing
from appliance.models.gguf_meta import GGUFInfo, read_gguf
from appliance.models.registry import ModelEntry, Registry
from appliance.models.verify import Progress, check_fd, open_regular
from appliance.paths import Paths

TEMPLATE_CHECKER = 1  # bump when the template sandbox's budget changes: stored verdicts are then made again


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


class Cumulative:
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


def catalog_match(home: Path, measured: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the catalog establishes for a single-file model with these bytes (a split set matches nothing)."""
    if len(measured) != 1:
        return None
    match = catalog.Catalog.load(home).match(measured[0]["sha256"], measured[0]["size"])
    return match.as_record(manifest.now()) if match else None


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


class Verifier:
    """verify / open_verified for the registry's models."""

    def __init__(self, paths: Paths, registry: Registry):
        self.paths = paths
        self.registry = registry

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
            self.registry.record_check(entry, "missing", str(exc))
            raise exc
        opened = VerifiedFiles([], [])
        try:
            cumulative = Cumulative(progress, sum(size for _, size, _ in entry.files))
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
            self.registry.set_quarantine(entry.name, True)
            entry.quarantined = True
            result = "refused" if isinstance(exc, TemplateRefusedError) else "mismatch"
            self.registry.record_check(entry, result, str(exc))
            raise
        except BaseException:
            opened.close()
            raise
        record = dict(entry.record)
        if template_check is not None:
            record["gguf"] = dict(record.get("gguf") or {}, template_check=template_check)
        self._establish(entry, record)
        manifest.add_history(record, "ok", entry.sha256 + (f" signed {signed}" if signed else ""), "verify")
        self.registry.save_record(entry, record)
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
        if manifest.establish(record, catalog_match(self.paths.home, measured)):
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
