"""Measuring work, not only crashes: a function's CPU time on an input and on the same input four times as long.

Linear work grows 4x; work growing with the square, 16x. `assert_linear` allows 8x (and a few ms for timer and
cache noise), so a quadratic shape fails and a linear one passes with room for a busy machine. CPU time of this
thread (time.thread_time), the least of three runs, garbage collection off: other processes on the machine
(the test suite shares two cores) do not count against the function measured.
"""

from __future__ import annotations

import gc
import time
from typing import Callable

GROWTH = 4
ALLOWED = 8.0
NOISE_S = 0.005


def cpu_seconds(function: Callable[[str], object], text: str, runs: int = 3) -> float:
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(runs):
            started = time.thread_time()
            function(text)
            best = min(best, time.thread_time() - started)
    finally:
        if enabled:
            gc.enable()
    return best


def repeated(unit: str, count: int, prefix: str = "", suffix: str = "") -> str:
    """`unit` `count` times between prefix and suffix; "{i}" in the unit becomes the repetition's number (distinct
    words, distinct attributes: shapes a plain repetition cannot make)."""
    if "{i}" in unit:
        body = "".join(unit.replace("{i}", str(i)) for i in range(count))
    else:
        body = unit * count
    return prefix + body + suffix


def assert_linear(function: Callable[[str], object], unit: str, prefix: str = "", suffix: str = "",
                  size: int = 20_000) -> tuple[float, float]:
    """Fails when `function`'s time on `unit` repeated to about 4 x `size` characters is more than ALLOWED times
    its time at `size`. Returns both times (seconds)."""
    count = max(1, size // max(1, len(repeated(unit, 1))))
    small = cpu_seconds(function, repeated(unit, count, prefix, suffix))
    large = cpu_seconds(function, repeated(unit, GROWTH * count, prefix, suffix))
    assert large <= ALLOWED * small + NOISE_S, (
        f"{large * 1000:.1f} ms for {GROWTH * count:,} repetitions of {unit[:60]!r} against {small * 1000:.1f} ms for "
        f"{count:,}: x{large / max(small, 1e-9):.1f}, more than linear")
    return small, large
