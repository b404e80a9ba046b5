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


def test_tls_with_a_certificate_made_here_and_its_fingerprint_shown(tmp_path):
    import hashlib
    import ssl

    served = start_server(tmp_path / "home", "--tls", library=False)
    try:
        assert served.url.startswith("https://127.0.0.1:")
        shown = [line.strip() for line in served.output if line.count(":") == 31]
        assert len(shown) == 1
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-made: checked by fingerprint
        with socket.create_connection(("127.0.0.1", served.port)) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
        digest = hashlib.sha256(der).hexdigest().upper()
        assert shown[0] == ":".join(digest[i:i + 2] for i in range(0, 64, 2))
        assert reply.startswith(b"HTTP/1.1 200") and b'"ready":true' in reply
        cookie_key = served.key("tls-phone")
        import httpx

        with httpx.Client(verify=False) as client:
            joined = client.get(served.join, follow_redirects=False)
            assert "secure" in joined.headers["set-cookie"].lower()
            assert client.get(f"{served.url}/api/me", headers={"Authorization": f"Bearer {cookie_key}"}).json()[
                "device"] == "tls-phone"
    finally:
        served.stop()
    assert sorted(p.name for p in (served.home / "serve" / "tls").iterdir()) == ["cert-127.0.0.1.pem",
                                                                                "key-127.0.0.1.pem"]
    assert oct((served.home / "serve" / "tls" / "key-127.0.0.1.pem").stat().st_mode & 0o777) == "0o600"
