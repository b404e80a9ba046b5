"""Optional Ed25519 signatures over a model's file hashes, checked offline.

A signature document `<model file>.sig.json` travels beside the model. It signs a small payload (the model's name
and each file's name, size and sha256) with an Ed25519 key (the `cryptography` package; no network, no PKI):

    {"schema": "appliance.model-signature", "version": 1, "algorithm": "ed25519",
     "key_id": "ed25519:<16 hex>", "public_key": "<base64 raw key>", "payload": {...}, "signature": "<base64>"}

The manifest pins the public key when a model is signed here, or when it is imported with a valid signature. From
then on every verification checks the signature against the pinned key and the measured hashes; any failure
(missing document, other key, altered payload, hashes that differ) is an integrity failure and the model is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, IntegrityError, UsageError
from appliance.models.verify import read_regular
from appliance.paths import atomic_write_text

SCHEMA = "appliance.model-signature"
VERSION = 1
SUFFIX = ".sig.json"
MAX_DOCUMENT_BYTES = 1024 * 1024


def signature_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + SUFFIX)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_id(public_raw: bytes) -> str:
    return "ed25519:" + hashlib.sha256(public_raw).hexdigest()[:16]


def canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def payload_for(name: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": name, "files": [{"name": f["name"], "size": f["size"], "sha256": f["sha256"]} for f in files]}


def generate_key(private_path: Path) -> tuple[Path, str]:
    """Write a new private key (PEM, mode 0600) and its public key beside it (`.pub`). Returns (public path, key id)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path = Path(private_path).expanduser()
    public_path = private_path.with_name(private_path.name + ".pub")
    if not private_path.parent.is_dir():
        raise UsageError(f"{private_path.parent} is not a directory; create it first (no directories are made for "
                         "a key)")
    if private_path.exists() or public_path.exists():
        raise UsageError(f"{private_path} or {public_path} already exists; choose another path")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key()
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(public.public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
        except BaseException:
            private_path.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ApplianceError(f"cannot write the key to {private_path}: {exc.strerror or exc}") from None
    return public_path, key_id(_raw(public))


def _raw(public) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _read_key(path: Path) -> bytes:
    try:
        return read_regular(Path(path).expanduser(), 64 * 1024)
    except FileNotFoundError:
        raise UsageError(f"key file {path} not found") from None
    except ApplianceError as exc:
        raise UsageError(str(exc)) from None


def _load_private(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(_read_key(path), password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an Ed25519 key")
    return key


def load_public_raw(path: Path) -> bytes:
    """The raw 32-byte public key from a PEM public key file (or a private key file: its public half)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key(path)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        return _raw(_load_private(path).public_key())
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is not an Ed25519 public key")
    return _raw(key)


def sign(private_path: Path, payload: dict[str, Any], target: Path) -> dict[str, Any]:
    """Sign the payload, write the signature document to `target`; returns what the manifest pins."""
    key = _load_private(private_path)
    public = _raw(key.public_key())
    document = {
        "schema": SCHEMA, "version": VERSION, "algorithm": "ed25519", "key_id": key_id(public),
        "public_key": _b64(public), "payload": payload, "signature": _b64(key.sign(canonical(payload))),
    }
    atomic_write_text(target, json.dumps(document, indent=2) + "\n")
    return {"algorithm": "ed25519", "key_id": document["key_id"], "public_key": document["public_key"],
            "document": target.name}


def read_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(read_regular(Path(path), MAX_DOCUMENT_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise IntegrityError(f"{path}: signature document is missing; the model is signed and will not be loaded "
                             "without it") from None
    except (ApplianceError, ValueError, RecursionError) as exc:
        raise IntegrityError(f"{path}: signature document is unreadable ({str(exc)[:200]})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA or document.get("algorithm") != "ed25519":
        raise IntegrityError(f"{path}: not an appliance Ed25519 signature document")
    return document


def check(path: Path, name: str, files: list[dict[str, Any]], public_key_b64: str | None = None) -> str:
    """Check the signature document at `path` against the measured files; returns the key id.

    With `public_key_b64` (the pinned key) the document must be signed by that key; without it the key embedded in
    the document is used (first contact, e.g. an import), which proves only that the files match what that key signed.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    document = read_document(path)
    try:
        embedded = base64.b64decode(document["public_key"], validate=True)
        signature = base64.b64decode(document["signature"], validate=True)
        payload = document["payload"]
    except (KeyError, ValueError, TypeError):
        raise IntegrityError(f"{path}: signature document is malformed") from None
    if public_key_b64 is not None and embedded != base64.b64decode(public_key_b64):
        raise IntegrityError(
            f"{path}: signed by key {key_id(embedded)}, not by the pinned key "
            f"{key_id(base64.b64decode(public_key_b64))}; refused"
        )
    try:
        Ed25519PublicKey.from_public_bytes(embedded).verify(signature, canonical(payload))
    except (InvalidSignature, ValueError):
        raise IntegrityError(f"{path}: signature check failed (the signed record was altered); refused") from None
    if not isinstance(payload, dict) or payload.get("files") != payload_for(name, files)["files"]:
        raise IntegrityError(f"{path}: the signed file hashes do not match {files[0]['name']}; refused")
    return key_id(embedded)


def copy_document(source: Path, target: Path) -> None:
    """Copy a signature document beside a copied model file (read as a small regular file, written atomically)."""
    try:
        data = read_regular(Path(source), MAX_DOCUMENT_BYTES)
    except FileNotFoundError:
        return
    atomic_write_text(Path(target), data.decode("utf-8", errors="replace"))


def load_for_pin(path: Path) -> dict[str, Any]:
    """What the manifest pins for a document that `check` has accepted."""
    document = read_document(path)
    public = base64.b64decode(document["public_key"])
    return {"algorithm": "ed25519", "key_id": key_id(public), "public_key": document["public_key"],
            "document": Path(path).name}



def sign_payload(private_path: Path, payload: dict[str, Any]) -> dict[str, str]:
    """Sign any JSON payload (canonical form) with an Ed25519 private key: what a signed document carries beside
    the payload (e.g. an answer certificate, appliance.records.certificates)."""
    key = _load_private(private_path)
    public = _raw(key.public_key())
    return {"algorithm": "ed25519", "key_id": key_id(public), "public_key": _b64(public),
            "signature": _b64(key.sign(canonical(payload)))}


def verify_payload(public_key_b64: Any, signature_b64: Any, payload: Any, pinned: bytes | None = None) -> str:
    """Check a signature made by `sign_payload`; with `pinned` (a raw public key) it must be that key's. Returns the
    key id; any failure is an IntegrityError saying what did not match."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        embedded = base64.b64decode(public_key_b64, validate=True)
        signature = base64.b64decode(signature_b64, validate=True)
        public = Ed25519PublicKey.from_public_bytes(embedded)
    except (ValueError, TypeError):
        raise IntegrityError("the signature or its public key is malformed") from None
    if pinned is not None and embedded != pinned:
        raise IntegrityError(f"signed by key {key_id(embedded)}, not by the given key {key_id(pinned)}")
    try:
        public.verify(signature, canonical(payload))
    except (InvalidSignature, ValueError, TypeError, UnicodeEncodeError):
        raise IntegrityError("the signature does not match the signed contents (they were altered after signing)") \
            from None
    return key_id(embedded)
