"""The model file's pages this process holds mapped but no longer reads, given back while the model loads.

Runs inside the engine process. llama.cpp maps the model file whole and populates the mapping (MAP_POPULATE), so
every page of it counts in the process's RSS from the start, also pages it never reads: the source of every weight
it copies into a repacked layout at load, and the rows of the token-embedding table no prompt looks up. For
Qwen2.5-Coder-0.5B that is about 110 of its 469 MiB (28 MiB of repacked weights; an 89 MiB embedding table of which a
prompt reads a few rows). `release()` tells the kernel this process does not need
the mapping's pages (madvise MADV_DONTNEED): the mapping stays, the file's bytes stay in the page cache, and a page
llama.cpp reads again comes back from the cache on first touch, the same bytes. Only page-table entries go, so it is
safe on the read-only shared mapping llama.cpp makes; what is never touched again stops counting against this
process and is the first thing the kernel reclaims when memory runs short.

Linux only (/proc/self/maps); anywhere else, or if anything fails, it does nothing: only memory is at stake.
"""

from __future__ import annotations

import ctypes
import os

MADV_DONTNEED = 4


class MappedPages:
    def __init__(self, fds: list[int]):
        """`fds`: the descriptors of the model file(s), read while they are still open."""
        self.files: set[tuple[str, str] | str] = set()
        for fd in fds:
            try:
                info = os.fstat(fd)
                self.files.add((f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}", str(info.st_ino)))
                self.files.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        self._madvise = None

    def ranges(self) -> list[tuple[int, int]]:
        """Start and end addresses of this process's mappings of the files, by device and inode or by path."""
        found = []
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    fields = line.rstrip("\n").split(maxsplit=5)
                    if len(fields) < 5:
                        continue
                    path = fields[5] if len(fields) == 6 else ""
                    if (fields[3], fields[4]) in self.files or path in self.files:
                        start, end = (int(part, 16) for part in fields[0].split("-"))
                        found.append((start, end))
        except (OSError, ValueError):
            return []
        return found

    def release(self) -> int:
        """Give back the pages of the files' mappings; returns the bytes of mapping advised (0 if none or on
        failure). The ranges are looked up each time: llama.cpp unmaps parts of a mapping it does not use."""
        if not self.files:
            return 0
        if self._madvise is None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                self._madvise = libc.madvise
                self._madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                self._madvise.restype = ctypes.c_int
            except (OSError, AttributeError):
                self.files = set()
                return 0
        done = 0
        for start, end in self.ranges():
            if self._madvise(start, end - start, MADV_DONTNEED) == 0:
                done += end - start
        return done
