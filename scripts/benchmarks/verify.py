"""Verify throughput: the library's streaming sha256 (what runs before every load) in MB/s against `sha256sum`.

Both hash the same file from the page cache (one warm-up read first), alternating, several rounds; the figures are
medians. The goal is at least 0.9 of sha256sum's speed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

SIZE_MB = int(os.environ.get("BENCH_VERIFY_MB", "512"))
ROUNDS = 5


def _file(directory: Path) -> Path:
    path = directory / "bench.bin"
    block = os.urandom(1 << 20)
    with path.open("wb") as handle:
        for _ in range(SIZE_MB):
            handle.write(block)
    return path


def run() -> None:
    from appliance.models.verify import check_file, sha256_file

    sha256sum = shutil.which("sha256sum")
    if not sha256sum:
        raise SystemExit("sha256sum is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        path = _file(Path(tmp))
        size = path.stat().st_size
        expected = sha256_file(path)  # warm-up: the file is in the page cache for both
        ours, theirs = [], []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            check_file(path, size, expected)
            ours.append(size / 1e6 / (time.perf_counter() - started))
            started = time.perf_counter()
            out = subprocess.run([sha256sum, str(path)], check=True, capture_output=True, text=True).stdout
            theirs.append(size / 1e6 / (time.perf_counter() - started))
            assert out.split()[0] == expected
    ours_mb, theirs_mb = statistics.median(ours), statistics.median(theirs)
    print(f"   file: {SIZE_MB} MiB from the page cache, {ROUNDS} rounds, medians")
    print(f"   appliance verify (sha256, size check): {ours_mb:8.1f} MB/s")
    print(f"   sha256sum:                             {theirs_mb:8.1f} MB/s")
    print(f"   ratio: {ours_mb / theirs_mb:.2f} (goal >= 0.90)")
