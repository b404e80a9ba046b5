"""The provenance record of one model file: a versioned JSON document kept beside the file (and in the library).

Everything here is either measured (size, sha256), recorded from a named source (the wheel, the GGUF header, the
hub), or asserted by the user and marked as theirs. A value nobody established is "unknown", never guessed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from appliance.models import licenses
from appliance.models.gguf_meta import GGUFInfo
from appliance.paths import atomic_write_text

SCHEMA = "appliance.model-manifest"
SCHEMA_VERSION = 1
SUFFIX = ".manifest.json"


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + SUFFIX)


def license_section(declared: list[dict[str, str]]) -> dict[str, Any]:
    """Normalize declared license values ([{"value", "from"}]) into one record; conflicts are kept side by side."""
    infos = [(entry, licenses.lookup(entry["value"])) for entry in declared if entry.get("value")]
    known = {info.id: info for _, info in infos if info.family != "unknown"}
    if not infos:
        status, info = "unknown", licenses.UNKNOWN_LICENSE
    elif len(known) > 1:
        status, info = "conflict", licenses.UNKNOWN_LICENSE
    elif known:
        status, info = "confirmed", next(iter(known.values()))
    else:
        status, info = "unknown", licenses.UNKNOWN_LICENSE
    return {
        "declared": declared,
        "id": info.id,
        "family": info.family,
        "commercial_use": info.commercial_use if status == "confirmed" else "unknown",
        "restricts_use": info.restricts_use if status == "confirmed" else None,
        "status": status,
        "note": info.note,
    }


def _file_type_name(value: Any) -> str | None:
    if not isinstance(value, int):
        return None
    try:
        from gguf.constants import LlamaFileType

        return LlamaFileType(value).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"unknown ({value})"


def from_gguf(name: str, path: Path, size: int, sha256: str, info: GGUFInfo, source: dict[str, Any]) -> dict[str, Any]:
    declared = []
    if info.get("general.license"):
        declared.append({"value": str(info.get("general.license")), "from": "gguf:general.license"})
    base_models = []
    count = info.get("general.base_model.count", 0)
    for index in range(count if isinstance(count, int) and count < 64 else 0):
        prefix = f"general.base_model.{index}."
        base_models.append({
            key: info.get(prefix + key) for key in ("name", "organization", "repo_url", "version")
            if info.get(prefix + key) is not None
        } | {"from": "gguf"})
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": now(),
        "file": {"name": path.name, "size": size, "sha256": sha256, "role": "model"},
        "source": source,
        "license": license_section(declared),
        "lineage": {
            "base_models": base_models,
            "quantization": _file_type_name(info.get("general.file_type")),
            "quantized_by": info.get("general.quantized_by"),
            "claimed_by": "gguf metadata (a claim by whoever converted the file)",
        },
        "gguf": {
            "version": info.version,
            "architecture": info.architecture,
            "name": info.get("general.name"),
            "context_length": info.arch_value("context_length"),
            "block_count": info.arch_value("block_count"),
            "embedding_length": info.arch_value("embedding_length"),
            "tensor_count": info.tensor_count,
            "chat_template_sha256": info.chat_template_sha256,
        },
        "content_warnings": [],
        "verification": [{"at": now(), "result": "ok", "sha256": sha256, "by": "import"}],
    }


def read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ApplianceError(f"manifest {path} is missing; re-import the model") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApplianceError(f"manifest {path} is not valid JSON ({exc}); re-import the model") from None
    if data.get("schema") != SCHEMA:
        raise ApplianceError(f"{path} is not a model manifest")
    if data.get("schema_version", 0) > SCHEMA_VERSION:
        raise ApplianceError(f"{path} was written by a newer appliance (schema {data['schema_version']})")
    return data


def write(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False) + "\n")
