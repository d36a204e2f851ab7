"""``Event``, ``Variable`` and ``Queue`` (as dask.distributed's), kept in Redis.

Values are msgpack data (as in dask). Waiting never polls: ``Event.wait``,
``Variable.get`` and ``Queue.get`` block on Redis (a notification stream, or BLPOP) and
wake within milliseconds of the change they wait for.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import msgpack

from rdist.primitives.base import Primitive
from rdist.store.primitives import Wait

#: a blocking wait is cut into slices this long at most (a closed client ends it sooner)
WAIT_SLICE = 5.0


def encode_value(value: Any, what: str) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(
            f"{what} holds msgpack data (numbers, strings, bytes, lists, dicts) or futures, "
            f"not {type(value).__name__}: {exc}"
        ) from None
    return packed


def decode_value(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def _deadline(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    if timeout < 0:
        raise ValueError(f"timeout must not be negative, not {timeout!r}")
    return time.monotonic() + timeout


def _timed_out(timeout: float | None, what: str) -> TimeoutError:
    return TimeoutError(f"{what} not ready after {timeout} s")


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

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the event is set or ``timeout`` seconds pass; True when it is set."""
        deadline = _deadline(timeout)
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
    """One cluster-wide value: ``set``, ``get(timeout)`` (waits until it is set), ``delete``."""

    def __init__(self, name: str | None = None, client: Any = None) -> None:
        super().__init__(name or f"variable-{uuid.uuid4().hex}", client)

    def __reduce__(self) -> Any:
        return (Variable, (self.name,))

    def set(self, value: Any, timeout: float | None = None) -> None:
        self._primitives.set_value("var", self.name, encode_value(value, "a Variable"))

    def get(self, timeout: float | None = None) -> Any:
        """The value, waiting up to ``timeout`` seconds for one to be set."""
        deadline = _deadline(timeout)
        changes = self._primitives.value_changes("var", self.name)
        while True:
            got = self._primitives.get_value("var", self.name)
            if not isinstance(got, Wait):
                return decode_value(got)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timed_out(timeout, f"Variable {self.name!r}")
            self._primitives.wait_after(changes, got.after, min(remaining, WAIT_SLICE))

    def delete(self) -> None:
        self._primitives.delete_value("var", self.name)

    def __repr__(self) -> str:
        return f"<Variable: {self.name}>"


class Queue(Primitive):
    """A cluster-wide FIFO queue: ``put``, ``get(timeout, batch)``, ``qsize``."""

    def __init__(self, name: str | None = None, client: Any = None, maxsize: int = 0) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"maxsize must be a non-negative integer, not {maxsize!r}")
        super().__init__(name or f"queue-{uuid.uuid4().hex}", client)
        self.maxsize = self._primitives.queue_limit(self.name, maxsize)

    def __reduce__(self) -> Any:
        return (Queue, (self.name, None, self.maxsize))

    def put(self, value: Any, timeout: float | None = None) -> None:
        """Append ``value``; on a full queue wait up to ``timeout`` seconds for room."""
        item = encode_value(value, "a Queue")
        deadline = _deadline(timeout)
        space = self._primitives.queue_space(self.name)
        while True:
            full = self._primitives.put(self.name, item, self.maxsize)
            if full is None:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timed_out(timeout, f"Queue {self.name!r} is full:")
            self._primitives.wait_after(space, full.after, min(remaining, WAIT_SLICE))

    def get(self, timeout: float | None = None, batch: bool | int = False) -> Any:
        """The oldest value, waiting up to ``timeout`` seconds; ``batch=True``: every value
        queued now (maybe none); ``batch=n``: a list of ``n`` values, waiting for each."""
        if batch is True:
            return [decode_value(b) for b in self._primitives.take(self.name, 0)]
        if batch is not False and (not isinstance(batch, int) or batch < 0):
            raise ValueError(f"batch must be True, False or a non-negative integer, not {batch!r}")
        count = 1 if batch is False else int(batch)
        deadline = _deadline(timeout)
        values = []
        while len(values) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timed_out(timeout, f"Queue {self.name!r}: no item")
            item = self._primitives.take_blocking(self.name, min(remaining, WAIT_SLICE))
            if item is not None:
                values.append(decode_value(item))
        return values[0] if batch is False else values

    def qsize(self) -> int:
        return self._primitives.qsize(self.name)

    def __repr__(self) -> str:
        return f"<Queue: {self.name} maxsize={self.maxsize}>"
