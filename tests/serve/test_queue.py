"""The fair queue (appliance.serve.queue): one answer at a time, first come first served, bounded, one per device."""

from __future__ import annotations

import threading

import pytest

from appliance.serve.queue import AnswerQueue, DeviceBusy, QueueFull, Ticket


def wait_end(ticket: Ticket, seconds: float = 10) -> None:
    ended = threading.Event()
    while not any(kind == "end" for kind, _ in ticket.sync_events):
        assert not ended.wait(0.01) and seconds > 0
        seconds -= 0.01


def test_first_come_first_served_and_positions_said():
    queue = AnswerQueue(limit=4)
    gate, order = threading.Event(), []

    def job(name):
        def run(ticket):
            gate.wait(10)
            order.append(name)
        return run

    tickets = [Ticket(f"device-{n}", job(n)) for n in range(4)]
    ahead = [queue.submit(t) for t in tickets]
    assert ahead == [0, 1, 2, 3]  # running or not, the first is ahead of the second
    gate.set()
    for ticket in tickets:
        wait_end(ticket)
    assert order == [0, 1, 2, 3]
    last = [data for kind, data in tickets[3].sync_events if kind == "queued"]
    assert last[0]["ahead"] == 3 and [d["ahead"] for d in last] == sorted((d["ahead"] for d in last), reverse=True)
    assert queue.answered == 4
    queue.close()


def test_bounded_one_per_device_and_cancel():
    queue = AnswerQueue(limit=2)
    gate, ran, stopped = threading.Event(), [], threading.Event()

    def running(ticket):
        ticket.on_cancel = stopped.set
        gate.wait(10)

    first = Ticket("a", running)
    queue.submit(first)
    while first.state != "running":
        threading.Event().wait(0.01)
    with pytest.raises(DeviceBusy):
        queue.submit(Ticket("a", lambda t: None))
    waiting = [Ticket(name, lambda t, name=name: ran.append(name)) for name in ("b", "c")]
    for ticket in waiting:
        queue.submit(ticket)
    with pytest.raises(QueueFull) as full:
        queue.submit(Ticket("d", lambda t: None))
    assert full.value.retry_after >= 1 and "has 2 questions waiting" in str(full.value)  # this line's own bound
    queue.cancel(waiting[0])  # out of line before it ran
    queue.cancel(first)  # the running one is told to stop
    assert stopped.is_set()
    gate.set()
    wait_end(waiting[1])
    assert ran == ["c"] and queue.length() == 0
    queue.close()


def test_a_failing_job_is_its_own_error_and_the_worker_goes_on():
    queue = AnswerQueue()

    def broken(ticket):
        raise RuntimeError("boom")

    bad, good = Ticket("x", broken), Ticket("y", lambda t: t.emit("done", {"ok": True}))
    queue.submit(bad)
    queue.submit(good)
    wait_end(good)
    assert ("error", {"message": "boom", "status": 500}) in bad.sync_events
    assert ("done", {"ok": True}) in good.sync_events
    queue.close()
