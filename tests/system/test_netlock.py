"""The kernel network lock (appliance/system/netlock.py): AF_INET/AF_INET6 sockets refused with EPERM for the process,
its threads (TSYNC) and its children; AF_UNIX untouched; online commands never locked.

A seccomp filter cannot be removed, so nothing here installs it in the pytest process: every locked case runs in
a fresh subprocess, against a real listener on 127.0.0.1 that would accept the connection without the lock.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from appliance.system import netlock
from tests.conftest import LOCK_OFF, run_appliance
from tests.models.fixtures import make_gguf
from tests.models.hubserver import HubServer, HubState

PROBE = r"""
import asyncio, ctypes, errno, json, os, socket, subprocess, sys, threading
from appliance.system import netlock

port = int(sys.argv[1])
seen = {}
ready, go = threading.Event(), threading.Event()

def in_thread():  # started before the lock: TSYNC must cover it
    ready.set(); go.wait()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close(); seen["thread"] = "connected"
    except OSError as exc:
        seen["thread"] = errno.errorcode.get(exc.errno, str(exc))

worker = threading.Thread(target=in_thread); worker.start(); ready.wait()
state = netlock.apply_for(sys.argv[2] if len(sys.argv) > 2 else "ask")
seen["state"] = state.as_dict()
go.set(); worker.join()
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close(); seen["python"] = "connected"
except OSError as exc:
    seen["python"] = errno.errorcode.get(exc.errno, str(exc))
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
seen["c"] = "allowed" if fd >= 0 else errno.errorcode.get(ctypes.get_errno())
child = subprocess.run([sys.executable, "-c", "import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), "
                        "timeout=2).close(); print('connected')\nexcept OSError as e:\n    print(type(e).__name__, "
                        "e.errno)" % port], capture_output=True, text=True)
seen["child"] = child.stdout.strip()
a, b = socket.socketpair(); a.sendall(b"ping"); seen["socketpair"] = b.recv(4).decode()
path = os.path.join(sys.argv[3], "s.sock")
server = socket.socket(socket.AF_UNIX); server.bind(path); server.listen()
client = socket.socket(socket.AF_UNIX); client.connect(path); conn, _ = server.accept()
client.sendall(b"unix"); seen["unix"] = conn.recv(4).decode()
async def main():
    await asyncio.sleep(0)
    return "ran"
seen["asyncio"] = asyncio.run(main())
print(json.dumps(seen))
"""


@pytest.fixture
def listener():
    """A real TCP listener on 127.0.0.1 that counts the connections it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()


def _probe(port: int, tmp_path, command: str = "ask", env: dict | None = None) -> dict:
    full = {key: value for key, value in os.environ.items() if key != LOCK_OFF[0]}
    result = subprocess.run([sys.executable, "-c", PROBE, str(port), command, str(tmp_path)], capture_output=True,
                            text=True, timeout=60, env=full | (env or {}))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_locked_process_threads_c_and_children_are_refused_unix_sockets_work(listener, tmp_path):
    port, accepted = listener
    seen = _probe(port, tmp_path)
    assert seen["state"]["locked"] is True
    assert seen["python"] == "EPERM"  # Python's socket module: PermissionError
    assert seen["c"] == "EPERM"  # a C call (ctypes -> libc socket())
    assert seen["thread"] == "EPERM"  # a thread that existed before the lock (TSYNC)
    assert seen["child"] == f"PermissionError {1}"  # a child process inherits the filter across fork + exec
    assert (seen["socketpair"], seen["unix"], seen["asyncio"]) == ("ping", "unix", "ran")
    assert accepted == []  # the listener never saw a connection


def test_the_probe_connects_when_the_lock_is_off(listener, tmp_path):
    """The test above can fail: the same script, lock switched off, reaches the listener every way."""
    port, accepted = listener
    seen = _probe(port, tmp_path, env={"APPLIANCE_AIRGAP_LOCK": "off"})
    assert seen["state"] == {"locked": False, "reason": "switched off by APPLIANCE_AIRGAP_LOCK=off", "seconds": 0.0}
    assert (seen["python"], seen["c"], seen["thread"], seen["child"]) == ("connected", "allowed", "connected",
                                                                           "connected")
    assert len(accepted) == 3


def test_online_commands_are_not_locked(listener, tmp_path):
    port, accepted = listener
    seen = _probe(port, tmp_path, command="models download")
    assert seen["state"]["locked"] is False and "explicit online command" in seen["state"]["reason"]
    assert seen["python"] == "connected"


def test_which_commands_are_locked(monkeypatch):
    from appliance.cli.root import _command_path

    monkeypatch.delenv(netlock.LOCK_ENV, raising=False)
    assert _command_path(["-q", "models", "download", "acme/x", "x.gguf"]) == "models download"
    assert _command_path(["models", "install-pack", "--from", "dir"]) == "models install-pack"
    assert _command_path(["ask", "--model", "models", "download"]) == "ask models"  # a question, not the command
    assert _command_path([]) == ""  # the TUI
    assert netlock.wanted("models download") == (False, "`models download` is an explicit online command")
    assert netlock.wanted("") == (True, "") and netlock.wanted("ask") == (True, "")
    assert netlock.wanted("ask", config_lock=False) == (False, "switched off by [airgap] lock = false in config.toml")
    monkeypatch.setenv(netlock.LOCK_ENV, "on")
    assert netlock.wanted("ask", config_lock=False) == (True, "")  # the variable wins over the file
    monkeypatch.setenv(netlock.LOCK_ENV, "0")
    assert netlock.wanted("doctor")[0] is False


def test_the_pytest_process_is_never_locked():
    assert netlock.seccomp_mode() in ("off", "unknown")
    assert netlock.probe()[0] is False


def test_models_download_still_reaches_the_local_hub_with_the_lock_on(tmp_path, appliance_home):
    """The real command, lock on by default (run_appliance drops the test process's switch), downloads from the
    stand-in on 127.0.0.1; an ordinary command in the same environment cannot open an internet socket."""
    (tmp_path / "src").mkdir()
    content = make_gguf(tmp_path / "src" / "tiny.gguf", tensors=8, template=None).read_bytes()
    with HubServer(HubState("acme/tiny-GGUF", "tiny.gguf", content)) as server:
        env = {"HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "hf-home"), "NO_PROXY": "127.0.0.1"}
        result = run_appliance("models", "download", "acme/tiny-GGUF", "tiny.gguf", "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert (appliance_home / "models" / "tiny.gguf").read_bytes() == content
        assert server.state.file_requests()


def test_the_filter_keeps_the_owners_speculation_choice():
    """Kernels before 5.16 force the Speculative Store Bypass mitigation on seccomp'd processes (llama.cpp in the
    engine process would run slower); the filter asks the kernel not to (SECCOMP_FILTER_FLAG_SPEC_ALLOW)."""
    try:
        flt = netlock.build_filter()
    except netlock.Unavailable as exc:
        pytest.skip(str(exc))
    seccomp = netlock._seccomp()
    assert flt.get_attr(seccomp.Attr.CTL_SSB) == 1
    assert flt.get_attr(seccomp.Attr.CTL_TSYNC) == 1
