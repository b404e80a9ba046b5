"""Which devices may ask a served appliance: keys the owner issues, and one-time join links.

A key is 32 random bytes (`apl_` + URL-safe base64), shown once when it is made and stored only as its sha256 in
APPLIANCE_HOME/serve/devices.json. A presented key is hashed and compared with every stored hash in constant time
(hmac.compare_digest, no early exit), so the time taken says nothing about which key is close. The file is read
again when it changes, so `appliance serve keys revoke NAME` takes effect in a running server at its next request.

Several laptops serving one shelter (replicas behind a router) share a shelter secret (`appliance serve shelter
init` on one, `shelter export FILE` / `shelter join FILE` for the others, by USB stick). While a data dir holds it,
every key made there is signed (`aps_` + payload + HMAC-SHA256 over it with the secret): any replica knows the
device without a shared key list, so a phone that joined on one laptop is answered by all. A revocation is a
(name, time) entry in shelter.json: a signed key of that name issued before it is refused. The owner pushes the
revocations to the running replicas (`appliance serve keys revoke NAME --replica HOST:PORT ...`, POST
/shelter/revocations carrying an HMAC the secret makes; nothing without the secret is accepted).

A join token (the QR code's link) is kept in the server's memory only: one use, a few minutes; exchanging it makes
a device with a new key (set as an HttpOnly cookie), and the server shows the next link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import UsageError
from appliance.paths import atomic_write_text

KEY_PREFIX = "apl_"
SIGNED_PREFIX = "aps_"
JOIN_TTL_S = 600.0  # a join link works for ten minutes, once
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise UsageError(f"a device name is 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit; "
                         f"not {name!r}")
    return name


@dataclass(frozen=True)
class Device:
    name: str
    key_sha256: str
    created: float
    revoked: float | None = None
    via: str = "key"  # "key": issued by the owner; "join": joined by a link

    def as_dict(self) -> dict:
        return {"name": self.name, "key_sha256": self.key_sha256, "created": self.created, "revoked": self.revoked,
                "via": self.via}


def canonical(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Shelter:
    """shelter.json: the secret the shelter's laptops share, and its revocations; re-read when it changes."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._data: dict | None = None

    def _load(self) -> dict | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._data = None, None
            return None
        stamp = (stat.st_size, stat.st_mtime_ns)
        if stamp != self._seen:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                bytes.fromhex(data["secret"])
                data.setdefault("revoked", [])
            except (OSError, ValueError, KeyError, TypeError):
                data = {"secret": None, "revoked": [], "damaged": True}  # no key verifies: nobody gets in
            self._seen, self._data = stamp, data
        return self._data

    def _save(self, data: dict) -> None:
        atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")
        self.path.chmod(0o600)
        self._seen = None

    @property
    def active(self) -> bool:
        with self._lock:
            return self._load() is not None

    def info(self) -> dict | None:
        with self._lock:
            data = self._load()
        if data is None:
            return None
        secret = data.get("secret") or ""
        return {"id": hashlib.sha256(bytes.fromhex(secret)).hexdigest()[:12] if secret else None,
                "revoked": list(data.get("revoked", [])), "damaged": bool(data.get("damaged"))}

    def init(self) -> str:
        with self._lock:
            if self._load() is not None:
                raise UsageError(f"{self.path} exists already: this laptop is in a shelter")
            self._save({"secret": secrets.token_hex(32), "created": time.time(), "revoked": []})
        return self.info()["id"]  # type: ignore[index]

    def export(self) -> str:
        with self._lock:
            data = self._load()
        if data is None or not data.get("secret"):
            raise UsageError("this laptop has no shelter secret: `appliance serve shelter init` first")
        return json.dumps({"secret": data["secret"], "revoked": data.get("revoked", [])}, indent=2) + "\n"

    def join(self, text: str) -> str:
        try:
            given = json.loads(text)
            secret = bytes.fromhex(given["secret"]).hex()
            revoked = [{"name": str(r["name"]), "time": float(r["time"])} for r in given.get("revoked", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError("that is not a shelter file (made by `appliance serve shelter export`)") from None
        with self._lock:
            data = self._load()
            if data is not None and data.get("secret") and data["secret"] != secret:
                raise UsageError(f"this laptop is in another shelter already ({self.path}); move that file aside")
            merged = _merge(data.get("revoked", []) if data else [], revoked)
            self._save({"secret": secret, "created": time.time(), "revoked": merged})
        return self.info()["id"]  # type: ignore[index]

    def sign(self, name: str) -> str:
        with self._lock:
            data = self._load()
        assert data is not None and data.get("secret")
        # the issue time rounded down, never up: a revocation made a moment later is later than it
        issued = time.time_ns() // 1_000_000 / 1000
        payload = _b64(canonical({"d": name, "i": issued, "n": secrets.token_hex(8)}))
        mac = hmac.new(bytes.fromhex(data["secret"]), payload.encode(), hashlib.sha256).digest()
        return f"{SIGNED_PREFIX}{payload}.{_b64(mac)}"

    def verify(self, key: str) -> str | None:
        """The device a signed key names, if its HMAC is right and the name was not revoked after it was issued."""
        with self._lock:
            data = self._load()
        if data is None or not data.get("secret") or not key.startswith(SIGNED_PREFIX) or key.count(".") != 1:
            return None
        payload, _, mac = key[len(SIGNED_PREFIX):].partition(".")
        want = hmac.new(bytes.fromhex(data["secret"]), payload.encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(want, _unb64(mac)):
                return None
            claims = json.loads(_unb64(payload))
            name, issued = str(claims["d"]), float(claims["i"])
        except (ValueError, KeyError, TypeError):
            return None
        if any(r["name"] == name and r["time"] >= issued for r in data.get("revoked", [])):
            return None
        return name

    def revoke(self, name: str) -> None:
        with self._lock:
            data = self._load()
            assert data is not None
            self._save(data | {"revoked": _merge(data.get("revoked", []), [{"name": name, "time": time.time()}])})

    def signed_revocations(self) -> dict:
        """The revocations with an HMAC over them: what a replica accepts on POST /shelter/revocations."""
        with self._lock:
            data = self._load()
        assert data is not None and data.get("secret")
        revoked = data.get("revoked", [])
        mac = hmac.new(bytes.fromhex(data["secret"]), canonical(revoked), hashlib.sha256).hexdigest()
        return {"revoked": revoked, "mac": mac}

    def accept_revocations(self, body: dict) -> int:
        """Merge revocations sent by the owner's laptop, if the secret signed them; returns how many are known."""
        with self._lock:
            data = self._load()
            if data is None or not data.get("secret"):
                raise PermissionError("this replica is not in a shelter")
            revoked = body.get("revoked")
            mac = str(body.get("mac") or "")
            if not isinstance(revoked, list):
                raise PermissionError("no revocations")
            want = hmac.new(bytes.fromhex(data["secret"]), canonical(revoked), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(want.encode(), mac.encode()):
                raise PermissionError("the revocations are not signed by this shelter's secret")
            try:
                given = [{"name": str(r["name"]), "time": float(r["time"])} for r in revoked]
            except (KeyError, TypeError, ValueError):
                raise PermissionError("malformed revocations") from None
            merged = _merge(data.get("revoked", []), given)
            self._save(data | {"revoked": merged})
        return len(merged)


def _merge(old: list[dict], new: list[dict]) -> list[dict]:
    latest: dict[str, float] = {}
    for entry in old + new:
        latest[entry["name"]] = max(latest.get(entry["name"], 0.0), float(entry["time"]))
    return [{"name": name, "time": when} for name, when in sorted(latest.items())]


class DeviceKeys:
    """devices.json under one lock; re-read when its size or mtime changes (the CLI and a server share it). With a
    shelter secret beside it (shelter.json), new keys are signed and keys signed by any of the shelter's laptops
    are recognised."""

    def __init__(self, path: Path):
        self.path = path
        self.shelter = Shelter(path.parent / "shelter.json")
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._devices: list[Device] = []

    def _load(self) -> list[Device]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._devices = None, []
            return self._devices
        stamp = (stat.st_size, stat.st_mtime_ns)
        if stamp == self._seen:
            return self._devices
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            devices = [Device(str(d["name"]), str(d["key_sha256"]), float(d["created"]),
                              float(d["revoked"]) if d.get("revoked") is not None else None, str(d.get("via", "key")))
                       for d in data.get("devices", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            # a damaged file lets nobody in (never everybody); the owner is told by `serve keys list`
            devices = []
        self._seen, self._devices = stamp, devices
        return devices

    def _save(self, devices: list[Device]) -> None:
        atomic_write_text(self.path, json.dumps({"devices": [d.as_dict() for d in devices]}, indent=2) + "\n")
        self._seen = None

    def list(self) -> list[Device]:
        with self._lock:
            return list(self._load())

    def add(self, name: str, via: str = "key") -> str:
        """A new device's key (shown once; only its hash is kept)."""
        check_name(name)
        key = self.shelter.sign(name) if self.shelter.active else new_key()
        with self._lock:
            devices = self._load()
            if any(d.name == name and d.revoked is None for d in devices):
                raise UsageError(f"a device named {name!r} already has a key; revoke it first or pick another name")
            kept = [d for d in devices if d.name != name]
            self._save(kept + [Device(name, key_hash(key), time.time(), None, via)])
        return key

    def unused_name(self, stem: str = "device") -> str:
        if self.shelter.active:  # names must not collide with those another laptop of the shelter gives
            return f"{stem}-{secrets.token_hex(3)}"
        with self._lock:
            names = {d.name for d in self._load()}
        number = 1
        while f"{stem}-{number}" in names:
            number += 1
        return f"{stem}-{number}"

    def revoke(self, name: str) -> Device:
        shelter = self.shelter.active
        with self._lock:
            devices = self._load()
            found = [d for d in devices if d.name == name and d.revoked is None]
            if not found and shelter:  # a device that joined on another of the shelter's laptops
                check_name(name)
                self.shelter.revoke(name)
                return Device(name, "", 0.0, time.time(), "elsewhere")
            if not found:
                raise UsageError(f"no device {name!r} with a key in force; see `appliance serve keys list`")
            if shelter:
                self.shelter.revoke(name)
            changed = [Device(d.name, d.key_sha256, d.created, time.time(), d.via) if d in found else d
                       for d in devices]
            self._save(changed)
        return found[0]

    def who(self, key: str | None) -> str | None:
        """The name of the device this key belongs to (not revoked), or None."""
        if not key or len(key) > 400:
            return None
        if key.startswith(SIGNED_PREFIX):
            return self.shelter.verify(key)
        presented = key_hash(key).encode()
        match = None
        with self._lock:
            devices = self._load()
        for device in devices:  # every stored hash compared, no early exit
            same = hmac.compare_digest(presented, device.key_sha256.encode())
            if same and device.revoked is None:
                match = device.name
        return match


class JoinTokens:
    """One-time, short-lived join tokens, in memory only."""

    def __init__(self, ttl_s: float = JOIN_TTL_S):
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # sha256 of the token -> when it expires

    def issue(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: until for t, until in self._tokens.items() if until > now}
            self._tokens[key_hash(token)] = now + self.ttl_s
        return token

    def redeem(self, token: str | None) -> bool:
        """True once for a token issued and not yet expired; then never again."""
        if not token or len(token) > 100:
            return False
        digest = key_hash(token)
        with self._lock:
            until = self._tokens.pop(digest, None)
        return until is not None and until > time.monotonic()
