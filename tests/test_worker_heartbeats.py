"""A worker's heartbeat never waits for its state machine.

At a million tasks a worker holds half a million results; a heartbeat that counted the
executing tasks in the machine walked all of them once a second, under the lock the
stream thread holds while it applies a batch -- and beat seconds late on a loaded machine
(the scheduler removes a worker silent for 15 s).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from rdist.worker import heartbeats
from rdist.worker.memory import SpillBuffer


def _worker() -> SimpleNamespace:
    data = SpillBuffer()
    data.set("x-1", 1, 28)
    executor = SimpleNamespace(running={101: "inc-1", 102: "inc-2"})
    return SimpleNamespace(
        address="tcp://127.0.0.1:1",
        lock=threading.RLock(),
        executor=executor,
        data=data,
        executed=7,
    )


def test_a_heartbeat_is_measured_while_the_state_machine_is_busy() -> None:
    # given the state machine's lock held by another thread (a long batch)
    worker = _worker()
    held, release = threading.Event(), threading.Event()

    def busy() -> None:
        with worker.lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=busy, daemon=True)
    holder.start()
    assert held.wait(5)
    beats: list[heartbeats.Heartbeat] = []
    try:
        # when the heartbeat measures the worker
        measuring = threading.Thread(target=lambda: beats.append(heartbeats.metrics(worker)))
        measuring.start()
        measuring.join(2.0)
        # then it did not wait for the lock
        assert beats, "the heartbeat waited for the state machine's lock"
    finally:
        release.set()
        holder.join(5)
    beat = beats[0]
    assert beat.executing == 2  # the tasks on a thread now
    assert (beat.stored, beat.stored_bytes, beat.executed) == (1, 28, 7)
