"""Known official release files, recognized by their bytes: a catalog of sha256 -> release facts.

A file whose sha256 and size match an entry is byte-identical to the file that entry describes, so what is known
about that release (publisher repository and revision, license and where its text is, lineage, chat-template
family) holds for it: the library records it as *established*, apart from what the file declares and what the
owner asserts. A file in no entry changes nothing; unknown stays unknown.

The catalog is data, not code. The appliance ships one (catalog.json beside this module); more can be added
offline: `appliance models catalog add FILE` validates a catalog file (e.g. one carried on a USB bundle) and copies
it into APPLIANCE_HOME/catalog/, where every *.json is read. Every entry that names a release carries the evidence
for its hash; an entry that cannot name one (which release a pack's file is, say) says so in its note and
establishes nothing (and disputes nothing). Entries for the same bytes that name different facts establish nothing
either: the dispute is shown.

File format (JSON):
  {"schema": "appliance.model-catalog", "version": 1, "method": "...", "entries": [
    {"id": "...", "sha256": "<64 hex>", "size": <bytes>, "file_name": "...",
     "release": {"repo": "OWNER/NAME", "revision": "<commit>", "official": true} | null,
     "license": {"id": "<an id from the license table>", "text": "<where the license text is>"} | null,
     "lineage": {"base_model": ..., "fine_tune": ..., "quantization": ..., "quantized_by": ..., "from": ...} | null,
     "chat_template_family": "chatml" | ... | null,
     "evidence": [{"source": "...", "says": "..."}],
     "claimed_release": {...} | null,   # what someone claims the file is, when it could not be established
     "note": "..."}]}
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, UsageError
from appliance.models import licenses
from appliance.models.verify import read_regular

SCHEMA = "appliance.model-catalog"
VERSION = 1
BUILTIN = Path(__file__).with_name("catalog.json")
FOLDER = "catalog"  # APPLIANCE_HOME/catalog/*.json
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 10_000
MAX_TEXT = 2_000
MAX_EVIDENCE = 32

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION = re.compile(r"^[0-9a-f]{40}$")
_LINEAGE_KEYS = ("base_model", "fine_tune", "quantization", "quantized_by", "from")


@dataclass(frozen=True)
class Evidence:
    source: str
    says: str

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "says": self.says}


@dataclass(frozen=True)
class Release:
    repo: str
    revision: str
    official: bool

    @property
    def short(self) -> str:
        return f"{self.repo}@{self.revision[:8]}"

    def as_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "revision": self.revision, "official": self.official}


@dataclass(frozen=True)
class Entry:
    id: str
    sha256: str
    size: int
    file_name: str
    origin: str  # "built-in catalog" or the extension file's path
    release: Release | None = None
    license_id: str | None = None
    license_text: str | None = None
    lineage: tuple[tuple[str, str], ...] = ()
    chat_template_family: str | None = None
    evidence: tuple[Evidence, ...] = ()
    claimed_release: tuple[tuple[str, str], ...] = ()
    note: str = ""

    @property
    def facts(self) -> tuple:
        """What the entry establishes: two entries for the same bytes must agree on all of it."""
        return (self.release, self.license_id, self.lineage, self.chat_template_family)

    @property
    def establishes(self) -> bool:
        return self.release is not None

    def describe(self) -> str:
        if self.release:
            return f"{self.release.short} ({self.license_id or 'license not in the entry'})"
        return "release not established"


@dataclass(frozen=True)
class Match:
    """The catalog entries whose bytes are this file's. Entries that name no release add nothing and dispute
    nothing; entries that name a release must all agree, or nothing is established."""

    entries: tuple[Entry, ...]

    @property
    def naming(self) -> tuple[Entry, ...]:
        return tuple(entry for entry in self.entries if entry.establishes)

    @property
    def disputed(self) -> bool:
        return len({entry.facts for entry in self.naming}) > 1

    def as_record(self, at: str) -> dict[str, Any]:
        """The `established` section of a model record."""
        naming = self.naming
        section: dict[str, Any] = {
            "by": "catalog", "matched_at": at,
            "entries": [{"id": e.id, "origin": e.origin} for e in (naming or self.entries)],
            "statement": None, "release": None, "license": None, "lineage": None, "chat_template_family": None,
            "evidence": [ev.as_dict() for e in naming for ev in e.evidence],
            "claimed_release": None, "note": "", "disputed": [],
        }
        if self.disputed:
            section["disputed"] = [f"{e.id} ({e.origin}): {e.describe()}" for e in naming]
            section["note"] = "catalog entries for these bytes disagree, so nothing is established from them"
            return section
        if not naming:
            first = self.entries[0]
            section["claimed_release"] = dict(first.claimed_release) or None
            section["note"] = first.note
            return section
        first = naming[0]
        release = first.release
        assert release is not None  # naming holds the entries that name a release
        section.update(
            statement=f"file is byte-identical to {release.short}",
            release=release.as_dict(),
            license={"id": first.license_id, "text": first.license_text} if first.license_id else None,
            lineage=dict(first.lineage) or None,
            chat_template_family=first.chat_template_family,
            note=first.note,
        )
        return section


@dataclass
class Catalog:
    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # extension files that could not be read, each one line

    @classmethod
    def load(cls, home: Path | None = None) -> "Catalog":
        """The built-in catalog and every extension file in APPLIANCE_HOME/catalog/ (a broken one is skipped and
        listed in `problems`; the built-in one must be valid)."""
        catalog = cls(entries=parse(BUILTIN, "built-in catalog"))
        for path in extension_files(home):
            try:
                catalog.entries.extend(parse(path, str(path)))
            except ApplianceError as exc:
                catalog.problems.append(str(exc))
        return catalog

    def match(self, sha256: str, size: int) -> Match | None:
        found = tuple(e for e in self.entries if e.sha256 == sha256 and e.size == size)
        return Match(found) if found else None


def folder(home: Path) -> Path:
    return Path(home) / FOLDER


def extension_files(home: Path | None) -> list[Path]:
    if home is None or not folder(home).is_dir():
        return []
    return sorted(p for p in folder(home).glob("*.json") if not p.name.startswith("."))


def add(home: Path, source: Path) -> tuple[Path, list[Entry]]:
    """Validate a catalog file and copy it into APPLIANCE_HOME/catalog/ (offline). Returns (copy, its entries)."""
    source = Path(source)
    raw = _read(source)
    _parse_bytes(raw, source, str(source))  # refused here, with the reason, if anything in it is wrong
    target = folder(home) / (source.name if source.name.endswith(".json") else source.name + ".json")
    if target.exists():
        if _read(target) != raw:
            raise UsageError(f"{target} already exists with other content; rename the file you are adding, or "
                             "remove the old one first")
    else:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(raw)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ApplianceError(f"cannot copy {source} to {target}: {exc.strerror or exc}") from None
    return target, _parse_bytes(raw, target, str(target))


# -- parsing: a catalog file may come from a USB stick; everything is checked, nothing is trusted ------------------
def parse(path: Path, origin: str) -> list[Entry]:
    return _parse_bytes(_read(path), path, origin)


def _read(path: Path) -> bytes:
    try:
        return read_regular(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise ApplianceError(f"catalog file {path} not found") from None


def _parse_bytes(raw: bytes, path: Path, origin: str) -> list[Entry]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApplianceError(f"catalog file {path} is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ApplianceError(f"{path} is not a model catalog (expected \"schema\": \"{SCHEMA}\")")
    if data.get("version") != VERSION:
        raise ApplianceError(f"catalog file {path} has version {data.get('version')!r}; this appliance reads "
                             f"version {VERSION}")
    items = data.get("entries")
    if not isinstance(items, list) or len(items) > MAX_ENTRIES:
        raise ApplianceError(f"catalog file {path}: \"entries\" must be a list of at most {MAX_ENTRIES}")
    entries, seen = [], set()
    for index, item in enumerate(items):
        entry = _entry(item, origin, f"catalog file {path}, entry {index + 1}")
        if entry.id in seen:
            raise ApplianceError(f"catalog file {path}: entry id {entry.id!r} appears twice")
        seen.add(entry.id)
        entries.append(entry)
    return entries


def _text(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise ApplianceError(f"{where}: {key!r} must be a non-empty text of at most {MAX_TEXT} characters")
    return value


def _optional_text(item: dict, key: str, where: str) -> str | None:
    return None if item.get(key) is None else _text(item, key, where)


def _entry(item: Any, origin: str, where: str) -> Entry:
    if not isinstance(item, dict):
        raise ApplianceError(f"{where}: must be an object")
    sha = _text(item, "sha256", where)
    if not _SHA256.match(sha):
        raise ApplianceError(f"{where}: sha256 must be 64 lower-case hex digits")
    size = item.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ApplianceError(f"{where}: size must be a positive number of bytes")
    release = None
    if item.get("release") is not None:
        rel = item["release"]
        if not isinstance(rel, dict):
            raise ApplianceError(f"{where}: release must be an object or null")
        repo, revision = _text(rel, "repo", where), _text(rel, "revision", where)
        if not _REPO.match(repo):
            raise ApplianceError(f"{where}: release repo must look like OWNER/NAME")
        if not _REVISION.match(revision):
            raise ApplianceError(f"{where}: release revision must be a 40-digit commit id (never a branch)")
        if not isinstance(rel.get("official"), bool):
            raise ApplianceError(f"{where}: release official must be true or false")
        release = Release(repo, revision, rel["official"])
    evidence = item.get("evidence", [])
    if not isinstance(evidence, list) or len(evidence) > MAX_EVIDENCE:
        raise ApplianceError(f"{where}: evidence must be a list of at most {MAX_EVIDENCE}")
    proofs = tuple(Evidence(_text(e, "source", where), _text(e, "says", where)) if isinstance(e, dict) else
                   _bad(f"{where}: each evidence item must be an object with source and says") for e in evidence)
    license_id = license_text = None
    if item.get("license") is not None:
        lic = item["license"]
        if not isinstance(lic, dict):
            raise ApplianceError(f"{where}: license must be an object or null")
        info = licenses.lookup(_text(lic, "id", where))
        if not info.known:
            raise ApplianceError(f"{where}: license id {lic['id']!r} is not one this appliance knows")
        license_id, license_text = info.id, _text(lic, "text", where)
    lineage = _pairs(item.get("lineage"), _LINEAGE_KEYS, "lineage", where)
    family = _optional_text(item, "chat_template_family", where)
    if release is None and (license_id or lineage or family):
        raise ApplianceError(f"{where}: an entry that names no release cannot establish a license, lineage or "
                             "template family (they would rest on nothing)")
    if release is not None and not proofs:
        raise ApplianceError(f"{where}: an entry that names a release must give the evidence for its hash")
    note = _optional_text(item, "note", where) or ""
    if release is None and not note:
        raise ApplianceError(f"{where}: an entry that names no release must say why in its note")
    return Entry(
        id=_text(item, "id", where), sha256=sha, size=size, file_name=_text(item, "file_name", where),
        origin=origin, release=release, license_id=license_id, license_text=license_text, lineage=lineage,
        chat_template_family=family, evidence=proofs,
        claimed_release=_pairs(item.get("claimed_release"), ("repo", "revision", "file", "claimed_by"),
                               "claimed_release", where),
        note=note,
    )


def _pairs(value: Any, keys: tuple[str, ...], name: str, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or set(value) - set(keys):
        raise ApplianceError(f"{where}: {name} must be an object with keys among {', '.join(keys)}")
    return tuple((key, _text(value, key, where)) for key in keys if value.get(key) is not None)


def _bad(message: str):
    raise ApplianceError(message)
