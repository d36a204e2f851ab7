"""Shared tools of the fakeredis-tier client tests.

Workers run as threads of the test process, so tasks can reach module-level state: a
task blocks on a :class:`Gates` token until the test opens it, and :func:`count_call`
records how often a task really ran.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

_CALLS: Counter[str] = Counter()
_CALLS_LOCK = threading.Lock()
_GATES: dict[str, threading.Event] = {}

#: How long a task waits on a gate before giving up (a test bug, not a slow machine).
GATE_TIMEOUT = 10.0


def token() -> str:
    """A fresh name, so tests sharing module-level state never see each other's counts."""
    return uuid.uuid4().hex


def count_call(name: str) -> None:
    with _CALLS_LOCK:
        _CALLS[name] += 1


def calls(name: str) -> int:
    with _CALLS_LOCK:
        return _CALLS[name]


def wait_gate(name: str) -> None:
    """Called inside a task: block until the test opens gate ``name``."""
    if not _GATES[name].wait(GATE_TIMEOUT):
        raise TimeoutError(f"gate {name} was never opened")


class Gates:
    """Gates that tasks wait on; the fixture opens them all so no worker stays stuck."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def new(self) -> str:
        name = token()
        _GATES[name] = threading.Event()
        self.names.append(name)
        return name

    def open(self, name: str) -> None:
        _GATES[name].set()

    def open_all(self) -> None:
        for name in self.names:
            _GATES.pop(name).set()
        self.names.clear()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` (tests only: production code never polls) until true or fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {what or predicate}")
        time.sleep(0.01)


def stand_in_scheduler(store: Any) -> None:
    """Hold the cluster's leader lease as a scheduler would (without expiry), so that a
    ``Client()`` on a Redis with no scheduler process -- a test that plays the
    scheduler's part itself -- gets past its start-up check."""
    store.redis.set(store.keys.lease, "test:0:stand-in")
