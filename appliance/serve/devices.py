"""Which devices may ask a served appliance: keys the owner issues, and one-time join links.

A key is 32 random bytes (`apl_` + URL-safe base64), shown once when it is made and stored only as its sha256 in
APPLIANCE_HOME/serve/devices.json. A presented key is hashed and compared with every stored hash in constant time
(hmac.compare_digest, no early exit), so the time taken says nothing about which key is close. The file is read
again when it changes, so `appliance serve keys revoke NAME` takes effect in a running server at its next request.

A join token (the QR code's link) is kept in the server's memory only: one use, a few minutes; exchanging it makes
a device with a new key (set as an HttpOnly cookie), and the server shows the next link.
"""

from __future__ import annotations

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


class DeviceKeys:
    """devices.json under one lock; re-read when its size or mtime changes (the CLI and a server share it)."""

    def __init__(self, path: Path):
        self.path = path
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
        key = new_key()
        with self._lock:
            devices = self._load()
            if any(d.name == name and d.revoked is None for d in devices):
                raise UsageError(f"a device named {name!r} already has a key; revoke it first or pick another name")
            kept = [d for d in devices if d.name != name]
            self._save(kept + [Device(name, key_hash(key), time.time(), None, via)])
        return key

    def unused_name(self, stem: str = "device") -> str:
        with self._lock:
            names = {d.name for d in self._load()}
        number = 1
        while f"{stem}-{number}" in names:
            number += 1
        return f"{stem}-{number}"

    def revoke(self, name: str) -> Device:
        with self._lock:
            devices = self._load()
            found = [d for d in devices if d.name == name and d.revoked is None]
            if not found:
                raise UsageError(f"no device {name!r} with a key in force; see `appliance serve keys list`")
            changed = [Device(d.name, d.key_sha256, d.created, time.time(), d.via) if d in found else d
                       for d in devices]
            self._save(changed)
        return found[0]

    def who(self, key: str | None) -> str | None:
        """The name of the device this key belongs to (not revoked), or None."""
        if not key or len(key) > 200:
            return None
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
