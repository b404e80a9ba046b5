"""Run a real command with no network at all (`unshare -n`) under strace, and read every connect attempt."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import appliance_cmd, require_tool, run_appliance

INET_CONNECT = re.compile(r"(connect|sendto|sendmsg)\(\d+, \{sa_family=AF_INET6?[,}]")


@dataclass
class TracedRun:
    result: subprocess.CompletedProcess
    trace: str

    @property
    def inet_attempts(self) -> list[str]:
        return [line for line in self.trace.splitlines() if INET_CONNECT.search(line)]


def run_offline(*args: str, trace_file: Path, input: str | None = None, timeout: float = 600) -> TracedRun:
    unshare = require_tool("unshare")
    strace = require_tool("strace")
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise AssertionError(f"unshare -n does not work here: {probe.stderr.strip()}")
    prefix = [unshare, "-n", "--", strace, "-f", "-qq", "-e", "trace=execve,%network", "-o", str(trace_file), "--"]
    result = run_appliance(*args, input=input, timeout=timeout, prefix=prefix)
    return TracedRun(result, trace_file.read_text() if trace_file.exists() else "")


__all__ = ["run_offline", "appliance_cmd"]
