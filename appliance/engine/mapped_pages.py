"""Parts of the model file that llama.cpp maps but reads only a little of, given back while the model loads.

Runs inside the engine process. llama.cpp maps the model file whole and populates the mapping (MAP_POPULATE), so
every page of it counts in the process's RSS from the start. In a model with an output layer of its own, the
token-embedding table is read only by row lookups, a few rows per prompt: Qwen2.5-Coder-0.5B's is 89 of its 469 MiB.
(A tied table, SmolLM2's or Gemma 3's, is the output layer too and read whole for every token: the client names no
range for it.) `release()` tells the kernel this process does not need those pages (madvise MADV_DONTNEED): the
mapping stays, the file's bytes stay in the page cache, and a row llama.cpp looks up comes back from the cache on
first touch, the same bytes. Only page-table entries go, so it is safe on the read-only shared mapping llama.cpp
makes.

A row comes back with its whole page-cache folio. Read from disk at load (a cold cache: after a boot, a fresh
install), the file sits in the cache as 2 MiB folios, and Linux 6.18 maps a faulted folio whole: one short answer
brought 14-17 MiB of the table back, a grounded one (407 tokens) about 45. So the engine process calls `release()`
again after each answer (0.3-0.7 ms for the table; its rows fault back in 0.1 ms): between answers it holds none of
the table, and a long conversation never brings the table back.

Only the named ranges, never the whole file: a weight page dropped and read back costs a fault in the first prompt
(measured: giving back the whole file cost Gemma 3 270M 3% of its prompt rate).

Linux only (/proc/self/maps); anywhere else, or if anything fails, it does nothing: only memory is at stake.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from typing import Callable

MADV_DONTNEED = 4


class MappedPages:
    def __init__(self, fd: int, ranges: list[tuple[int, int]]):
        """`fd`: the model file's descriptor, read while it is still open; `ranges`: [start, end) byte offsets in
        that file whose pages this process need not keep."""
        self.ranges = [(int(start), int(end)) for start, end in ranges if int(end) > int(start) >= 0]
        self.files: set[tuple[str, str] | str] = set()
        if self.ranges:
            try:
                info = os.fstat(fd)
                self.files.add((f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}", str(info.st_ino)))
                self.files.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        self._madvise: Callable[[int, int, int], int] | None = None

    def mappings(self) -> list[tuple[int, int, int]]:
        """(start address, end address, file offset) of this process's mappings of the file, by device and inode
        or by path, read afresh: llama.cpp unmaps the parts of a mapping it does not use."""
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
                        found.append((start, end, int(fields[2], 16)))
        except (OSError, ValueError):
            return []
        return found

    def release(self) -> int:
        """Give back the whole pages inside the ranges, wherever the file is mapped; returns the bytes advised."""
        if not self.files:
            return 0
        if self._madvise is None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                madvise = libc.madvise
                madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                madvise.restype = ctypes.c_int
                self._madvise = madvise
            except (OSError, AttributeError):
                self.files = set()
                return 0
        page = mmap.PAGESIZE
        done = 0
        for address, end, offset in self.mappings():
            for first, last in self.ranges:
                lo = max(first, offset) - offset + address
                hi = min(last, offset + end - address) - offset + address
                lo, hi = (lo + page - 1) // page * page, hi // page * page  # whole pages inside the range only
                if hi > lo and self._madvise(lo, hi - lo, MADV_DONTNEED) == 0:
                    done += hi - lo
        return done
