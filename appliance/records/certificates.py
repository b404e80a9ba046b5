"""Answer certificates: a small signed JSON stating that an answer came from this model file and these passages at
this time, checked offline.

    {"schema": "appliance.answer-certificate", "version": 1, "algorithm": "ed25519", "key_id": "ed25519:<16 hex>",
     "public_key": "<base64>", "payload": {"statement", "question", "answer", "time", "time_utc", "model",
     "sources" (each with chunk_sha256), "rules", "settings", "log": {"entry", "entry_sha256", "record_sha256"}},
     "signature": "<base64 Ed25519 over the canonical payload>"}

`certify` signs only an answer whose log verifies (appliance.records.answer_log); `check` verifies the signature
(against --pubkey when given), then says whether the model file and the passages on this machine still match the hashes,
and whether this machine's answer log holds the entry. Unknown stays unknown: a model or library that is not here
is said to be not checkable, not a failure.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import appliance
from appliance.errors import ApplianceError, IntegrityError, UsageError
from appliance.models import signing
from appliance.models.verify import read_regular, sha256_file
from appliance.paths import atomic_write_text

SCHEMA = "appliance.answer-certificate"
VERSION = 1
MAX_BYTES = 4 * 1024 * 1024
STATEMENT = ("This answer was given by the model file with this sha256, from these passages of the owner's library, "
             "at this time, as recorded in the appliance's answer log.")
_SURROGATE = re.compile("[\udc80-\udcff]")


def _printable(value: Any) -> Any:
    """JSON-safe text: a non-UTF-8 byte kept in a path (a surrogate escape) becomes \\xNN."""
    if isinstance(value, str):
        return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xdc00:02x}", value)
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    return value


def certify(history, answer_id: int, key: Path, target: Path) -> dict[str, Any]:
    """Sign the logged exchange whose answer is message `answer_id`; write the certificate to `target`."""
    report = history.verify_log()
    if not report.ok:
        raise IntegrityError(f"the answer log does not verify ({report.first}); nothing certified")
    found = history.logged_exchange(answer_id)
    if found is None:
        role = history.message_role(answer_id)
        if role == "user":
            raise UsageError(f"message {answer_id} is a question; certify its answer (the next message's id)")
        raise UsageError(f"no answer {answer_id} in the answer log; answer ids are in `appliance history show N "
                         "--format json`")
    seq, entry_hash, entry, record = found
    payload = _printable({
        "statement": STATEMENT,
        "answer_id": answer_id,
        "conversation_id": entry.get("conversation_id"),
        "question": record.get("question"),
        "answer": record.get("answer"),
        "time": record.get("time"),
        "time_utc": datetime.datetime.fromtimestamp(record.get("time") or 0, datetime.timezone.utc).isoformat(),
        "model": record.get("model"),
        "sources": record.get("sources") or [],
        "rules": record.get("rules") or [],
        "refused": record.get("refused"),
        "settings": record.get("settings") or {},
        "adopted": bool(record.get("adopted")),
        "log": {"entry": seq, "entry_sha256": entry_hash, "record_sha256": entry.get("record_sha256")},
        "appliance": appliance.__version__,
    })
    signed = signing.sign_payload(key, payload)
    document = {"schema": SCHEMA, "version": VERSION, "algorithm": signed["algorithm"], "key_id": signed["key_id"],
                "public_key": signed["public_key"], "payload": payload, "signature": signed["signature"]}
    target = Path(target).expanduser()
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a directory")
    try:
        atomic_write_text(target, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ApplianceError(f"cannot write {target}: {exc.strerror or exc}") from None
    return document


@dataclass
class Check:
    name: str
    ok: bool | None  # None: cannot be checked here (unknown stays unknown)
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}

    def line(self) -> str:
        mark = "ok  " if self.ok else ("skip" if self.ok is None else "FAIL")
        return f"{mark}  {self.name}: {self.detail}"


def read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(read_regular(Path(path).expanduser(), MAX_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"certificate {path} not found") from None
    except (ApplianceError, ValueError, RecursionError) as exc:
        raise IntegrityError(f"{path} is not a readable certificate ({str(exc)[:200]})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA or not isinstance(document.get("payload"),
                                                                                              dict):
        raise IntegrityError(f"{path} is not an appliance answer certificate")
    return document


def check(path: Path, services, pubkey: Path | None = None) -> list[Check]:
    """The signature first (nothing else is trusted without it), then the model file, the passages and the local
    answer log, each ok / FAIL / skip with the reason."""
    document = read(path)
    pinned = signing.load_public_raw(pubkey) if pubkey is not None else None
    try:
        key = signing.verify_payload(document.get("public_key"), document.get("signature"), document["payload"],
                                     pinned)
    except IntegrityError as exc:
        return [Check("signature", False, f"{exc}: the certificate cannot be trusted")]
    payload = document["payload"]
    checks = [Check("signature", True, f"valid, key {key}" + (" (the key given)" if pinned is not None else
                                                                " (the key inside the certificate; give --pubkey "
                                                                "to check who signed it)"))]
    checks.append(_check_model(payload.get("model") or {}, services))
    checks += _check_sources(payload.get("sources") or [], services)
    checks.append(_check_log(payload.get("log") or {}, services))
    return checks


def _check_model(model: dict[str, Any], services) -> Check:
    name, sha = model.get("name"), model.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        return Check("model", None, f"no model file hash was recorded for {name!r} (answered before the log "
                                    "existed)")
    entries = [e for e in services.models.entries() if e.available]
    for entry in [e for e in entries if e.sha256 == sha] + [e for e in entries if e.name == name and e.sha256 != sha]:
        try:
            measured = sha256_file(entry.path)
        except (ApplianceError, OSError) as exc:
            return Check("model", None, f"{entry.path} cannot be read here ({exc})")
        if measured == sha:
            return Check("model", True, f"{entry.name}: {entry.path} matches sha256 {sha[:16]}...")
        return Check("model", False, f"{entry.name}: {entry.path} is sha256 {measured[:16]}..., not the certified "
                                     f"{sha[:16]}... (a different or changed model file)")
    return Check("model", None, f"model {name!r} (sha256 {sha[:16]}...) is not on this machine")


def _check_sources(sources: list[dict[str, Any]], services) -> list[Check]:
    if not sources:
        return []
    try:
        kb = services.knowledge.open()
    except Exception as exc:  # noqa: BLE001 - a library that cannot be opened here leaves the sources unknown
        return [Check("sources", None, f"the library cannot be opened here ({exc})")]
    checks = []
    for source in sources:
        label = f"source [{source.get('number')}] {source.get('path')}"
        sha = source.get("chunk_sha256")
        if source.get("article"):
            checks.append(_check_archive(kb, label, source))
        elif not isinstance(sha, str):
            checks.append(Check(label, None, "no passage hash was recorded"))
        else:
            hashes = _passage_hashes(kb, str(source.get("path")))
            if hashes is None:
                checks.append(Check(label, None, "not in this machine's library"))
            elif sha in hashes:
                checks.append(Check(label, True, f"the library still holds this passage (sha256 {sha[:16]}...)"))
            else:
                checks.append(Check(label, False, "the library's copy of this document changed: no passage has the "
                                                  f"certified sha256 {sha[:16]}..."))
    return checks


def _check_archive(kb, label: str, source: dict[str, Any]) -> Check:
    """A passage of a ZIM archive: the archive is the certified one when the library's record of the file at
    that path has the certified sha256 and the file is still the size and date it had when hashed (a full
    re-hash is `appliance kb verify`)."""
    certified = source.get("source_sha256")
    if not isinstance(certified, str) or len(certified) != 64:
        return Check(label, None, "a passage of a ZIM archive; no hash of the archive was recorded (answered "
                                  "before the library kept one)")
    path = str(source.get("path"))
    said = kb.described(path)
    if said.get("sha256") is None:
        return Check(label, None, f"archive sha256 {certified[:16]}... certified; this library has no record of "
                                  "an archive at that path")
    if said["sha256"] != certified:
        return Check(label, False, f"the archive registered at this path is sha256 {said['sha256'][:16]}..., not "
                                   f"the certified {certified[:16]}... (another or changed archive)")
    states = kb.check_sources({path})
    if states and states[0].problem:
        return Check(label, False, f"the archive's record matches the certified sha256 {certified[:16]}..., but the "
                                   f"file {states[0].state}: {states[0].detail}")
    return Check(label, True, f"the archive at this path is the certified one (sha256 {certified[:16]}... on record, "
                              "the file unchanged since: size and date; `appliance kb verify` re-hashes it)")


def _passage_hashes(kb, path: str) -> set[str] | None:
    """sha256 of every stored passage of the document at `path` (None: not in this library). Reads the store's
    chunk text directly; the knowledge base has no public call for a document's passages."""
    import hashlib

    store = kb.store
    document = store.ready_document(path)
    if document is None:
        return None
    with store.lock:
        rows = store.db.execute("SELECT text FROM chunks WHERE doc_id = ?", (document.id,)).fetchall()
    return {hashlib.sha256(row[0].encode("utf-8", "surrogatepass")).hexdigest() for row in rows}


def _check_log(log: dict[str, Any], services) -> Check:
    entry_hash = log.get("entry_sha256")
    if not isinstance(entry_hash, str):
        return Check("answer log", None, "the certificate names no log entry")
    seq = services.history.log_entry_with_hash(entry_hash)
    if seq is None:
        return Check("answer log", None, "not in this machine's answer log (certified on another machine, or "
                                         "deleted here)")
    return Check("answer log", True, f"this machine's answer log holds it (entry {seq})")
