"""The air gap while serving: bound first, locked second. From inside the serving process tree nothing can connect
out; strace of a whole serve session with a client answered shows no outbound AF_INET/AF_INET6 connect."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path

import openai
import pytest

from tests.airgap import INET_CONNECT
from tests.conftest import require_tool, run_appliance
from tests.serve.conftest import start_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_serving_process_tree_cannot_connect_out(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    out = tmp_path / "probe.json"
    served = start_server(tmp_path / "home", library=False, env={
        "APPLIANCE_SERVE_PLUGIN": "tests.serve.probe:connect", "PYTHONPATH": str(ROOT),
        "APPLIANCE_TEST_PROBE_PORT": str(listener.getsockname()[1]), "APPLIANCE_TEST_PROBE_OUT": str(out)})
    try:
        refused = f"PermissionError errno={errno.EPERM}"
        assert json.loads(out.read_text()) == {"server": refused, "child": refused}
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing reached the test's listener
        # and still it accepts: a client is answered
        ai = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.key("probe-client"), max_retries=0)
        assert ai.chat.completions.create(model="smollm2-135m-instruct", max_tokens=4,
                                          messages=[{"role": "user", "content": "hi"}]).choices
        doctor = run_appliance("doctor", "--json", env={"APPLIANCE_HOME": str(served.home)}, timeout=600)
        serving = [c for c in json.loads(doctor.stdout) if c["check"] == "serving"][0]
        assert serving["result"] == "ok" and "under the network lock" in serving["detail"]
        assert served.url in serving["detail"]
    finally:
        served.stop()
        listener.close()
    assert not (served.home / "serve" / "state.json").exists()


def test_strace_of_a_serve_session_shows_no_outbound_connect(tmp_path):
    strace = require_tool("strace")
    trace = tmp_path / "serve.trace"
    served = start_server(tmp_path / "home", prefix=[strace, "-f", "-qq", "-e", "trace=execve,%network", "-o",
                                                     str(trace), "--"])
    try:
        ai = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.key("traced"), max_retries=0, timeout=300)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in ai.chat.completions.create(
            model="smollm2-135m-instruct", max_tokens=16, stream=True,
            messages=[{"role": "user", "content": "How long do I boil water?"}]) if chunk.choices)
        assert streamed.strip()
    finally:
        assert served.stop() == 0
    text = trace.read_text()
    assert "accept4(" in text or "accept(" in text  # the trace saw the server at work
    assert "execve(" in text  # and the engine process it started
    assert [line for line in text.splitlines() if INET_CONNECT.search(line)] == []
