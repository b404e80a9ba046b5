"""Room on the disk: how much a batch will write, how much is free, and what a failed write looks like.

The costs are measured (scripts/bench kb prints them for the current build): per passage about 1 KB in SQLite
besides its text (fp16 vector, row, FTS postings) and about 3.5 KB in chroma (its write-ahead log keeps the float32
vector, the HNSW index another copy with its links); the text itself about 1.6 times (row + FTS index). Before a
batch the text is estimated from file sizes by format; before each file is written its exact passage count is
known and checked again, so a batch whose estimate was short still stops cleanly before the disk fills.
A reserve is always kept free (SQLite's write-ahead log, chroma's index rewrites, and the rest of the system).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from kb.errors import DiskFull

MB = 1_000_000
SQLITE_PER_CHUNK = 1_100
CHROMA_PER_CHUNK = 3_600
TEXT_FACTOR = 1.6
CHUNK_TEXT = 500  # bytes of text per passage, on the low side (more passages -> a safer estimate)
# Share of a file's size that becomes text, by format (markup, compression and images make the difference).
TEXT_SHARE = {"txt": 1.0, "md": 1.0, "html": 0.5, "epub": 1.5, "pdf": 0.25, "zim": 1.0}
RESERVE_MIN = 16 * MB
RESERVE_MAX = 256 * MB
RESERVE_SHARE = 0.01


@dataclass
class Space:
    free: int
    total: int
    mount: str

    @property
    def reserve(self) -> int:
        return int(min(RESERVE_MAX, max(RESERVE_MIN, self.total * RESERVE_SHARE)))

    @property
    def usable(self) -> int:
        return max(0, self.free - self.reserve)


def mount_point(path: Path) -> str:
    """The mount point of the file system holding `path` (walk up while the device stays the same)."""
    path = Path(os.path.abspath(path))
    try:
        device = os.stat(path).st_dev
    except OSError:
        return str(path)
    while path.parent != path:
        try:
            if os.stat(path.parent).st_dev != device:
                break
        except OSError:
            break
        path = path.parent
    return str(path)


def space(directory: Path) -> Space:
    info = os.statvfs(directory)
    return Space(free=info.f_bavail * info.f_frsize, total=info.f_blocks * info.f_frsize,
                 mount=mount_point(directory))


def size_text(count: int) -> str:
    if count < MB:
        return f"{max(1, round(count / 1000))} kB"
    return f"{count / MB:.1f} MB" if count < 10 * MB else f"{count / MB:.0f} MB"


def write_cost(chunks: int, text_bytes: int) -> int:
    """Bytes written for `chunks` passages holding `text_bytes` of text (SQLite and chroma together)."""
    return int(chunks * (SQLITE_PER_CHUNK + CHROMA_PER_CHUNK) + text_bytes * TEXT_FACTOR)


def rebuild_cost(chunks: int) -> int:
    """Bytes a fresh vector index for `chunks` passages takes (the old one is removed only afterwards)."""
    return chunks * CHROMA_PER_CHUNK


def file_cost(kind: str, size: int) -> int:
    text = int(size * TEXT_SHARE.get(kind, 1.0))
    return write_cost(max(1, text // CHUNK_TEXT), text)


def ensure(directory: Path, needed: int, what: str, advice: str = "; free some space and try again") -> Space:
    """Raise DiskFull unless `needed` bytes fit on the disk holding `directory` with the reserve kept."""
    room = space(directory)
    if needed > room.usable:
        raise DiskFull(f"{what} needs about {size_text(needed)}, {size_text(room.free)} free on {room.mount} "
                       f"(keeping {size_text(room.reserve)} in reserve){advice}")
    return room


def is_full(exc: BaseException, directory: Path | None = None) -> bool:
    """Did this write fail for lack of room? errno, SQLite's and chroma's words, or (chroma often says only that
    'compaction failed') a file system that has no room left beyond the reserve."""
    if isinstance(exc, DiskFull):
        return True
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    if any(words in text for words in ("disk is full", "no space left", "quota exceeded", "disk quota")):
        return True
    if directory is not None:
        try:
            room = space(directory)
        except OSError:
            return False
        return room.free < room.reserve
    return False
