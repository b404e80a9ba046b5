"""Streaming sha256 with progress; the one check every model file passes before llama.cpp reads it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from appliance.errors import ApplianceError, IntegrityError

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
CHUNK = 4 * 1024 * 1024


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    path = Path(path)
    try:
        total = path.stat().st_size
        handle = path.open("rb", buffering=0)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: file is missing") from None
    except OSError as exc:
        raise ApplianceError(f"{path}: cannot be read ({exc.strerror})") from None
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    done = 0
    with handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            done += count
            if progress:
                progress(done, total)
    return digest.hexdigest()


def check_file(path: Path, size: int, sha256: str, progress: Progress | None = None) -> str:
    """Raise IntegrityError naming the file and what differs, unless size and sha256 both match."""
    path = Path(path)
    if not path.exists():
        raise IntegrityError(f"{path}: file is missing (registered size {size} bytes, sha256 {sha256[:16]}...)")
    actual_size = path.stat().st_size
    if actual_size != size:
        raise IntegrityError(
            f"{path}: size differs from the manifest (expected {size} bytes, found {actual_size}); "
            "the file was modified or truncated and will not be loaded"
        )
    actual = sha256_file(path, progress)
    if actual != sha256:
        raise IntegrityError(
            f"{path}: sha256 differs from the manifest (expected {sha256}, found {actual}); "
            "the file was modified and will not be loaded"
        )
    return actual
