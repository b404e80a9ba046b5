"""Test-only: run inside `appliance serve` (APPLIANCE_SERVE_PLUGIN=tests.serve.probe:connect) after the network lock
and the model load. Tries to connect out from the server process itself, and from a child process it starts (as the
engine is started), to a listener the test opened; writes what happened to APPLIANCE_TEST_PROBE_OUT."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

CHILD = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).close()
    print("connected")
except OSError as exc:
    print(f"{type(exc).__name__} errno={exc.errno}")
"""


def connect() -> None:
    port = int(os.environ["APPLIANCE_TEST_PROBE_PORT"])
    result: dict[str, str] = {}
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        result["server"] = "connected"
    except OSError as exc:
        result["server"] = f"{type(exc).__name__} errno={exc.errno}"
    child = subprocess.run([sys.executable, "-c", CHILD, str(port)], capture_output=True, text=True, timeout=60)
    result["child"] = child.stdout.strip() or child.stderr.strip()[-200:]
    with open(os.environ["APPLIANCE_TEST_PROBE_OUT"], "w", encoding="utf-8") as handle:
        json.dump(result, handle)
