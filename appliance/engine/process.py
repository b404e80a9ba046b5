"""The engine process seen from the appliance: start it, talk to it, and turn its death into one clear error.

The child is a fresh interpreter (`python -m appliance.engine.child`, exec'd, never a fork of this process and
its threads) in its own session, so Ctrl+C in the terminal reaches only the appliance, which cancels through the
channel. Its stdout and stderr are llama.log. If it dies (a signal, the OOM killer) or stops answering for
`hang_timeout` seconds, the caller gets EngineCrashed naming the model, the signal and the log's last lines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

from appliance.engine import protocol
from appliance.errors import EngineCrashed, EngineError
from appliance.sanitize import clean_line

SIGNAL_MEANING = {
    "SIGSEGV": "segmentation fault in llama.cpp",
    "SIGILL": "an instruction this CPU does not have",
    "SIGBUS": "the model file could not be read (bus error: a drive removed or a file truncated while in use)",
    "SIGKILL": "killed from outside, most often by the kernel when memory runs out",
    "SIGABRT": "llama.cpp stopped itself on a failed check",
    "SIGFPE": "an arithmetic fault in llama.cpp",
}


def log_tail(path: Path, lines: int = 3, max_bytes: int = 16384) -> str:
    """The last few non-empty lines of a log, sanitized, joined into one line."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return clean_line(" | ".join(tail))[:400]


def _reap(proc: subprocess.Popen, channel: protocol.Channel, fd_socket: socket.socket) -> None:
    if proc.poll() is None:
        try:
            channel.send({"op": "quit"})
        except OSError:
            pass
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
    channel.close()
    fd_socket.close()


class EngineProcess:
    """One engine child. Not thread-safe except `cancel` (any thread); the Engine serializes requests."""

    def __init__(self, log_file: Path, *, lib_path: str | None = None, hang_timeout: float = 120.0,
                 label: str = "the model"):
        self.log_file = log_file
        self.hang_timeout = hang_timeout
        self.label = label
        self.lib_path = lib_path
        self.info: dict = {}
        self._ids = 0
        self._ids_lock = threading.Lock()
        self._dead: EngineCrashed | None = None
        log_file.parent.mkdir(parents=True, exist_ok=True)
        parent_end, child_end = socket.socketpair()
        self._fd_parent, fd_child = socket.socketpair()
        env = dict(os.environ)
        env.pop("LLAMA_CPP_LIB_PATH", None)
        if lib_path:
            env["LLAMA_CPP_LIB_PATH"] = lib_path
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_file, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "appliance.engine.child", str(child_end.fileno()), str(fd_child.fileno())],
                    pass_fds=(child_end.fileno(), fd_child.fileno()), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=log, start_new_session=True, env=env, close_fds=True,
                )
            finally:
                child_end.close()
                fd_child.close()
        self.channel = protocol.Channel(parent_end.detach())
        self.started = time.monotonic()
        # Whatever happens to this object (an exception, the interpreter exiting), the child does not outlive it.
        self._finalizer = weakref.finalize(self, _reap, self.proc, self.channel, self._fd_parent)

    # -- lifecycle -----------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._dead is None and self.proc.poll() is None

    def close(self) -> None:
        self._finalizer()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    # -- requests ------------------------------------------------------------------------------------------
    def new_id(self) -> int:
        with self._ids_lock:
            self._ids += 1
            return self._ids

    def send(self, op: str, stage: str, **fields) -> int:
        if self._dead is not None:
            raise self._dead
        rid = self.new_id()
        try:
            self.channel.send({"op": op, "id": rid, **fields})
        except OSError:
            raise self._died(stage) from None
        return rid

    def send_fds(self, fds: list[int], stage: str) -> None:
        try:
            protocol.send_fds(self._fd_parent, fds)
        except OSError:
            raise self._died(stage) from None

    def cancel(self, rid: int) -> None:
        try:
            self.channel.send({"op": "cancel", "id": rid})
        except OSError:
            pass

    def next_event(self, rid: int, stage: str, timeout: float | None = None) -> dict:
        """The next event for request `rid` (older requests' events are dropped). Raises EngineCrashed when the
        process dies, or when it is silent for `timeout` (default hang_timeout) seconds, after killing it."""
        limit = self.hang_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                self._dead = EngineCrashed(
                    f"the engine stopped responding for {limit:.0f} s while {stage} {self.label} and was stopped"
                    + self._log_hint(), signal_name="hang", stage=stage)
                raise self._dead
            try:
                event = self.channel.recv(timeout=min(remaining, 0.5))
            except (EOFError, OSError, ValueError):
                raise self._died(stage) from None
            if event is None:
                if self.proc.poll() is not None:
                    raise self._died(stage)
                continue
            if event.get("ev") == "ready":
                self.info = event
                continue
            if event.get("id") != rid:
                continue  # late events of a cancelled or abandoned request
            return event

    def request(self, op: str, stage: str, expect: str, on_event=None, timeout: float | None = None, **fields) -> dict:
        rid = self.send(op, stage, **fields)
        while True:
            event = self.next_event(rid, stage, timeout)
            kind = event.get("ev")
            if kind == expect:
                return event
            if kind == "error":
                raise EngineError(event.get("message", "the engine reported an error"), kind=event.get("kind", ""),
                                  details=event)
            if on_event:
                on_event(event)

    # -- death ---------------------------------------------------------------------------------------------
    def _log_hint(self) -> str:
        tail = log_tail(self.log_file)
        return f"; last lines of {self.log_file}: {tail}" if tail else f"; details in {self.log_file}"

    def _died(self, stage: str) -> EngineCrashed:
        if self._dead is not None:
            return self._dead
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            what = f"{name}: {SIGNAL_MEANING.get(name, 'killed by a signal')}"
        else:
            name = f"exit {code}"
            what = f"it exited with status {code}"
        self._dead = EngineCrashed(f"the engine crashed while {stage} {self.label} ({what})" + self._log_hint(),
                                   signal_name=name, stage=stage)
        return self._dead
