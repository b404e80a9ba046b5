"""The kernel network lock (appliance/system/netlock.py): sockets of every family but AF_UNIX refused with EPERM,
through every entry point of the machine (Python, libc, raw 64-bit syscalls with any argument bits, x32, i386
`int 0x80` and socketcall), for the process, its threads (TSYNC) and its children; online commands never locked.

A seccomp filter cannot be removed, so nothing here installs it in the pytest process: every locked case runs in
a fresh subprocess, against a real listener on 127.0.0.1 that would accept the connection without the lock.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from appliance.system import netlock
from tests.conftest import LOCK_OFF, run_appliance
from tests.models.fixtures import make_gguf
from tests.models.hubserver import HubServer, HubState
from tests.system import socket_calls

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
# glibc asks AF_NETLINK for the interfaces' addresses (AI_ADDRCONFIG); refused, it still resolves from /etc/hosts
seen["resolve"] = socket.getaddrinfo("localhost", 80, flags=socket.AI_ADDRCONFIG)[0][4][0]
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
    assert seen["resolve"] in ("127.0.0.1", "::1")
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
    # kb download is the other explicit online command; from a folder it needs no network, so it stays locked
    assert netlock.ONLINE_COMMANDS == {"models download", "models install-pack", "kb download"}
    assert _command_path(["kb", "download", "zimgit-water_en"]) == "kb download"
    assert netlock.wanted("kb download") == (False, "`kb download` is an explicit online command")
    assert _command_path(["kb", "download", "--from", "/media/usb", "zimgit-water_en"]) == "kb download --from"
    assert netlock.wanted(_command_path(["kb", "download", "--from=/media/usb", "x"])) == (True, "")
    for command in (["kb", "search", "x"], ["kb", "catalog"], ["kb", "verify"], ["kb", "show", "x"]):
        assert netlock.wanted(_command_path(command)) == (True, ""), command
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


# Every family (0-63) x type, three ways on the 64-bit ABI (Python, raw syscall, raw syscall with bit 32 of the family
# set: the kernel truncates it to an int), socketpair, x32, and the i386 ABI both ways. Prints {call: fate}.
EVERY_ENTRY_POINT = r"""
import json, sys
from appliance.system import netlock
if sys.argv[1] == "lock":
    netlock.install()
fates = {}
for family in FAMILIES:
    for name, kind in TYPES.items():
        fates[f"python {family} {name}"] = python(family, kind)
        fates[f"raw {family} {name}"] = raw(family, kind)
        fates[f"raw-high-bits {family} {name}"] = raw(family | 1 << 32, kind)
        fates[f"pair {family} {name}"] = raw_pair(family, kind)
print(json.dumps(fates), flush=True)
for family, kind in ((1, 1), (16, 3), (2, 1), (17, 3)):
    print(json.dumps({f"x32 {family} {kind}": raw(family, kind, SYS_SOCKET | X32_BIT)}), flush=True)
for via in ("socket", "socketcall"):
    for family, kind in ((1, 1), (16, 3), (2, 1), (17, 3)):
        print(json.dumps({f"i386-{via} {family} {kind}": i386(family, kind, via)}), flush=True)
"""


def _entry_points(mode: str) -> tuple[dict, int]:
    """The fates of every call in a child (`lock`: under the lock, `off`: without it) and the child's exit code. An
    i386 call on a kernel without IA32 emulation kills the child; the lines before it are kept."""
    code = Path(socket_calls.__file__).read_text() + EVERY_ENTRY_POINT
    env = {key: value for key, value in os.environ.items() if key != LOCK_OFF[0]}
    result = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=120, env=env)
    fates = {}
    for line in result.stdout.splitlines():
        fates.update(json.loads(line))
    return fates, result.returncode


def test_only_af_unix_sockets_are_created_under_the_lock_through_every_entry_point():
    """Fails on the denylist: AF_PACKET, AF_NETLINK, AF_VSOCK, AF_XDP were created, and syscall(socket, 2**32 +
    AF_INET) made an AF_INET socket (the filter compared the high half, the kernel drops it)."""
    free, free_code = _entry_points("off")
    locked, locked_code = _entry_points("lock")
    created_free = {call for call, fate in free.items() if fate == "created"}
    # The test means something only if, without the lock, this kernel creates sockets of other families.
    assert {"raw 16 raw", "raw 2 stream", "raw-high-bits 2 stream"} <= created_free, sorted(created_free)
    wrong = {}
    for call, fate in locked.items():
        way, family, _ = call.split()
        expected = free[call] if way in ("python", "raw", "pair") and family == "1" else "EPERM"  # AF_UNIX: as if
        if fate != expected:  # unlocked; every other family, with any bits, through any ABI: refused by the filter
            wrong[call] = fate
    assert not wrong, sorted(wrong.items(), key=lambda item: item[1] != "created")  # sockets made, first
    assert locked_code == 0, "the locked child died (a foreign-ABI call must be refused, not kill it)"
    assert {f"i386-{via} {f} {k}" for via in ("socket", "socketcall") for f, k in ((1, 1), (16, 3), (2, 1), (17, 3))
            } <= set(locked)  # the i386 calls ran, and the process went on after each
    if free_code == 0:  # IA32 emulation on (this machine): the same calls create sockets without the lock
        assert free["i386-socket 16 3"] == free["i386-socketcall 16 3"] == "created"
    else:  # no IA32 emulation: int 0x80 itself faults, so there is no door to shut
        assert free_code in (-signal.SIGSEGV, -signal.SIGILL, -signal.SIGBUS), free_code


def test_libseccomp_kills_the_calling_thread_on_a_foreign_abi_by_default():
    """Why the lock sets the bad-architecture action: left at libseccomp's default (KILL, the calling thread only),
    an i386 call ends that thread with SIGSYS; in a process with other threads they would carry on waiting for it.
    Under the lock the same call gets EPERM and the program continues (the test above)."""
    calls = Path(socket_calls.__file__).read_text()
    control = subprocess.run([sys.executable, "-c", calls + "\nprint(i386(1, 1), flush=True)\n"],
                             capture_output=True, text=True, timeout=60)
    code = calls + """
import pyseccomp
pyseccomp.SyscallFilter(pyseccomp.ALLOW).load()  # nothing refused at all: only the foreign-ABI default acts
print(i386(1, 1), flush=True)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if control.returncode == 0:  # the kernel has the i386 entry point (IA32 emulation): the call made a socket
        assert control.stdout.strip() == "created"
        assert result.returncode == -signal.SIGSYS and result.stdout == "", (result.returncode, result.stdout)
    else:  # no IA32 emulation: int 0x80 faults before any filter sees it; no socket either way
        assert result.returncode == control.returncode < 0 and result.stdout == ""
    try:
        flt = netlock.build_filter()
    except netlock.Unavailable as exc:
        pytest.fail(str(exc))
    seccomp = netlock._seccomp()
    assert flt.get_attr(seccomp.Attr.ACT_BADARCH) == seccomp.ERRNO(errno.EPERM)


SERVER = r"""
import errno, socket, sys
from appliance.system import netlock
server = socket.create_server(("127.0.0.1", 0))  # bound and listening first ...
print(server.getsockname()[1], flush=True)
state = netlock.apply_for("serve")  # ... then locked
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(); refused = "created"
except OSError as exc:
    refused = errno.errorcode.get(exc.errno)
conn, _ = server.accept()
data = conn.recv(5)
conn.sendall(data.upper() + b" " + refused.encode() + b" " + str(state.locked).encode())
conn.close()
"""


def test_a_server_bound_before_the_lock_still_accepts_after_it():
    env = {key: value for key, value in os.environ.items() if key != LOCK_OFF[0]}
    child = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"hello")
            client.settimeout(10)
            reply = b""
            while chunk := client.recv(64):
                reply += chunk
        assert reply == b"HELLO EPERM True"  # accepted and served; a new AF_INET socket refused in the same process
        assert child.wait(timeout=30) == 0, child.stderr.read()
    finally:
        child.kill()
        child.wait()


DOCTOR_LOCKED = r"""
import json
from appliance.system import netlock
from appliance.doctor import airgap
netlock.apply_for("doctor")
check = airgap.lock_check()
print(json.dumps({"status": check.status, "detail": check.detail}))
"""


def test_doctor_names_the_allowed_families_and_probes_forbidden_ones_besides_af_inet():
    env = {key: value for key, value in os.environ.items() if key != LOCK_OFF[0]}
    result = subprocess.run([sys.executable, "-c", DOCTOR_LOCKED], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    check = json.loads(result.stdout)
    assert check["status"] == "ok", check
    assert "sockets allowed for AF_UNIX only" in check["detail"] and "i386 and x32" in check["detail"]
    for refused in ("socket(AF_INET) from Python: EPERM", "socket(AF_INET6) from C: EPERM",
                    "syscall(socket, AF_NETLINK): EPERM", "syscall(socket, AF_PACKET): EPERM"):
        assert refused in check["detail"]
