"""The user's files: which paths a request names, and opening them so that only regular files are ever read.

A FIFO named `x.txt` would block `open()` forever, a symlink to /dev/zero never ends, a symlink loop fails only
when followed. So every file is opened with O_NONBLOCK (opening a FIFO returns at once) and checked with fstat on
the open descriptor: anything that is not a regular file is refused with a one-line reason, and what is read is
exactly what was checked. A plain stat before the open keeps devices from being opened at all (opening some has
side effects, such as a tape rewinding).

File names are Python's own: a name that is not UTF-8 arrives with surrogate escapes (os.fsdecode) and is kept that
way inside kb, so it still opens. `shown()` is the form for people and JSON: undecodable bytes as `\\xNN`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence

from kb.errors import ReadError

# Characters the store uses to keep undecodable bytes in a name (see kb.store); a name that already holds them
# could not be told apart, so it is refused (no real file name is known to use them).
RESERVED = range(0x10DC80, 0x10DD00)


def shown(path: str | os.PathLike) -> str:
    """The path as text that can be printed and put in JSON: undecodable bytes become `\\xNN`."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def sha256(read: Callable[[int], bytes], progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """sha256 (hex) and size of what `read(n)` returns until it returns nothing: a file's `read`, or `os.read` on
    a descriptor, from where it stands. `progress(bytes so far)` after each MiB."""
    digest, size = hashlib.sha256(), 0
    while block := read(1 << 20):
        digest.update(block)
        size += len(block)
        if progress:
            progress(size)
    return digest.hexdigest(), size


def sha256_fd(fd: int) -> str:
    """sha256 of the whole file behind `fd`, read from its start (the descriptor's offset is left at its end)."""
    os.lseek(fd, 0, os.SEEK_SET)
    return sha256(lambda n: os.read(fd, n))[0]


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def not_regular(mode: int) -> str:
    return f"not a regular file: {_kind(mode)}; skipped"


def os_reason(exc: OSError, missing: str = "vanished before it could be read") -> str:
    """What the file system said about one path, as the line the summary shows."""
    code = exc.errno
    if code == errno.ENOENT:
        return missing
    if code == errno.ELOOP:
        return "a symlink loop (too many levels of symbolic links); not followed"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code == errno.ENAMETOOLONG:
        return "the name is too long"
    if code == errno.ENXIO:
        return "not a regular file: a socket, or a device with nothing behind it; skipped"
    if code == errno.EISDIR:
        return "not a regular file: a directory; skipped"
    if code == errno.ENOTDIR:
        return "a part of the path is not a directory"
    if code == errno.EIO:
        return "input/output error (a failing disk or an unplugged drive?)"
    return f"cannot be opened ({exc.strerror or type(exc).__name__})"


@contextmanager
def open_regular(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle on `path`, which must be a regular file (symlinks to one are fine). Raises ReadError."""
    try:
        before = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise ReadError("a broken symbolic link (its target is gone)") from None
        raise ReadError(os_reason(exc)) from None
    except ValueError:  # an embedded NUL
        raise ReadError("the name holds a NUL character") from None
    if not stat.S_ISREG(before.st_mode):
        raise ReadError(not_regular(before.st_mode))
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ReadError(os_reason(exc)) from None
    try:
        now = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise ReadError(os_reason(exc)) from None
    if not stat.S_ISREG(now.st_mode):  # swapped between the stat and the open
        os.close(fd)
        raise ReadError(not_regular(now.st_mode))
    with os.fdopen(fd, "rb") as handle:
        yield handle


def descriptor_path(handle: BinaryIO) -> str:
    """A path that opens the very file behind `handle` (for libraries that take only a path, such as libzim)."""
    proc = f"/proc/self/fd/{handle.fileno()}"
    if os.path.exists(proc):
        return proc
    return handle.name if isinstance(handle.name, str) else os.fsdecode(handle.name)


def expand(paths: Sequence[str | os.PathLike], supported, failed: list[tuple[str, str]]) -> tuple[list[Path], int]:
    """The files a request names: files as given, directories walked (hidden entries and symlinked directories
    inside them not followed). Problems go to `failed` as (shown path, reason). Returns (files, ignored), where
    `ignored` counts files of other formats met in directories; `supported(path)` says which formats are read."""
    files: list[Path] = []
    seen: set[str] = set()
    ignored = 0

    def take(path: Path) -> None:
        key = os.fspath(path)
        if key in seen:
            return
        seen.add(key)
        if any(ord(ch) in RESERVED for ch in key):
            failed.append((shown(key), "the name holds private-use characters (U+10DC80-U+10DCFF) the library "
                                       "cannot store; rename the file"))
            return
        files.append(path)

    for raw in paths:
        if not os.fspath(raw).strip():
            failed.append(("''", "an empty path names nothing"))
            continue
        path = Path(raw).expanduser().absolute()
        try:
            info = os.stat(path)
        except OSError as exc:
            missing = "no such file or directory"
            if exc.errno == errno.ENOENT and os.path.islink(path):
                missing = "a broken symbolic link (its target is gone)"
            failed.append((shown(path), os_reason(exc, missing)))
            continue
        except ValueError:
            failed.append((shown(path), "the name holds a NUL character"))
            continue
        if stat.S_ISREG(info.st_mode):
            take(path)
            continue
        if not stat.S_ISDIR(info.st_mode):
            failed.append((shown(path), not_regular(info.st_mode)))
            continue
        found = 0

        def walk_error(exc: OSError, path: Path = path) -> None:  # bound here: os.walk calls it in this turn
            failed.append((shown(exc.filename or path), os_reason(exc, "vanished while the folder was read")))

        for root, dirs, names in os.walk(path, onerror=walk_error, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                candidate = Path(root) / name
                if not supported(candidate):
                    ignored += 1
                    continue
                found += 1
                take(candidate)
        if not found:
            failed.append((shown(path), "no supported files (txt, md, html, pdf, epub, zim) in this directory"))
    return files, ignored
