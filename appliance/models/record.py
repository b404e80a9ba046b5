"""A typed view of a model's provenance record, and the one license policy every caller uses.

The versioned JSON document (manifest.py) stays the on-disk form; `ModelRecord.from_dict` reads it defensively
(any schema version this appliance knows; missing or malformed fields become empty, never guessed) into frozen
dataclasses. The CLI, the TUI and the BOM read records through this view, so the license label, the
commercial-use verdict and the reasons a model must be shown before its first use are decided here, once.

Where each fact comes from stays visible: `License.declared` (the file, its source), `License.established` (the
file's bytes matched a known release in the catalog), `License.user_asserted` (the owner), and `basis` says which
one the verdict rests on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from appliance.models import licenses

NOASSERTION = licenses.NOASSERTION
COMMERCIAL_LABELS = {"permitted": "yes", "restricted": "no", "conditional": "conditions"}
BASIS = {"confirmed": "declared", "established": "established", "user-asserted": "yours", "conflict": "conflict",
         "unknown": "none"}


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dicts(value: Any) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Declared:
    value: str
    origin: str  # gguf:general.license, hub:card.license, wheel:..., ...
    id: str  # what the license table makes of it


@dataclass(frozen=True)
class Assertion:
    id: str
    value: str
    at: str
    note: str


@dataclass(frozen=True)
class EstablishedLicense:
    id: str
    text: str | None  # where the license text is
    origin: str  # "catalog: file is byte-identical to ..."


@dataclass(frozen=True)
class License:
    id: str
    family: str
    commercial_use: str  # permitted / restricted / conditional / unknown
    restricts_use: bool | None
    status: str  # confirmed / established / conflict / unknown / user-asserted
    declared_status: str
    conflicts: tuple[str, ...]
    note: str
    declared: tuple[Declared, ...] = ()
    links: tuple[tuple[str, str], ...] = ()  # (url or text, where it came from)
    established: EstablishedLicense | None = None
    user_asserted: Assertion | None = None

    @property
    def settled(self) -> bool:
        """A license was established (declared consistently, or by the bytes) and nobody contradicts it."""
        return self.status in ("confirmed", "established") and self.id != NOASSERTION

    @property
    def label(self) -> str:
        """The license as the user should read it: an id only when it was established, otherwise plainly not."""
        if self.settled:
            return self.id
        if self.status == "user-asserted" and self.id and self.id != NOASSERTION:
            return f"{self.id} (yours)"
        if self.status == "conflict":
            return "CONFLICT: " + " vs ".join(self.conflicts) if self.conflicts else "CONFLICT"
        return "UNKNOWN"

    @property
    def basis(self) -> str:
        """What the verdict rests on: declared (the file or its source), established (its bytes), yours, conflict,
        none."""
        return BASIS.get(self.status, "none")

    @property
    def commercial(self) -> str:
        """The commercial-use verdict in one word: yes, no, conditions, unknown."""
        return COMMERCIAL_LABELS.get(self.commercial_use, "unknown")

    @classmethod
    def from_dict(cls, data: Any) -> "License":
        lic = _dict(data)
        status = _s(lic.get("status")) or "unknown"
        if status not in BASIS:
            status = "unknown"
        asserted = _dict(lic.get("user_asserted"))
        established = _dict(lic.get("established"))
        commercial = _s(lic.get("commercial_use"))
        return cls(
            id=_s(lic.get("id")) or NOASSERTION,
            family=_s(lic.get("family")) or "unknown",
            commercial_use=commercial if commercial in licenses.COMMERCIAL_USE else licenses.UNKNOWN,
            restricts_use=lic.get("restricts_use") if isinstance(lic.get("restricts_use"), bool) else None,
            status=status,
            declared_status=_s(lic.get("declared_status")) or status,
            conflicts=tuple(_s(c) for c in lic.get("conflicts") or [] if c) if isinstance(lic.get("conflicts"), list)
            else (),
            note=_s(lic.get("note")),
            declared=tuple(Declared(_s(d.get("value")), _s(d.get("from")) or "unknown",
                                    _s(d.get("id")) or licenses.lookup(d.get("value")).id)
                           for d in _dicts(lic.get("declared")) if d.get("value")),
            links=tuple((_s(link.get("value")), _s(link.get("from"))) for link in _dicts(lic.get("links"))),
            established=EstablishedLicense(_s(established["id"]), _opt(established.get("text")),
                                           _s(established.get("from")))
            if established.get("id") else None,
            user_asserted=Assertion(_s(asserted.get("id")), _s(asserted.get("value")), _s(asserted.get("at")),
                                    _s(asserted.get("note"))) if asserted else None,
        )


@dataclass(frozen=True)
class Shard:
    index: int
    name: str
    size: int | None
    sha256: str


@dataclass(frozen=True)
class FileFacts:
    name: str
    size: int | None
    sha256: str
    role: str
    shards: tuple[Shard, ...] = ()

    @property
    def total_size(self) -> int | None:
        if self.shards:
            sizes = [s.size for s in self.shards if isinstance(s.size, int)]
            return sum(sizes) if len(sizes) == len(self.shards) else None
        return self.size


@dataclass(frozen=True)
class BaseModel:
    name: str | None
    repo_url: str | None
    relation: str
    origin: str
    organization: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Lineage:
    """What the file and its source claim about its ancestry (never verified: see `Established.lineage`)."""

    base_models: tuple[BaseModel, ...]
    quantization: str | None
    quantized_by: str | None
    claimed_by: str


@dataclass(frozen=True)
class Evidence:
    source: str
    says: str


@dataclass(frozen=True)
class Established:
    """What a catalog match establishes from the file's bytes, or why it establishes nothing."""

    statement: str | None  # "file is byte-identical to REPO@REV"; None when the release is not established
    release: dict[str, Any] | None
    license_id: str | None
    license_text: str | None
    lineage: tuple[tuple[str, str], ...]
    chat_template_family: str | None
    evidence: tuple[Evidence, ...]
    entries: tuple[tuple[str, str], ...]  # (entry id, where the entry came from)
    claimed_release: tuple[tuple[str, str], ...]
    note: str
    disputed: tuple[str, ...]
    matched_at: str

    @classmethod
    def from_dict(cls, data: Any) -> "Established | None":
        est = _dict(data)
        if not est:
            return None
        lic = _dict(est.get("license"))
        return cls(
            statement=_opt(est.get("statement")),
            release=_dict(est.get("release")) or None,
            license_id=_opt(lic.get("id")),
            license_text=_opt(lic.get("text")),
            lineage=tuple((_s(k), _s(v)) for k, v in _dict(est.get("lineage")).items()),
            chat_template_family=_opt(est.get("chat_template_family")),
            evidence=tuple(Evidence(_s(e.get("source")), _s(e.get("says"))) for e in _dicts(est.get("evidence"))),
            entries=tuple((_s(e.get("id")), _s(e.get("origin"))) for e in _dicts(est.get("entries"))),
            claimed_release=tuple((_s(k), _s(v)) for k, v in _dict(est.get("claimed_release")).items()),
            note=_s(est.get("note")),
            disputed=tuple(_s(d) for d in est.get("disputed") or [] if d) if isinstance(est.get("disputed"), list)
            else (),
            matched_at=_s(est.get("matched_at")),
        )


@dataclass(frozen=True)
class ContentWarning:
    kind: str
    value: str
    origin: str
    text: str


@dataclass(frozen=True)
class Check:
    at: str
    result: str
    detail: str
    by: str


@dataclass(frozen=True)
class ModelRecord:
    name: str
    schema_version: int
    file: FileFacts
    source: dict[str, Any]
    license: License
    lineage: Lineage
    content_warnings: tuple[ContentWarning, ...]
    gguf: dict[str, Any]
    signature: dict[str, Any] | None
    verification: tuple[Check, ...]
    established: Established | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelRecord":
        """Read a record of any known schema version (1, 2, 3) without trusting its shape."""
        from appliance.models import manifest

        data = copy.deepcopy(_dict(data))
        if isinstance(data.get("file"), dict) and isinstance(data.get("license"), dict):
            data = manifest.migrate(data)
        file = _dict(data.get("file"))
        shards = _dict(file.get("shard_set"))
        lineage = _dict(data.get("lineage"))
        return cls(
            name=_s(data.get("name")),
            schema_version=_int(data.get("schema_version")) or 1,
            file=FileFacts(
                name=_s(file.get("name")), size=_int(file.get("size")), sha256=_s(file.get("sha256")),
                role=_s(file.get("role")) or "model",
                shards=tuple(Shard(_int(f.get("index")) or i, _s(f.get("name")), _int(f.get("size")),
                                   _s(f.get("sha256"))) for i, f in enumerate(_dicts(shards.get("files")))),
            ),
            source=_dict(data.get("source")),
            license=License.from_dict(data.get("license")),
            lineage=Lineage(
                base_models=tuple(BaseModel(_opt(b.get("name")), _opt(b.get("repo_url")),
                                            _s(b.get("relation")) or "unknown", _s(b.get("from")) or "unknown",
                                            _opt(b.get("organization")),
                                            _s(b["version"]) if b.get("version") is not None else None)
                                  for b in _dicts(lineage.get("base_models"))),
                quantization=_opt(lineage.get("quantization")),
                quantized_by=_opt(lineage.get("quantized_by")),
                claimed_by=_s(lineage.get("claimed_by")),
            ),
            content_warnings=tuple(ContentWarning(_s(w.get("kind")) or "warning", _s(w.get("value")),
                                                  _s(w.get("from")),
                                                  _s(w.get("text") or w.get("warning") or w.get("note")
                                                     or w.get("value")))
                                   for w in _dicts(data.get("content_warnings"))),
            gguf=_dict(data.get("gguf")),
            signature=_dict(data.get("signature")) or None,
            verification=tuple(Check(_s(c.get("at")), _s(c.get("result")), _s(c.get("detail")), _s(c.get("by")))
                               for c in _dicts(data.get("verification"))),
            established=Established.from_dict(data.get("established")),
            raw=data,
        )

    @classmethod
    def of(cls, record: "ModelRecord | dict[str, Any]") -> "ModelRecord":
        return record if isinstance(record, ModelRecord) else cls.from_dict(record)

    @property
    def last_check(self) -> Check | None:
        return self.verification[-1] if self.verification else None

    def consent_reasons(self) -> list[str]:
        """Why this model must be shown to the user before its first use; empty when nothing needs saying."""
        lic, reasons = self.license, []
        if lic.status == "conflict":
            shown = ", ".join([d.value for d in lic.declared]
                              + ([f"{lic.established.id} (established by its bytes)"] if lic.established else []))
            reasons.append(f"Its license is unclear: the file declares conflicting licenses ({shown}).")
        elif lic.status == "user-asserted":
            if lic.restricts_use or lic.commercial_use != "permitted":
                reasons.append(f"Its license {lic.id} (asserted by you, not by the file) restricts use; "
                               f"commercial use: {lic.commercial}.")
        elif not lic.settled:
            reasons.append("Its license is UNKNOWN: nobody established under which terms you may use it.")
        elif lic.restricts_use or lic.commercial_use != "permitted":
            note = f" ({lic.note})" if lic.note else ""
            reasons.append(f"Its license {lic.id} restricts use; commercial use: {lic.commercial}{note}.")
        for warning in self.content_warnings:
            reasons.append(f"Content warning: {warning.text}")
        return reasons
