"""A real `appliance serve` for the shelter-mode tests: the installed command in a subprocess, on loopback, under
the network lock, answering with SmolLM2 from a small library of its own (one text file, ingested for real)."""

from __future__ import annotations

import functools
import json
import os
import selectors
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from appliance.serve.devices import DeviceKeys
from tests.conftest import appliance_cmd

WATER = """Making water safe

Bring clear water to a rolling boil for one minute to kill germs. At altitudes above 2,000 metres, boil it for
three minutes. Let it cool naturally, and store it in clean containers with tight covers.

If you cannot boil water, add household bleach: 2 drops of unscented bleach per litre of clear water, stir, and wait
30 minutes before drinking.
"""


class web:
    """httpx's one-shot calls with a timeout a loaded CI machine does not trip (the tests check behaviour, not
    speed; httpx's default is 5 s)."""

    get = staticmethod(functools.partial(httpx.get, timeout=60))
    post = staticmethod(functools.partial(httpx.post, timeout=60))
    request = staticmethod(functools.partial(httpx.request, timeout=60))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    empty = home.parent / "no-packs"
    empty.mkdir(parents=True, exist_ok=True)
    power = home.parent / "no-power-supply"
    power.mkdir(parents=True, exist_ok=True)
    env.update(APPLIANCE_HOME=str(home), APPLIANCE_PACKS_DIR=str(empty), APPLIANCE_KB_FIELD_GUIDE="off",
               APPLIANCE_POWER_SUPPLY_DIR=str(power), NO_COLOR="1", **extra)
    return env


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    home: Path
    url: str
    port: int
    join: str  # the first join link the server printed
    output: list[str] = field(default_factory=list)

    def key(self, name: str) -> str:
        return DeviceKeys(self.home / "serve" / "devices.json").add(name)

    pending: bytes = b""

    def read_more(self, seconds: float = 0.5) -> list[str]:
        """Lines the server printed so far (reading for at most `seconds`)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        end = time.monotonic() + seconds
        while time.monotonic() < end and selector.select(max(0.0, end - time.monotonic())):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.pending += chunk
            *lines, self.pending = self.pending.split(b"\n")
            self.output += [line.decode("utf-8", "replace") for line in lines]
        selector.close()
        return self.output

    def stop(self) -> int:
        """SIGTERM to the server itself (under strace, the traced process, not strace), then wait."""
        if self.process.poll() is None:
            try:
                pid = int(json.loads((self.home / "serve" / "state.json").read_text())["pid"])
            except (OSError, ValueError, KeyError):
                pid = self.process.pid
            os.kill(pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_server(home: Path, *args: str, prefix: list[str] | None = None, env: dict[str, str] | None = None,
                 library: bool = True) -> Served:
    home.mkdir(parents=True, exist_ok=True)
    run_env = serve_env(home, **(env or {}))
    if library and not (home / "kb" / "text.sqlite").exists():
        doc = home.parent / "water.txt"
        doc.write_text(WATER)
        added = subprocess.run(appliance_cmd() + ["kb", "add", str(doc)], env=run_env, capture_output=True,
                               text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert added.returncode == 0, added.stderr
    port = free_port()
    process = subprocess.Popen((prefix or []) + appliance_cmd() + ["serve", "--port", str(port), "--no-qr", *args],
                               env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    served = Served(process, home, "", port, "")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not served.join:
        if process.poll() is not None:
            served.read_more(1)
            pytest.fail("appliance serve ended: " + "\n".join(served.output[-20:]))
        for line in served.read_more(1):
            if line.startswith("serving ") and not served.url:
                served.url = line.split(" at ", 1)[1].split()[0]
            if "/join?t=" in line and not served.join:
                served.join = line.strip()
    if not served.join:
        served.stop()
        pytest.fail("appliance serve did not start in time: " + "\n".join(served.output[-20:]))
    return served


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    served = start_server(tmp_path_factory.mktemp("serve") / "home", "--queue", "8")
    yield served
    served.stop()
