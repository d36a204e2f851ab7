"""``Event``, ``Variable`` and ``Queue`` (as dask.distributed's), kept in Redis.

Values are msgpack data or futures -- anywhere inside lists and dicts too -- and a
future stored in a queue or variable keeps its key alive until it is taken out, replaced
or deleted, whichever client made it and whoever reads it (see
:mod:`rdist.client.holders`). Waiting never polls: ``Event.wait``, ``Variable.get`` and
``Queue.get`` block on Redis (a notification stream, or BLPOP) and wake within
milliseconds of the change they wait for.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from rdist.client.holders import load, release_stored, store_data
from rdist.primitives.base import Primitive
from rdist.store.primitives import Wait
from rdist.timeouts import seconds

#: a blocking wait is cut into slices this long at most (a closed client ends it sooner)
WAIT_SLICE = 5.0


def _deadline(timeout: float | None) -> float:
    return math.inf if timeout is None else time.monotonic() + timeout


def _timed_out(timeout: Any, what: str) -> TimeoutError:
    return TimeoutError(f"{what} after {timeout} s")


class Event(Primitive):
    """A cluster-wide flag: ``set``, ``clear``, ``is_set``, ``wait(timeout)``."""

    def __init__(self, name: str | None = None, client: Any = None) -> None:
        super().__init__(name or f"event-{uuid.uuid4().hex}", client)

    def __reduce__(self) -> Any:
        return (Event, (self.name,))

    def set(self) -> None:
        self._primitives.set_value("event", self.name, b"1")

    def clear(self) -> None:
        self._primitives.delete_value("event", self.name)

    def is_set(self) -> bool:
        return not isinstance(self._primitives.get_value("event", self.name), Wait)

    def wait(self, timeout: Any = None) -> bool:
        """Block until the event is set or ``timeout`` (seconds, or text like ``"1s"``)
        passes; True when it is set."""
        deadline = _deadline(seconds(timeout))
        changes = self._primitives.value_changes("event", self.name)
        while True:
            got = self._primitives.get_value("event", self.name)
            if not isinstance(got, Wait):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._primitives.wait_after(changes, got.after, min(remaining, WAIT_SLICE))

    def __repr__(self) -> str:
        return f"<Event: {self.name}>"


class Variable(Primitive):
    """One cluster-wide value: ``set``, ``get(timeout)`` (waits until it is set), ``delete``.

    A future set here stays computed until the variable is set to something else or
    deleted; every ``get`` gives the reading client a future of its own."""

    def __init__(self, name: str | None = None, client: Any = None) -> None:
        super().__init__(name or f"variable-{uuid.uuid4().hex}", client)

    def __reduce__(self) -> Any:
        return (Variable, (self.name,))

    def set(self, value: Any, timeout: Any = None) -> None:
        stored = store_data(value, "variable", self.name, "a Variable")
        release_stored(self._holdings, self._primitives.set_value("var", self.name, stored))

    def get(self, timeout: Any = None) -> Any:
        """The value, waiting up to ``timeout`` for one to be set (TimeoutError)."""
        deadline = _deadline(seconds(timeout))
        changes = self._primitives.value_changes("var", self.name)
        while True:
            got = self._primitives.get_value("var", self.name)
            if not isinstance(got, Wait):
                return load(self._holdings, got, take=False)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timed_out(timeout, f"Variable {self.name!r} was not set")
            self._primitives.wait_after(changes, got.after, min(remaining, WAIT_SLICE))

    def delete(self) -> None:
        release_stored(self._holdings, self._primitives.delete_value("var", self.name))

    def __repr__(self) -> str:
        return f"<Variable: {self.name}>"


class Queue(Primitive):
    """A cluster-wide FIFO queue: ``put``, ``get(timeout, batch)``, ``qsize``.

    A future put here stays computed until a ``get`` takes it out (the getter's future
    then holds it)."""

    def __init__(self, name: str | None = None, client: Any = None, maxsize: int = 0) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"maxsize must be a non-negative integer, not {maxsize!r}")
        super().__init__(name or f"queue-{uuid.uuid4().hex}", client)
        self.maxsize = self._primitives.queue_limit(self.name, maxsize)

    def __reduce__(self) -> Any:
        return (Queue, (self.name, None, self.maxsize))

    def put(self, value: Any, timeout: Any = None) -> None:
        """Append ``value``; on a full queue wait up to ``timeout`` for room."""
        deadline = _deadline(seconds(timeout))
        item = store_data(value, "queue", self.name, "a Queue")
        space = self._primitives.queue_space(self.name)
        while True:
            full = self._primitives.put(self.name, item, self.maxsize)
            if full is None:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                release_stored(self._holdings, item)  # never stored: nothing holds it
                raise _timed_out(timeout, f"Queue {self.name!r} stayed full")
            self._primitives.wait_after(space, full.after, min(remaining, WAIT_SLICE))

    def get(self, timeout: Any = None, batch: bool | int = False) -> Any:
        """The oldest value, waiting up to ``timeout``; ``batch=True``: every value queued
        now (maybe none); ``batch=n``: a list of ``n`` values, waiting for all of them (on
        a timeout the ones taken go back to the head of the queue, nothing is lost)."""
        if batch is True:
            return self._loaded(self._primitives.take(self.name, 0))
        if batch is not False and (not isinstance(batch, int) or batch < 0):
            raise ValueError(f"batch must be True, False or a non-negative integer, not {batch!r}")
        limit = seconds(timeout)
        count = 1 if batch is False else int(batch)
        items = self._take(count, limit, timeout)
        values = self._loaded(items)
        return values[0] if batch is False else values

    def _take(self, count: int, limit: float | None, timeout: Any) -> list[bytes]:
        deadline = _deadline(limit)
        # a blocking pop returns at once when an item is there: try without blocking only
        # when there is no time to block, or many items are wanted
        items = self._primitives.take(self.name, count) if count > 1 or limit == 0 else []
        while len(items) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._primitives.put_back(self.name, items)
                raise _timed_out(timeout, f"Queue {self.name!r}: no item")
            item = self._primitives.take_blocking(
                self.name, min(remaining, WAIT_SLICE), bounded=self.maxsize > 0
            )
            if item is not None:
                items.append(item)
        return items

    def _loaded(self, items: list[bytes]) -> list[Any]:
        return [load(self._holdings, item, take=True) for item in items]

    def qsize(self) -> int:
        return self._primitives.qsize(self.name)

    def __repr__(self) -> str:
        return f"<Queue: {self.name} maxsize={self.maxsize}>"
