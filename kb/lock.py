"""One writer per library: a thread lock inside this process, a file lock (flock) across processes.

Re-entrant for the thread that holds it, so a step that needs the lock (rebuilding a damaged vector index) can run
inside one that already has it (an ingest). A second writer is refused with a clear message, or waits when asked.
"""

from __future__ import annotations

import fcntl
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kb.errors import KBError


class WriterLock:
    def __init__(self, path: Path):
        self.path = path
        self._thread = threading.RLock()
        self._depth = 0
        self._handle = None

    def _open(self):
        try:
            return open(self.path, "a+")
        except OSError as exc:
            raise KBError(f"cannot write to the knowledge base directory {self.path.parent} "
                          f"({exc.strerror or exc}); is it read-only?") from None

    def acquire(self, wait: bool) -> bool:
        if not self._thread.acquire(blocking=wait):
            return False
        if self._depth:
            self._depth += 1
            return True
        try:
            handle = self._open()
        except BaseException:
            self._thread.release()
            raise
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            self._thread.release()
            return False
        self._handle = handle
        self._depth = 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._handle is not None:
            self._handle.close()
            self._handle = None
        self._thread.release()

    @contextmanager
    def hold(self, wait: bool = False, busy: str = "") -> Iterator[None]:
        if not self.acquire(wait):
            raise KBError(busy or f"another program is changing the library at {self.path.parent}; wait for it "
                                  "to finish")
        try:
            yield
        finally:
            self.release()

    @contextmanager
    def try_hold(self) -> Iterator[bool]:
        """Hold the lock if it is free right now; yields whether it is held."""
        got = self.acquire(wait=False)
        try:
            yield got
        finally:
            if got:
                self.release()

