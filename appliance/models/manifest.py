"""The provenance record of one model file: a versioned JSON document that travels with the file.

The library keeps its own copy (APPLIANCE_HOME/models/<name>.manifest.json, the one checks are made against) and
writes a sidecar `<file>.manifest.json` beside the file when it can, so a file carried to another machine carries
its record. Everything in it is either measured (size, sha256), recorded from a named source (the wheel, the GGUF
header, the hub), or asserted by the user and marked as theirs. A value nobody established is unknown, never
guessed; GGUF metadata is a claim by whoever converted the file and is recorded as such.

Schema (version 3; versions 1 and 2 are upgraded on read):
  file              name, size, sha256 (of the file handed to llama.cpp), role (model / lora-adapter / projector),
                    shard_set (null, or count, total_size and every shard's name, size, sha256)
  source            kind local-import | hub | wheel | split-wheels, and where it came from (hub: repo, commit,
                    LFS sha256)
  license           declared (every raw value with where it came from and its normalized id), established (the
                    license the file's bytes establish through the catalog, or null), id, family, commercial_use
                    (permitted / restricted / conditional / unknown), status (confirmed / established / conflict /
                    unknown / user-asserted), declared_status, conflicts, user_asserted, links
  lineage           base_models (name, repo, relation, from), quantization, quantized_by, claimed_by: the claims
  established       null, or what a catalog match establishes from the bytes (see catalog.py): statement ("file is
                    byte-identical to REPO@REV"), release, license, lineage, chat_template_family, evidence, note
  content_warnings  [{kind, value, from, text}] (hub tags such as not-for-all-audiences, user notes)
  gguf              header claims (architecture, name, context length, chat_template_sha256 ...), template_check
  signature         null, or the pinned Ed25519 key id and public key (see signing.py)
  verification      the last checks: when, result, by whom
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from appliance.models import licenses
from appliance.models.gguf_meta import GGUFInfo, gguf_constants
from appliance.models.verify import read_regular
from appliance.paths import atomic_write_text

SCHEMA = "appliance.model-manifest"
SCHEMA_VERSION = 3
SUFFIX = ".manifest.json"
ROLES = ("model", "lora-adapter", "projector")
HISTORY_KEEP = 20
GGUF_CLAIM = "gguf metadata: a claim by whoever converted the file"
MAX_BYTES = 16 * 1024 * 1024  # a record is a few KiB; a bigger file is not one

# Content tags on the hub that a user should see before choosing a model.
WARNING_TAGS = ("not-for-all-audiences", "uncensored", "abliterated", "nsfw")


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + SUFFIX)


# -- license ----------------------------------------------------------------------------------------------------
def declare(value: Any, origin: str) -> dict[str, str] | None:
    """One declared license value, as written, with where it came from and what the table makes of it."""
    if value is None or value == "" or value == []:
        return None
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return {"value": text, "from": origin, "id": licenses.lookup(text).id}


def license_section(declared: list[dict[str, str]], user_asserted: dict[str, Any] | None = None,
                    links: list[dict[str, str]] | None = None,
                    established: dict[str, Any] | None = None) -> dict[str, Any]:
    """Normalize the declared values into one verdict; conflicting declarations are kept side by side.

    A recognized license is an assertion. 'other', 'unknown' or an empty value asserts nothing. A value the table
    does not recognize is an assertion we cannot read: alone it leaves the license unknown, next to a recognized one
    it is a conflict (we cannot tell whether the two agree).

    `established` is a license the file's bytes establish (a catalog match: {id, text, from}). It decides the
    verdict (status `established`) unless a declaration disagrees with it: then the status is `conflict`, never a
    silent override. `declared_status` is always what the declarations alone say.
    """
    declared = [entry for entry in declared if entry and entry.get("value")]
    specific: dict[str, licenses.LicenseInfo] = {}
    unreadable: list[str] = []
    for entry in declared:
        info = licenses.lookup(entry["value"])
        entry["id"] = info.id
        if info.known:
            specific[info.id] = info
        elif entry["value"].strip().lower() not in _NON_ASSERTIONS:
            unreadable.append(entry["value"])
    if len(specific) > 1 or (specific and unreadable):
        declared_status, info = "conflict", licenses.UNKNOWN_LICENSE
    elif specific:
        declared_status, info = "confirmed", next(iter(specific.values()))
    else:
        declared_status, info = "unknown", (licenses.lookup("other") if declared else licenses.UNKNOWN_LICENSE)
    status, conflicts = declared_status, (sorted(set(specific) | set(unreadable)) if declared_status == "conflict"
                                          else [])
    if established:
        by_bytes = licenses.lookup(established.get("id"))
        if by_bytes.known and (unreadable or set(specific) - {by_bytes.id}):
            status, info = "conflict", licenses.UNKNOWN_LICENSE
            conflicts = sorted(set(specific) | set(unreadable) | {by_bytes.id})
        elif by_bytes.known:
            status, info = "established", by_bytes
    settled = status in ("confirmed", "established")
    section: dict[str, Any] = {
        "declared": declared,
        "links": links or [],
        "established": established or None,
        "id": info.id,
        "family": info.family,
        "commercial_use": info.commercial_use if settled else licenses.UNKNOWN,
        "restricts_use": info.restricts_use if settled else None,
        "status": status,
        "declared_status": declared_status,
        "conflicts": conflicts,
        "note": info.note if settled else _STATUS_NOTES[status],
        "user_asserted": None,
    }
    if user_asserted:
        asserted = licenses.lookup(user_asserted["value"])
        section.update(
            id=asserted.id, family=asserted.family, commercial_use=asserted.commercial_use,
            restricts_use=asserted.restricts_use, status="user-asserted",
            note=f"asserted by the user, not by the file or its publisher; {asserted.note}".rstrip("; "),
            user_asserted=user_asserted,
        )
    return section


_NON_ASSERTIONS = {"other", "unknown", "none", "noassertion", "n/a"}
_STATUS_NOTES = {
    "unknown": "no license could be established from the file or its source",
    "conflict": "the declarations (and what the file's bytes establish) disagree; read them before using this model",
}


def user_assertion(value: str, note: str = "") -> dict[str, Any]:
    info = licenses.lookup(value)
    if not info.known:
        raise ApplianceError(
            f"{value!r} is not a license id this appliance knows; known ids: {', '.join(licenses.known_ids())}"
        )
    return {"value": value, "id": info.id, "by": "user", "at": now(), "note": note}


def relicense(record: dict[str, Any], user_asserted: dict[str, Any] | None) -> None:
    """Recompute the license verdict from the declared values and a (new or cleared) user assertion."""
    old = record["license"]
    record["license"] = license_section([dict(d) for d in old["declared"]], user_asserted, old.get("links"),
                                        old.get("established"))


def establish(record: dict[str, Any], section: dict[str, Any] | None) -> bool:
    """Set what the file's bytes establish (a catalog match's section, or None) and recompute the license verdict.

    Returns True when that changed anything. The declarations and the user's assertion are never touched.
    """
    before = (record.get("established"), record["license"].get("established"))
    lic = section.get("license") if section else None
    by_bytes = None
    if section and lic and lic.get("id"):  # (lic is None without a section)
        by_bytes = {"id": lic["id"], "text": lic.get("text"), "from": f"catalog: {section['statement']}"}
    def comparable(value: dict[str, Any] | None) -> dict[str, Any] | None:
        return {k: v for k, v in value.items() if k != "matched_at"} if value else None

    changed = comparable(before[0]) != comparable(section) or before[1] != by_bytes
    if changed or not before[0]:
        record["established"] = section
    old = record["license"]
    record["license"] = license_section([dict(d) for d in old.get("declared", [])], old.get("user_asserted"),
                                        old.get("links"), by_bytes)
    return changed


# -- lineage and role -------------------------------------------------------------------------------------------
def _file_type_name(value: Any) -> str | None:
    if not isinstance(value, int):
        return None
    try:
        return gguf_constants().LlamaFileType(value).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"unknown ({value})"


def role_of(info: GGUFInfo) -> str:
    kind = str(info.get("general.type") or "").lower()
    if kind == "adapter" or info.get("adapter.type") is not None:
        return "lora-adapter"
    if kind in ("mmproj", "projector", "clip") or info.architecture == "clip":
        return "projector"
    return "model"


def gguf_base_models(info: GGUFInfo) -> list[dict[str, Any]]:
    bases = []
    count = info.get("general.base_model.count", 0)
    for index in range(count if isinstance(count, int) and 0 <= count <= 64 else 0):
        prefix = f"general.base_model.{index}."
        base = {key: info.get(prefix + key) for key in ("name", "organization", "version", "repo_url")
                if isinstance(info.get(prefix + key), (str, int))}
        if base:
            bases.append(base | {"relation": "unknown", "from": f"gguf:general.base_model.{index}"})
    source = {key: info.get(f"general.source.{key}") for key in ("url", "repo_url", "huggingface.repository")
              if isinstance(info.get(f"general.source.{key}"), str)}
    if source:
        bases.append({"repo_url": source.get("repo_url") or source.get("url"),
                      "name": source.get("huggingface.repository"),
                      "relation": "converted-from", "from": "gguf:general.source"})
    return bases


def card_base_models(card: dict[str, Any], tags: list[str]) -> list[dict[str, Any]]:
    """Base models from a hub card (`base_model`, `base_model_relation`) and the hub's computed tags."""
    bases: list[dict[str, Any]] = []
    names = card.get("base_model")
    names = [names] if isinstance(names, str) else [n for n in (names or []) if isinstance(n, str)]
    relation = card.get("base_model_relation")
    by_tag = {}
    for tag in tags:
        parts = tag.split(":", 2)
        if len(parts) == 3 and parts[0] == "base_model":
            by_tag[parts[2]] = parts[1]
    for name in names:
        rel, origin = relation, "hub:card.base_model_relation"
        if not rel and name in by_tag:
            rel, origin = by_tag[name], "hub:tags"
        bases.append({"name": name, "repo_url": f"https://huggingface.co/{name}", "relation": rel or "unknown",
                      "relation_from": origin if rel else None, "from": "hub:card.base_model"})
    return bases


def from_gguf(name: str, path: Path, size: int, sha256: str, info: GGUFInfo, source: dict[str, Any],
              shard_set: dict[str, Any] | None = None,
              extra_declared: list[dict[str, str]] | None = None) -> dict[str, Any]:
    declared = [declare(info.get("general.license"), "gguf:general.license"),
                declare(info.get("general.license.name"), "gguf:general.license.name")]
    declared += extra_declared or []
    links = [{"value": str(info.get("general.license.link")), "from": "gguf:general.license.link"}] \
        if info.get("general.license.link") else []
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": now(),
        "file": {"name": path.name, "size": size, "sha256": sha256, "role": role_of(info), "shard_set": shard_set},
        "source": source,
        "license": license_section([d for d in declared if d], None, links),
        "lineage": {
            "base_models": gguf_base_models(info),
            "quantization": _file_type_name(info.get("general.file_type")),
            "quantized_by": info.get("general.quantized_by") if isinstance(info.get("general.quantized_by"), str)
            else None,
            "claimed_by": GGUF_CLAIM,
        },
        "gguf": {
            "claimed_by": GGUF_CLAIM,
            "version": info.version,
            "architecture": info.architecture,
            "name": _text(info.get("general.name")),
            "basename": _text(info.get("general.basename")),
            "finetune": _text(info.get("general.finetune")),
            "size_label": _text(info.get("general.size_label")),
            "author": _text(info.get("general.author")),
            "organization": _text(info.get("general.organization")),
            "context_length": info.arch_value("context_length"),
            "block_count": info.arch_value("block_count"),
            "embedding_length": info.arch_value("embedding_length"),
            "tensor_count": info.tensor_count,
            "chat_template_sha256": info.chat_template_sha256,
        },
        "content_warnings": [],
        "established": None,
        "signature": None,
        "verification": [{"at": now(), "result": "ok", "detail": sha256, "by": "import"}],
    }


def _text(value: Any) -> str | None:
    return value[:500] if isinstance(value, str) else None


def add_hub_card(record: dict[str, Any], card: dict[str, Any], tags: list[str]) -> None:
    """Fold a hub model card into the record: its license values, base models and content tags."""
    declared = [dict(d) for d in record["license"]["declared"]]
    for key in ("license", "license_name"):
        entry = declare(card.get(key), f"hub:card.{key}")
        if entry:
            declared.append(entry)
    links = list(record["license"].get("links", []))
    if card.get("license_link"):
        links.append({"value": str(card["license_link"]), "from": "hub:card.license_link"})
    record["license"] = license_section(declared, record["license"].get("user_asserted"), links)
    record["lineage"]["base_models"] = card_base_models(card, tags) + record["lineage"]["base_models"]
    for tag in tags:
        if tag.lower() in WARNING_TAGS:
            record["content_warnings"].append({"kind": "hub-tag", "value": tag, "from": "hub:tags",
                                               "text": f"the hub tags this model {tag!r}"})


def add_history(record: dict[str, Any], result: str, detail: str, by: str) -> None:
    history = list(record.get("verification", []))[-(HISTORY_KEEP - 1):]
    history.append({"at": now(), "result": result, "detail": detail[:300], "by": by})
    record["verification"] = history


# -- read / write -----------------------------------------------------------------------------------------------
def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older record up to the current schema (in memory; it is written back on the next change).

    Version 1 had no roles, shard sets, signatures or per-value license ids; version 2 had nothing established by
    the file's bytes. Missing pieces become empty, never guessed.
    """
    version = data.get("schema_version", 1)
    if version < 2:
        data["file"].setdefault("role", "model")
        data["file"].setdefault("shard_set", None)
        lic = data["license"]
        data["license"] = license_section(
            [{"value": str(d["value"]), "from": str(d.get("from", "unknown"))}
             for d in lic.get("declared", []) if isinstance(d, dict) and d.get("value")], None, [])
        data.setdefault("content_warnings", [])
        data.setdefault("signature", None)
    if version < 3:
        data.setdefault("established", None)
        data["license"].setdefault("established", None)
        data["schema_version"] = 3
    return data


def read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_regular(Path(path), MAX_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise ApplianceError(f"manifest {path} is missing; re-import the model") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ApplianceError(f"manifest {path} is not valid JSON ({str(exc)[:200]}); re-import the model") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ApplianceError(f"{path} is not a model manifest")
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ApplianceError(f"{path} was written by a newer appliance (schema {version}); upgrade to read it")
    for key in ("file", "license", "lineage"):
        if not isinstance(data.get(key), dict):
            raise ApplianceError(f"manifest {path} has no {key!r} section; re-import the model")
    file = data["file"]
    shards = file.get("shard_set")
    if not _is_sha256(file.get("sha256")) or not _is_size(file.get("size")) or (shards is not None and not (
            isinstance(shards, dict) and isinstance(shards.get("files"), list) and shards["files"]
            and all(isinstance(f, dict) and isinstance(f.get("name"), str) and _is_sha256(f.get("sha256"))
                    and _is_size(f.get("size")) for f in shards["files"]))):
        raise ApplianceError(f"manifest {path} does not say which bytes it describes (size and sha256 of every "
                             "file); re-import the model")
    return migrate(data)


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def write(path: Path, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8 (kept as surrogate escapes): JSON escapes it exactly
        text = json.dumps(record, indent=2, ensure_ascii=True) + "\n"
    atomic_write_text(Path(path), text)
