"""CycloneDX 1.6 export of a model's record: one machine-learning-model component, validated against the schema.

What goes where:
  hashes                  the sha256 of the file (and of every shard, as nested file components)
  licenses                every declared value (acknowledgement "declared") and, when the library could establish
                          one, the verdict ("concluded"); a license nobody established gets none, and the
                          appliance:license.status property says "unknown" or "conflict" (never a guess);
                          appliance:license.basis says what the verdict rests on (declared, established by the
                          bytes, yours)
  established             a catalog match: purl and distribution of the release the bytes are identical to, its
                          license text, the evidence for the hash (externalReferences "evidence"), its lineage as
                          ancestors marked "catalog (established)", kept apart from what the file claims
  pedigree.ancestors      base models from the GGUF header and the hub card, each with its relation
  modelCard               architecture from the header, considerations: content warnings, license terms, the
                          note that GGUF metadata is the converter's claim
  purl                    pkg:huggingface/<repo>@<commit> for a hub download
  properties              appliance:* facts with no CycloneDX field (commercial use, quantization, role, source)
With the knowledge sources (`models bom NAME --with-kb`): each document or ZIM archive of the library as a "data"
component: its sha256, the license its file states (declared), the rest of its provenance record as appliance:kb.*
properties.
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
    return [{"name": f"appliance:{key}", "value": str(value)} for key, value in pairs.items()
            if value not in (None, "")]


def build(entry) -> dict[str, Any]:
    info = entry.info  # the typed record: the license verdict and its basis are decided there
    lic, established = info.license, info.established
    source, gguf = info.source, info.gguf
    component: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": f"model:{entry.name}",
        "name": entry.name,
        "version": source.get("commit") or source.get("version") or info.file.sha256[:12],
        "description": f"GGUF file {info.file.name} ({info.file.role})",
        "hashes": [{"alg": "SHA-256", "content": info.file.sha256}],
    }
    license_entries = [_license(d.value, "declared") for d in lic.declared]
    if lic.settled or lic.status == "user-asserted":
        license_entries.append(_license(lic.id, "concluded"))
    if license_entries:
        component["licenses"] = license_entries
    release = established.release if established and established.statement else None
    if source.get("kind") == "hub":
        component["purl"] = f"pkg:huggingface/{source['repo_id']}@{source['commit']}"
        component["externalReferences"] = [{"type": "distribution", "url": source["url"]},
                                           {"type": "website", "url": f"{source['endpoint']}/{source['repo_id']}"}]
    elif release:  # byte-identical to a known release: the same package
        component["purl"] = f"pkg:huggingface/{release['repo']}@{release['revision']}"
    references = component.setdefault("externalReferences", [])
    if release:
        references.append({"type": "distribution", "url": f"https://huggingface.co/{release['repo']}/tree/"
                                                           f"{release['revision']}",
                           "comment": f"established: {established.statement}"})
        if lic.established and str(lic.established.text or "").startswith("http"):
            references.append({"type": "license", "url": lic.established.text,
                               "comment": "license text of the release the file's bytes match"})
        for evidence in established.evidence:
            if evidence.source.startswith("http"):
                references.append({"type": "evidence", "url": evidence.source, "comment": evidence.says[:500]})
    links = [value for value, _ in lic.links if value.startswith("http")]
    references.extend({"type": "license", "url": url} for url in links)
    if not references:
        del component["externalReferences"]
    if info.file.shards:
        component["components"] = [{"type": "file", "bom-ref": f"model:{entry.name}:shard:{shard.index}",
                                    "name": shard.name, "hashes": [{"alg": "SHA-256", "content": shard.sha256}]}
                                   for shard in info.file.shards]
    ancestors = []
    if release:
        facts = dict(established.lineage)
        for relation, key in (("fine-tune", "fine_tune"), ("base", "base_model")):
            if facts.get(key):
                ancestors.append({"type": "machine-learning-model",
                                  "bom-ref": f"model:{entry.name}:established:{key}", "name": facts[key],
                                  "externalReferences": [{"type": "website",
                                                          "url": f"https://huggingface.co/{facts[key]}"}],
                                  "properties": _props({"relation": relation, "from": "catalog (established)",
                                                        "source": facts.get("from")})})
    for index, base in enumerate(info.lineage.base_models):
        ancestor: dict[str, Any] = {"type": "machine-learning-model", "bom-ref": f"model:{entry.name}:base:{index}",
                                    "name": str(base.name or base.repo_url or "unknown")}
        if base.version:
            ancestor["version"] = base.version
        if str(base.repo_url or "").startswith("http"):
            ancestor["externalReferences"] = [{"type": "website", "url": base.repo_url}]
        ancestor["properties"] = _props({"relation": base.relation, "from": base.origin,
                                         "organization": base.organization})
        ancestors.append(ancestor)
    if ancestors:
        component["pedigree"] = {"ancestors": ancestors}
    considerations: dict[str, Any] = {}
    if info.content_warnings:
        considerations["ethicalConsiderations"] = [
            {"name": f"{w.kind}: {w.value}", "mitigationStrategy": f"recorded from {w.origin}"}
            for w in info.content_warnings]
    considerations["technicalLimitations"] = [manifest.GGUF_CLAIM]
    considerations["useCases"] = [f"license {lic.id} ({lic.status}, basis {lic.basis}): commercial use "
                                  f"{lic.commercial_use}" + (f"; {lic.note}" if lic.note else "")]
    model_card: dict[str, Any] = {"bom-ref": f"model:{entry.name}:card", "considerations": considerations}
    if gguf.get("architecture"):
        model_card["modelParameters"] = {"architectureFamily": gguf["architecture"],
                                         "modelArchitecture": gguf.get("name") or gguf["architecture"]}
    model_card["properties"] = _props({
        "chat_template_sha256": gguf.get("chat_template_sha256"), "context_length": gguf.get("context_length"),
        "chat_template_family": established.chat_template_family if release else None,
    })
    component["modelCard"] = model_card
    component["properties"] = _props({
        "license.status": lic.status, "license.basis": lic.basis, "license.family": lic.family,
        "license.commercial_use": lic.commercial_use,
        "license.conflicts": ", ".join(lic.conflicts),
        "license.established": lic.established.id if lic.established else None,
        "license.user_asserted": lic.user_asserted.id if lic.user_asserted else None,
        "established": established.statement if established else None,
        "established.note": established.note if established and not established.statement else None,
        "quantization": info.lineage.quantization, "quantized_by": info.lineage.quantized_by,
        "role": info.file.role, "size": info.file.total_size,
        "source.kind": source.get("kind"), "signature.key_id": (info.signature or {}).get("key_id"),
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


def knowledge_component(number: int, source: dict[str, Any]) -> dict[str, Any]:
    """One knowledge source (kb.KnowledgeBase.records(): a document or ZIM archive with its provenance record)
    as a CycloneDX data component: its sha256, the license its file states (declared; none when it states none),
    and what else the record knows as appliance:kb.* properties (origin, publisher, who took the hash)."""
    record = source.get("record") or {}
    facts = record.get("facts") or {}

    def fact(name: str) -> str | None:
        entry = facts.get(name)
        return entry.get("value") if isinstance(entry, dict) else None

    component: dict[str, Any] = {
        "type": "data",
        "bom-ref": f"kb:{number}",
        "name": str(source.get("path", "?")).rsplit("/", 1)[-1],
        "description": f"{source.get('kind')} in the knowledge base"
                       + (" (registered ZIM archive, searched through its own index)"
                          if source.get("mode") == "registered" else f" ({source.get('chunks')} passages)"),
    }
    if record.get("sha256"):
        component["hashes"] = [{"alg": "SHA-256", "content": record["sha256"]}]
    if fact("License"):
        component["licenses"] = [_license(str(fact("License")), "declared")]
    origin = record.get("origin") or {}
    component["properties"] = _props({
        "kb.path": source.get("path"), "kb.title": fact("Title") or source.get("title"),
        "kb.publisher": fact("Publisher"), "kb.creator": fact("Creator"), "kb.date": fact("Date"),
        "kb.language": fact("Language"), "kb.license": None if fact("License") else "unknown (the file states none)",
        "kb.sha256.taken_by": record.get("hashed_by") or ("never hashed" if not record.get("sha256") else None),
        "kb.origin.kind": origin.get("kind"), "kb.origin.url": origin.get("url"), "kb.origin.pack": origin.get("pack"),
        "kb.size": record.get("size"),
    })
    return component


def validate(document: dict[str, Any]) -> None:
    """Raise ValueError with the schema's message unless the document is valid CycloneDX 1.6."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    if error is not None:
        raise ValueError(f"not valid CycloneDX 1.6: {str(error).splitlines()[0]}")


def export(entry, knowledge: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The model's BOM; with `knowledge` (kb.KnowledgeBase.records()), the installation's knowledge sources too,
    as data components."""
    document = build(entry)
    if knowledge:
        document["components"] += [knowledge_component(n, source) for n, source in enumerate(knowledge, start=1)]
    validate(document)  # our own output: a failure here is a bug, and raises as one
    return document
