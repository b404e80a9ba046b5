"""CycloneDX 1.6 export of a model's record: one machine-learning-model component, validated against the schema.

What goes where:
  hashes                  the sha256 of the file (and of every shard, as nested file components)
  licenses                every declared value (acknowledgement "declared") and, when the library could establish
                          one, the verdict ("concluded"); a license nobody established gets none, and the
                          appliance:license.status property says "unknown" or "conflict" (never a guess)
  pedigree.ancestors      base models from the GGUF header and the hub card, each with its relation
  modelCard               architecture from the header, considerations: content warnings, license terms, the
                          note that GGUF metadata is the converter's claim
  purl                    pkg:huggingface/<repo>@<commit> for a hub download
  properties              appliance:* facts with no CycloneDX field (commercial use, quantization, role, source)
The document is built as plain JSON (cyclonedx-python-lib has no model card yet) and checked with the library's
bundled 1.6 JSON schema, offline.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import appliance
from appliance.models import licenses, manifest


def _license(value: str, acknowledgement: str) -> dict[str, Any]:
    info = licenses.lookup(value)
    body: dict[str, Any] = {"id": info.id} if info.spdx else {"name": value if not info.known else info.id}
    return {"license": dict(body, acknowledgement=acknowledgement)}


def _props(pairs: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": f"appliance:{key}", "value": str(value)} for key, value in pairs.items() if value not in (None, "")]


def build(entry) -> dict[str, Any]:
    record = entry.record
    file, lic, lineage, source = record["file"], record["license"], record["lineage"], record.get("source", {})
    gguf = record.get("gguf", {})
    component: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": f"model:{entry.name}",
        "name": entry.name,
        "version": source.get("commit") or source.get("version") or file["sha256"][:12],
        "description": f"GGUF file {file['name']} ({file['role']})",
        "hashes": [{"alg": "SHA-256", "content": file["sha256"]}],
    }
    license_entries = [_license(d["value"], "declared") for d in lic.get("declared", [])]
    if lic["status"] in ("confirmed", "user-asserted"):
        license_entries.append(_license(lic["id"], "concluded"))
    if license_entries:
        component["licenses"] = license_entries
    if source.get("kind") == "hub":
        component["purl"] = f"pkg:huggingface/{source['repo_id']}@{source['commit']}"
        component["externalReferences"] = [{"type": "distribution", "url": source["url"]},
                                           {"type": "website", "url": f"{source['endpoint']}/{source['repo_id']}"}]
    links = [link["value"] for link in lic.get("links", []) if str(link.get("value", "")).startswith("http")]
    if links:
        component.setdefault("externalReferences", []).extend({"type": "license", "url": url} for url in links)
    shards = file.get("shard_set")
    if shards:
        component["components"] = [{"type": "file", "bom-ref": f"model:{entry.name}:shard:{f['index']}",
                                    "name": f["name"], "hashes": [{"alg": "SHA-256", "content": f["sha256"]}]}
                                   for f in shards["files"]]
    ancestors = []
    for index, base in enumerate(lineage.get("base_models", [])):
        ancestor: dict[str, Any] = {"type": "machine-learning-model", "bom-ref": f"model:{entry.name}:base:{index}",
                                    "name": str(base.get("name") or base.get("repo_url") or "unknown")}
        if base.get("version"):
            ancestor["version"] = str(base["version"])
        if str(base.get("repo_url") or "").startswith("http"):
            ancestor["externalReferences"] = [{"type": "website", "url": base["repo_url"]}]
        ancestor["properties"] = _props({"relation": base.get("relation"), "from": base.get("from"),
                                         "organization": base.get("organization")})
        ancestors.append(ancestor)
    if ancestors:
        component["pedigree"] = {"ancestors": ancestors}
    considerations: dict[str, Any] = {}
    warnings = record.get("content_warnings", [])
    if warnings:
        considerations["ethicalConsiderations"] = [
            {"name": f"{w['kind']}: {w['value']}", "mitigationStrategy": f"recorded from {w['from']}"} for w in warnings]
    considerations["technicalLimitations"] = [manifest.GGUF_CLAIM]
    considerations["useCases"] = [f"license {lic['id']} ({lic['status']}): commercial use {lic['commercial_use']}"
                                  + (f"; {lic['note']}" if lic.get("note") else "")]
    model_card: dict[str, Any] = {"bom-ref": f"model:{entry.name}:card", "considerations": considerations}
    if gguf.get("architecture"):
        model_card["modelParameters"] = {"architectureFamily": gguf["architecture"],
                                         "modelArchitecture": gguf.get("name") or gguf["architecture"]}
    model_card["properties"] = _props({"chat_template_sha256": gguf.get("chat_template_sha256"),
                                       "context_length": gguf.get("context_length")})
    component["modelCard"] = model_card
    component["properties"] = _props({
        "license.status": lic["status"], "license.family": lic["family"],
        "license.commercial_use": lic["commercial_use"],
        "license.conflicts": ", ".join(lic.get("conflicts", [])),
        "license.user_asserted": (lic.get("user_asserted") or {}).get("id"),
        "quantization": lineage.get("quantization"), "quantized_by": lineage.get("quantized_by"),
        "role": file["role"], "size": file.get("shard_set", {}) and file["shard_set"]["total_size"] or file["size"],
        "source.kind": source.get("kind"), "signature.key_id": (record.get("signature") or {}).get("key_id"),
    })
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": manifest.now(),
            "tools": {"components": [{"type": "application", "name": "appliance", "version": appliance.__version__}]},
        },
        "components": [component],
    }


def validate(document: dict[str, Any]) -> None:
    """Raise ValueError with the schema's message unless the document is valid CycloneDX 1.6."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    if error is not None:
        raise ValueError(f"not valid CycloneDX 1.6: {str(error).splitlines()[0]}")


def export(entry) -> dict[str, Any]:
    document = build(entry)
    validate(document)  # our own output: a failure here is a bug, and raises as one
    return document
