"""The engine gives back the model file's pages it holds mapped but does not read (appliance/engine/mapped_pages.py):
on a real mapping, and in the real engine process with a real model."""

from __future__ import annotations

import mmap
import os

from appliance.engine.mapped_pages import MappedPages
from appliance.services import Services

MESSAGES = [{"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": "What is the boiling point of water at sea level?"}]


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


def test_release_drops_the_pages_and_the_bytes_read_back_the_same(tmp_path):
    path = tmp_path / "weights.bin"
    data = os.urandom(8 << 20)
    path.write_bytes(data)
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)  # shared and read-only, as llama.cpp maps it
        pages = MappedPages([handle.fileno()])
    inode = path.stat().st_ino
    assert mapping[:] == data  # every page touched
    assert resident_kib(os.getpid(), inode)[0] >= 8 << 10
    assert pages.release() >= len(data)
    assert resident_kib(os.getpid(), inode)[0] < 256  # gone from this process, the mapping still there
    assert mapping[:] == data  # read again, from the page cache: the same bytes
    mapping.close()
    assert pages.release() == 0  # nothing mapped any more: nothing to do, no error


def test_release_without_a_usable_descriptor_does_nothing():
    assert MappedPages([987654]).release() == 0


def test_the_engine_holds_only_the_model_pages_it_reads():
    """llama.cpp maps the model whole and populates the mapping; right after loading, the engine process holds
    almost none of it, and it still answers the same, greedy, as the pages come back from the page cache."""
    services = Services.create()
    loaded = services.engine.load()
    inode = os.stat(loaded.files.paths[0]).st_ino
    rss, size = resident_kib(loaded.process.proc.pid, inode)
    assert size > 50_000 and rss < size // 10
    first = loaded.generate(MESSAGES, 16, temperature=0.0)
    assert "".join(first.tokens()).strip()
    assert resident_kib(loaded.process.proc.pid, inode)[0] > rss  # what the answer read came back
    services.engine.unload()
    again = services.engine.load().generate(MESSAGES, 16, temperature=0.0)
    assert "".join(again.tokens()) == first.text
    services.engine.unload()
