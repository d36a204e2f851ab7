"""Answers the client awaits on its own stream, by request id.

A request (``client.run``, ``client.story``, a ``barrier``, a ``gather-keys`` copy) goes out
with a fresh id; its answers come back on the client's stream, where the listener hands
each one here by that id. The asking thread waits for as many as it expects, up to a
deadline: an answer that never comes is the asker's to report, never a reason to hang.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

#: While waiting for one answer, how often to check that whoever should answer still exists.
ALIVE_CHECK_SECONDS = 2.0


class _Waiter:
    __slots__ = ("expected", "answers", "complete")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.answers: list[Any] = []
        self.complete = threading.Event()


class Answers:
    """Request ids the client waits on, and what has come back for each."""

    def __init__(self) -> None:
        self._waiting: dict[str, _Waiter] = {}
        self._lock = threading.Lock()

    def expect(self, expected: int = 1, request_id: str | None = None) -> str:
        """Start waiting for ``expected`` answers to a new request; returns its id."""
        request_id = request_id or uuid.uuid4().hex
        with self._lock:
            self._waiting[request_id] = _Waiter(expected)
        return request_id

    def resolve(self, request_id: str, answer: Any) -> bool:
        """One answer arrived; False when nobody waits for it (late, or not ours)."""
        with self._lock:
            waiter = self._waiting.get(request_id)
            if waiter is None:
                return False
            waiter.answers.append(answer)
            if len(waiter.answers) >= waiter.expected:
                waiter.complete.set()
        return True

    def collect(self, request_id: str, timeout: float) -> list[Any]:
        """Every answer that arrived within ``timeout`` (all expected, or fewer); the
        request is forgotten afterwards, so later answers are dropped."""
        with self._lock:
            waiter = self._waiting[request_id]
        try:
            waiter.complete.wait(timeout)
            with self._lock:
                return list(waiter.answers)
        finally:
            self.forget(request_id)

    def one(self, request_id: str, timeout: float, alive: Callable[[], bool] | None = None) -> Any:
        """The single answer to a request: TimeoutError when none came within ``timeout``,
        ConnectionError as soon as ``alive()`` says the one asked is gone."""
        with self._lock:
            waiter = self._waiting[request_id]
        deadline = time.monotonic() + timeout
        try:
            while not waiter.complete.wait(
                min(ALIVE_CHECK_SECONDS, max(0.0, deadline - time.monotonic()))
            ):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no answer to request {request_id} within {timeout} s")
                if alive is not None and not alive():
                    raise ConnectionError("the one asked left before answering")
            return waiter.answers[0]
        finally:
            self.forget(request_id)

    def first(self, request_id: str, timeout: float) -> Any:
        """The first answer to a request once one arrived, waiting up to ``timeout`` for it
        (None: none yet, or nobody waits for it); the request stays awaited."""
        with self._lock:
            waiter = self._waiting.get(request_id)
        if waiter is None or not waiter.complete.wait(timeout):
            return None
        return waiter.answers[0]

    def arrived(self, request_id: str) -> list[Any]:
        """The answers to a request that arrived so far (the request stays awaited)."""
        with self._lock:
            waiter = self._waiting.get(request_id)
            return list(waiter.answers) if waiter is not None else []

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)
