"""Streaming sha256 with progress; the one check every model file passes before llama.cpp reads it."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import IO, Any, Callable

from appliance.errors import ApplianceError, IntegrityError

Progress = Callable[[int, int], object]  # (bytes done, bytes total); what it returns is ignored
CHUNK = 4 * 1024 * 1024


def copy_hashed(read: Callable[[int], bytes], out: IO[bytes], digest: Any, done: int = 0, total: int = 0,
                progress: Progress | None = None, limit: int | None = None) -> int:
    """Copy what `read(n)` returns into `out`, each block into `digest` too, until it returns nothing or more
    than `limit` bytes would be copied (the caller's size check then fails); `progress(done, total)` after each
    block. Returns `done` plus the bytes copied (those past the limit counted, so a size check sees them)."""
    copied = 0
    while block := read(CHUNK):
        copied += len(block)
        if limit is not None and copied > limit:
            return done + copied
        out.write(block)
        digest.update(block)
        if progress:
            progress(done + copied, total)
    return done + copied


def open_regular(path: Path, *, missing_is_integrity: bool = True) -> int:
    """Open a file for reading, refusing anything that is not a regular file (a FIFO, a device, a directory).

    O_NONBLOCK keeps a FIFO from blocking the open; the check is made on the open descriptor (fstat), so what is
    checked is what is read. A missing file is an IntegrityError (a model file that vanished), or with
    `missing_is_integrity=False` a plain FileNotFoundError for callers that say it their own way.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if missing_is_integrity:
            raise IntegrityError(f"{path}: file is missing") from None
        raise
    except OSError as exc:
        raise ApplianceError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ApplianceError(f"{path}: not a regular file; only regular files are read")
    os.set_blocking(fd, True)
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    """The whole content of a small regular file (a record, a signature, a catalog), refusing anything that is not
    a regular file or is larger than `limit` bytes: a FIFO or a device named like a record never blocks a read.
    A missing file raises FileNotFoundError."""
    fd = open_regular(path, missing_is_integrity=False)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise ApplianceError(f"{path}: {size} bytes is more than the {limit} a file of this kind may have")
        chunks, done = [], 0
        while done <= limit:
            chunk = os.pread(fd, min(CHUNK, limit + 1 - done), done)
            if not chunk:
                break
            chunks.append(chunk)
            done += len(chunk)
        if done > limit:
            raise ApplianceError(f"{path}: more than the {limit} bytes a file of this kind may have")
        return b"".join(chunks)
    except OSError as exc:
        raise ApplianceError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def sha256_fd(fd: int, progress: Progress | None = None) -> str:
    """sha256 of an open file's whole content, read from its start."""
    total = os.fstat(fd).st_size
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    done = 0
    while True:
        count = os.preadv(fd, [buffer], done) if hasattr(os, "preadv") else _pread_into(fd, buffer, done)
        if not count:
            break
        digest.update(view[:count])
        done += count
        if progress:
            progress(done, total)
    return digest.hexdigest()


def _pread_into(fd: int, buffer: bytearray, offset: int) -> int:
    data = os.pread(fd, len(buffer), offset)
    buffer[: len(data)] = data
    return len(data)


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    fd = open_regular(path)
    try:
        return sha256_fd(fd, progress)
    finally:
        os.close(fd)


def check_fd(fd: int, path: Path, size: int, sha256: str, progress: Progress | None = None) -> str:
    """Raise IntegrityError naming the file and what differs, unless the open file's size and sha256 both match."""
    actual_size = os.fstat(fd).st_size
    if actual_size != size:
        raise IntegrityError(
            f"{path}: size differs from the manifest (expected {size} bytes, found {actual_size}); "
            "the file was modified or truncated and will not be loaded"
        )
    actual = sha256_fd(fd, progress)
    if actual != sha256:
        raise IntegrityError(
            f"{path}: sha256 differs from the manifest (expected {sha256}, found {actual}); "
            "the file was modified and will not be loaded"
        )
    return actual


def check_file(path: Path, size: int, sha256: str, progress: Progress | None = None) -> str:
    """check_fd on a path: raise IntegrityError unless size and sha256 both match."""
    path = Path(path)
    if not path.exists():
        raise IntegrityError(f"{path}: file is missing (registered size {size} bytes, sha256 {sha256[:16]}...)")
    fd = open_regular(path)
    try:
        return check_fd(fd, path, size, sha256, progress)
    finally:
        os.close(fd)
