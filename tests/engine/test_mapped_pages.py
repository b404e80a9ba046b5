"""The engine does not keep the pages of a model's embedding table, which it only looks up
(appliance/engine/mapped_pages.py): on a real mapping, and in the real engine process with real models."""

from __future__ import annotations

import mmap
import os

import pytest

from appliance.engine.mapped_pages import MappedPages
from appliance.services import Services

MESSAGES = [{"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": "What is the boiling point of water at sea level?"}]
MiB = 1 << 20


def resident_kib(pid: int, inode: int) -> tuple[int, int]:
    """(Rss, Size) in KiB summed over `pid`'s mappings of the file with this inode, from /proc/PID/smaps."""
    rss = size = 0
    current = False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                current = fields[4] == str(inode)
            elif current and fields[0] == "Rss:":
                rss += int(fields[1])
            elif current and fields[0] == "Size:":
                size += int(fields[1])
    return rss, size


def test_release_drops_only_the_ranges_pages_and_the_bytes_read_back_the_same(tmp_path):
    path = tmp_path / "weights.bin"
    data = os.urandom(16 * MiB)
    path.write_bytes(data)
    inode = path.stat().st_ino
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)  # shared and read-only, as llama.cpp maps it
        pages = MappedPages(handle.fileno(), [(4 * MiB + 100, 12 * MiB + 100)])  # not page-aligned on purpose
    assert mapping[:] == data  # every page touched
    assert resident_kib(os.getpid(), inode)[0] >= 16 * 1024 - 64
    assert pages.release() == 8 * MiB - mmap.PAGESIZE  # whole pages inside the range only
    # The rest of the file stays resident (smaps may count a partly mapped large folio a few pages off).
    assert abs(resident_kib(os.getpid(), inode)[0] - (8 * 1024 + 4)) <= 64
    assert mapping[:] == data  # read again, from the page cache: the same bytes
    mapping.close()
    assert pages.release() == 0  # nothing mapped any more: nothing to do, no error


def test_release_without_a_usable_descriptor_or_ranges_does_nothing(tmp_path):
    assert MappedPages(987654, [(0, MiB)]).release() == 0
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x" * MiB)
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
        assert MappedPages(handle.fileno(), []).release() == 0
        mapping.close()


@pytest.mark.slow
def test_a_tied_embedding_table_is_kept_whole():
    """SmolLM2's table is its output layer too, read whole for every token: nothing of the file is given back."""
    services = Services.create()
    loaded = services.engine.load()
    assert loaded.lookup_ranges == []
    answer = loaded.generate(MESSAGES, 8, temperature=0.0)
    assert "".join(answer.tokens()).strip()
    rss, size = resident_kib(loaded.process.proc.pid, os.stat(loaded.files.paths[0]).st_ino)
    assert rss > size * 0.9
    services.engine.unload()
