"""Zero network at run time, proven from outside Python: no AF_INET/AF_INET6 connect attempt at all."""

from __future__ import annotations

import json

import pytest

from tests.airgap import run_offline


@pytest.mark.slow
def test_ask_json_offline_makes_no_inet_connection(tmp_path):
    traced = run_offline("ask", "--json", "--max-tokens", "16", "How do I purify water?", trace_file=tmp_path / "trace")
    assert traced.result.returncode == 0, traced.result.stderr
    assert json.loads(traced.result.stdout)["answer"].strip()
    assert "execve(" in traced.trace, "strace recorded nothing; the trace is not working"
    assert traced.inet_attempts == []


def test_the_tracer_sees_a_connect_attempt(tmp_path):
    """The check above is only worth something if it can fail: a deliberate connect shows up in the trace."""
    import subprocess
    import sys

    from tests.conftest import require_tool

    trace = tmp_path / "trace"
    code = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=0.1)\n"
            "except OSError:\n    pass\n")
    subprocess.run([require_tool("unshare"), "-n", "--", require_tool("strace"), "-f", "-qq", "-e",
                    "trace=connect,sendto,sendmsg", "-o", str(trace), "--", sys.executable, "-c", code], check=True)
    from tests.airgap import INET_CONNECT

    assert any(INET_CONNECT.search(line) for line in trace.read_text().splitlines())
