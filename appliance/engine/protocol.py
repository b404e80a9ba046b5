"""The wire between the appliance and its engine process: length-prefixed JSON frames over a Unix socket.

Requests (parent -> child): load, generate, count, unload, cancel, quit; each carries an `id`.
Events (child -> parent): ready, progress, alive, loaded, token, done, counted, unloaded, error; each carries the `id`
of the request it answers. Model file descriptors travel on a second socket with SCM_RIGHTS.
"""

from __future__ import annotations

import array
import json
import select
import socket
import struct
import threading
from typing import overload

MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct("!I")


class Channel:
    """One end of a bidirectional socket. `send` may be called from any thread; `recv` from one thread only."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)
        self._send_lock = threading.Lock()
        self._buffer = bytearray()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with self._send_lock:
            self.sock.sendall(_HEADER.pack(len(data)) + data)

    def _frame(self) -> dict | None:
        if len(self._buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buffer)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes exceeds the limit")
        end = _HEADER.size + size
        if len(self._buffer) < end:
            return None
        data = bytes(self._buffer[_HEADER.size:end])
        del self._buffer[:end]
        return json.loads(data)

    @overload
    def recv(self) -> dict: ...
    @overload
    def recv(self, timeout: float | None) -> dict | None: ...

    def recv(self, timeout: float | None = None) -> dict | None:
        """The next message; None when `timeout` seconds pass first. EOFError when the other end is gone."""
        while True:
            message = self._frame()
            if message is not None:
                return message
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    return None
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("the other end closed the channel")
            self._buffer += chunk

    def close(self) -> None:
        self.sock.close()


def send_fds(sock: socket.socket, fds: list[int]) -> None:
    sock.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def recv_fds(sock: socket.socket, count: int) -> list[int]:
    _, fds, _, _ = socket.recv_fds(sock, 1, count)
    if len(fds) != count:
        for fd in fds:
            socket.close(fd)
        raise RuntimeError(f"expected {count} model file descriptors, received {len(fds)}")
    return list(fds)
