"""One engine, a fair queue: one generation at a time, first come first served.

On two cores parallel generations only delay everyone's first answer, so a served appliance answers one question
at a time, in the order they came. The queue is bounded (past it: QueueFull, which the HTTP layer turns into 503
with Retry-After); a device has at most one question waiting or being answered (DeviceBusy). Each ticket carries
its events to the request that waits on it (thread-safe into that request's asyncio loop). Cancelling a waiting
ticket takes it out of the line; cancelling the running one stops its generation (the engine stops within a
token). The one worker thread never dies of a job's exception: the job's ticket gets an error event.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

DEFAULT_LIMIT = 16  # questions waiting, beyond the one being answered
DEFAULT_ANSWER_S = 15.0  # the guess for how long an answer takes, until some were timed


class QueueFull(Exception):
    def __init__(self, retry_after: int, waiting: int | None = None):
        why = f"the appliance has {waiting} questions waiting" if waiting is not None else "the appliance is stopping"
        super().__init__(f"{why}; try again in about {retry_after} s")
        self.retry_after = retry_after


class DeviceBusy(Exception):
    pass


@dataclass(eq=False)
class Ticket:
    """One question in the line. `job(ticket)` runs on the worker thread and reports through `emit`."""

    device: str
    job: Callable[["Ticket"], None]
    loop: asyncio.AbstractEventLoop | None = None
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    events: "asyncio.Queue[tuple[str, Any]] | None" = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    state: str = "new"  # new -> waiting -> running -> done
    on_cancel: Callable[[], None] | None = None  # set by the job while it runs (stops the generation)
    enqueued: float = 0.0

    def __post_init__(self) -> None:
        if self.loop is None:
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                self.loop = None
        if self.loop is not None and self.events is None:
            self.events = asyncio.Queue()
        self.sync_events: list[tuple[str, Any]] = []  # without a loop (tests, scripts): kept here

    def emit(self, kind: str, data: Any = None) -> None:
        if self.loop is None or self.events is None:
            self.sync_events.append((kind, data))
            return
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, data))
        except RuntimeError:  # the request's loop is gone (server stopping)
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()
        stop = self.on_cancel
        if stop is not None:
            stop()


class AnswerQueue:
    def __init__(self, limit: int = DEFAULT_LIMIT):
        self.limit = limit
        self._waiting: deque[Ticket] = deque()
        self._running: Ticket | None = None
        self._lock = threading.Condition()
        self._durations: deque[float] = deque(maxlen=10)
        self._closed = False
        self.answered = 0
        self._worker = threading.Thread(target=self._work, name="appliance-answers", daemon=True)
        self._worker.start()

    # what a request asks of the line
    def submit(self, ticket: Ticket) -> int:
        """Put the ticket in line; returns how many are ahead of it."""
        with self._lock:
            if self._closed:
                raise QueueFull(5)
            mine = [t for t in self._waiting if t.device == ticket.device]
            if mine or (self._running is not None and self._running.device == ticket.device):
                raise DeviceBusy(f"device {ticket.device!r} already has a question in line; wait for its answer "
                                 "or cancel it")
            if len(self._waiting) >= self.limit:
                raise QueueFull(self._eta_locked(len(self._waiting) + 1), len(self._waiting))
            ticket.state, ticket.enqueued = "waiting", time.monotonic()
            self._waiting.append(ticket)
            ahead = len(self._waiting) - 1 + (1 if self._running is not None else 0)
            self._lock.notify_all()
        ticket.emit("queued", {"ahead": ahead, "eta_s": self.eta(ahead)})
        return ahead

    def cancel(self, ticket: Ticket) -> None:
        """Out of the line if still waiting; stopped if running. Safe to call more than once."""
        with self._lock:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                ticket.state = "done"
                ticket.cancelled.set()
                self._tell_positions()
                return
        ticket.cancel()

    def length(self) -> int:
        with self._lock:
            return len(self._waiting) + (1 if self._running is not None else 0)

    def eta(self, ahead: int) -> int:
        with self._lock:
            return self._eta_locked(ahead)

    def _eta_locked(self, ahead: int) -> int:
        each = sum(self._durations) / len(self._durations) if self._durations else DEFAULT_ANSWER_S
        return max(1, round(each * ahead))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
            running = self._running
            self._lock.notify_all()
        for ticket in waiting:
            ticket.cancelled.set()
            ticket.emit("error", {"message": "the appliance is shutting down", "status": 503})
        if running is not None:
            running.cancel()

    # the worker
    def _tell_positions(self) -> None:
        for ahead, ticket in enumerate(self._waiting, start=1 if self._running is not None else 0):
            ticket.emit("queued", {"ahead": ahead, "eta_s": self._eta_locked(ahead)})

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                ticket = self._waiting.popleft()
                self._running = ticket
                ticket.state = "running"
                self._tell_positions()
            started = time.monotonic()
            try:
                if not ticket.cancelled.is_set():
                    ticket.job(ticket)
            except BaseException as exc:  # noqa: BLE001 - one job's failure is that request's error, not the server's
                ticket.emit("error", {"message": str(exc) or type(exc).__name__, "status": 500})
            finally:
                took = time.monotonic() - started
                with self._lock:
                    self._running = None
                    ticket.state = "done"
                    if not ticket.cancelled.is_set():
                        self._durations.append(took)
                        self.answered += 1
                    self._tell_positions()
                ticket.emit("end", None)
