"""Default model: load seconds, time to first token, tokens per second, peak RSS of `appliance ask`."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = 5
QUESTION = "Explain in a few sentences how to purify water with household bleach."


def run() -> None:
    import resource

    with tempfile.TemporaryDirectory() as home:
        appliance = Path(sys.executable).parent / "appliance"
        env = dict(os.environ, APPLIANCE_HOME=home)
        # First use of a fresh data dir registers (hashes) the default pack; keep that out of the figures.
        subprocess.run([str(appliance), "models", "list"], env=env, check=True, capture_output=True)
        timings, peaks = [], []
        for _ in range(RUNS):
            proc = subprocess.Popen([str(appliance), "ask", "--json", "--no-history", "--max-tokens", "128", QUESTION],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            out = proc.stdout.read()
            err = proc.stderr.read()
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"appliance ask failed: {err.decode()}")
            timings.append(json.loads(out)["timings"])
            peaks.append(usage.ru_maxrss / 1024)
    med = lambda key: statistics.median(t[key] for t in timings)  # noqa: E731
    print(f"   runs: {RUNS}, max tokens 128, threads: {os.cpu_count()}")
    print(f"   verify (sha256 + header, before every load): {med('verify_s'):.3f} s")
    print(f"   load: {med('load_s'):.3f} s (median)")
    print(f"   first token: {med('first_token_s'):.3f} s")
    print(f"   tokens generated: {med('tokens'):.0f}, rate {med('tokens_per_s'):.1f} tokens/s")
    print(f"   peak RSS of the whole process: {max(peaks):.0f} MiB")
