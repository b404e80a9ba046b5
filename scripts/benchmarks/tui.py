"""Terminal UI: launch to first paint and to ready-to-answer (model verified and loaded), real `appliance` in tmux.

The real installed command runs with no arguments in a detached tmux session (80x24, a private tmux server);
the screen is polled with capture-pane. "First paint" is the prompt on screen; "ready" is the status line
showing the loaded model's license badge and the knowledge base's size.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RUNS = 3
POLL_S = 0.01


def _launch(home: str, tmux: str) -> tuple[float, float]:
    socket = f"appliance-bench-{uuid.uuid4().hex[:8]}"
    appliance = Path(sys.executable).parent / "appliance"
    command = f"env APPLIANCE_HOME={home} TERM=xterm-256color {appliance}"

    def capture() -> str:
        return subprocess.run([tmux, "-L", socket, "capture-pane", "-p", "-t", "bench"], capture_output=True,
                              text=True).stdout

    started = time.perf_counter()
    subprocess.run([tmux, "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", "bench", "-x", "80", "-y",
                    "24", command], check=True)
    first_paint = ready = None
    try:
        deadline = started + 300
        while time.perf_counter() < deadline:
            screen = capture()
            now = time.perf_counter()
            if first_paint is None and "Ask a question" in screen:
                first_paint = now - started
            if first_paint is not None and "Apache-2.0" in screen and "KB " in screen and "KB –" not in screen:
                ready = now - started
                break
            time.sleep(POLL_S)
    finally:
        subprocess.run([tmux, "-L", socket, "kill-server"], capture_output=True)
    if first_paint is None or ready is None:
        raise SystemExit(f"the TUI did not become ready; last screen:\n{screen}")
    return first_paint, ready


def run() -> None:
    tmux = shutil.which("tmux")
    if not tmux:
        print("   skipped: tmux is not installed")
        return
    appliance = Path(sys.executable).parent / "appliance"
    with tempfile.TemporaryDirectory() as home:
        cold = _launch(home, tmux)  # a fresh data dir: registers (hashes) the bundled model first
        subprocess.run([str(appliance), "models", "list"], env=dict(os.environ, APPLIANCE_HOME=home), check=True,
                       capture_output=True)
        warm = [_launch(home, tmux) for _ in range(RUNS)]
    print(f"   runs: {RUNS} (plus one on a fresh data dir), 80x24, cores: {os.cpu_count()}")
    print(f"   launch to first paint: {statistics.median(p for p, _ in warm):.2f} s (median)")
    print(f"   launch to ready-to-answer: {statistics.median(r for _, r in warm):.2f} s (median; model verified by "
          "sha256 and loaded, knowledge base opened)")
    print(f"   fresh data dir: first paint {cold[0]:.2f} s, ready {cold[1]:.2f} s (includes registering the model)")
