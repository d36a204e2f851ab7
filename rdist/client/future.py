"""Futures and the helpers that wait on them (``wait``, ``as_completed``).

A :class:`Future` knows its key, its client (``future.client``, as in dask) and the
:class:`FutureHost` the client hands it: the few operations a future needs of its client
-- counting references, waiting, fetching the value -- behind one named interface, so a
future never reaches into the client itself (the client's ``Ledger`` implements it).
What the client knows of a key -- status, outcome, callbacks, references -- is the key's
:class:`~rdist.client.keystate.FutureState`, shared by every Future of the key.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from rdist.client.keynames import check_key, user_key
from rdist.client.keystate import (
    CANCELLED,
    ERROR,
    FINISHED,
    LOST,
    PENDING,
    FutureState,
    Outcome,
)
from rdist.exceptions import CancelledError, DataUnavailable
from rdist.protocol import spec, tracebacks

if TYPE_CHECKING:
    from rdist.client.client import Client

__all__ = [  # the statuses and the state are rdist.client.keystate's, named here too
    "CANCELLED",
    "ERROR",
    "FETCH_ATTEMPTS",
    "FINISHED",
    "LOST",
    "PENDING",
    "Future",
    "FutureHost",
    "FutureState",
    "Outcome",
    "as_completed",
    "fire_and_forget",
    "futures_of",
    "wait",
]

log = logging.getLogger("rdist.client")

#: How often result() waits for a recomputation after a holder of the data vanished.
FETCH_ATTEMPTS = 5


class FutureHost(Protocol):
    """What a Future asks of the client that holds it -- all it asks."""

    def register(self, key: str) -> FutureState:
        """The shared state of ``key``, one more reference to it counted."""

    def submitted(self, keys: list[str]) -> list[FutureState]:
        """``register`` for each key of one submission (a cancelled one starts over)."""

    def adopt(self, key: str) -> FutureState:
        """``register`` for a future a user made: a key the client does not hold yet is
        asked of the scheduler (and checked to exist before anyone waits on it)."""

    def release(self, key: str) -> None:
        """One reference fewer; the last one tells the scheduler the key is not wanted."""

    def check_open(self, key: str) -> None:
        """Raise ClosedClientError if the client holding ``key`` is closed."""

    def wait(self, state: FutureState, timeout: float | None) -> bool:
        """Block until ``state`` is done (False: ``timeout`` passed first)."""

    def wait_all(self, states: list[FutureState], timeout: float | None) -> bool:
        """Block until all are done, woken once at the end."""

    def when_done(self, state: FutureState, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once ``state`` is done (at once when it is)."""

    def values(self, futures: list[Future]) -> dict[str, Any]:
        """The values of finished futures by key; DataUnavailable if a holder is gone."""

    def await_recovery(self, futures: list[Future], outcomes: dict[str, Outcome]) -> None:
        """Their data could not be fetched: wait for the scheduler to recompute them."""

    def fire_and_forget(self, keys: list[str]) -> None:
        """Have the cluster run ``keys`` even when no future of them remains."""


class Future:
    """A remote computation's result, as ``distributed.Future``.

    ``key`` is the key as the user knows it -- a str, or a dask key such as ``("x", 1)``;
    ``_name`` is the string it travels as (:mod:`rdist.client.keynames`), which every
    exchange with the client's rooms uses. ``Future(key, client)`` made by a user names a
    key the client may not hold: the client then asks the scheduler for it, and waiting on
    one that no task has raises instead of waiting for ever."""

    __slots__ = ("key", "_name", "client", "_host", "_state", "__weakref__")

    def __init__(
        self,
        key: Any,
        client: Client | None = None,
        _state: FutureState | None = None,
        _name: str | None = None,
    ) -> None:
        if client is None:
            from rdist.client.default import default_client

            client = default_client()
        if _name is None:
            _name = check_key(key)
            if _state is None:  # made by a user: perhaps of a key we never submitted
                _state = client.ledger.adopt(_name)
        self.key = key
        self._name = _name
        self.client = client
        self._host: FutureHost = client.ledger
        self._state = _state or self._host.register(_name)

    @classmethod
    def _named(cls, name: str, client: Client, state: FutureState | None = None) -> Future:
        """A future of the wire name ``name`` (the client's own: submitted or scattered)."""
        return cls(user_key(name), client, state, name)

    @classmethod
    def _submitted(cls, names: list[str], client: Client) -> list[Future]:
        """Futures of the wire names of one submission, counted in one go (a map of
        thousands: no call of ``__init__`` and no lock taken per future)."""
        host: FutureHost = client.ledger
        states = host.submitted(names)
        new = object.__new__
        out: list[Future] = []
        append = out.append
        for name, state in zip(names, states):
            future = new(cls)
            future.key = user_key(name)
            future._name = name
            future.client = client
            future._host = host
            future._state = state
            append(future)
        return out

    # -- status ----------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self._state.status

    def done(self) -> bool:
        return self._state.done()

    @property
    def type(self) -> type | None:
        """The result's type once finished (None before), as dask's."""
        from rdist.client.inspect_more import result_type

        return result_type(self)

    def cancelled(self) -> bool:
        return self._state.status == CANCELLED

    # -- results ---------------------------------------------------------------------------
    def _wait(self, timeout: float | None) -> None:
        if not self._host.wait(self._state, timeout):
            raise TimeoutError(f"future {self.key!r} not done after {timeout} s")

    def result(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in range(FETCH_ATTEMPTS):
            self._wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            status = self._state.status
            if status == ERROR:
                exc, text, frames = self._state.failure()
                if frames:  # the task's own frames, as in dask
                    raise exc.with_traceback(tracebacks.rebuild(frames))
                raise _with_note(exc, text)
            if status == CANCELLED:
                raise CancelledError(self.key)
            if status == LOST:
                raise CancelledError(f"{self.key} was lost (its client or data is gone)")
            outcome = self._state.outcome
            try:
                return self._host.values([self])[self._name]
            except DataUnavailable:  # its worker died: wait for the recomputed result
                self._host.await_recovery([self], {self._name: outcome})
        raise DataUnavailable([self._name])

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        if self._state.status == CANCELLED:
            raise CancelledError(self.key)
        if self._state.status != ERROR:
            return None
        return self._state.exception_and_traceback()[0]

    def traceback(self, timeout: float | None = None) -> TracebackType | None:
        """The remote traceback, as a traceback object (``traceback.format_tb`` and pdb's
        post-mortem read it: the task's files, lines and function names, no locals)."""
        self._wait(timeout)
        if self._state.status != ERROR:
            return None
        return tracebacks.rebuild(self._state.failure()[2])

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` once, after completion, error or cancellation."""

        def call() -> None:
            try:
                fn(self)
            except Exception:
                log.exception("done callback of %s failed", self.key)

        self._host.when_done(self._state, call)

    def cancel(self, force: bool = False) -> None:
        self.client.cancel([self], force=force)

    def retry(self) -> None:
        self.client.retry([self])

    def release(self) -> None:
        if self.client is not None:
            self._host.release(self._name)
        self.client = None  # type: ignore[assignment]

    def __del__(self) -> None:
        if getattr(self, "client", None) is not None:
            try:
                self._host.release(self._name)
            except Exception:  # interpreter shutdown
                pass

    def __await__(self) -> Any:
        return self._async_result().__await__()

    async def _async_result(self) -> Any:
        if not self.done():
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def settle() -> None:
                if not waiter.done():
                    waiter.set_result(None)

            def wake() -> None:
                loop.call_soon_threadsafe(settle)

            self._host.when_done(self._state, wake)
            await waiter
        return await asyncio.get_running_loop().run_in_executor(None, self.result)

    def __repr__(self) -> str:
        return f"<Future: {self.status}, key: {self.key}>"

    def __dask_tokenize__(self) -> Any:
        """dask names what it builds on a persisted collection from its futures' keys."""
        return ("rdist-future", self._name)

    def __reduce__(self) -> Any:
        raise TypeError(
            f"Future {self.key!r} cannot be pickled inside an object; pass it directly "
            "(or in a list, tuple or dict) as an argument so it becomes a dependency"
        )


def _with_note(exc: BaseException, tb: str) -> BaseException:
    if tb and hasattr(exc, "add_note") and not getattr(exc, "_rdist_noted", False):
        exc.add_note("Remote traceback:\n" + tb.rstrip())
        try:
            exc._rdist_noted = True  # type: ignore[attr-defined]
        except AttributeError:
            pass
    return exc


_ATOMS = (int, float, str, bytes, bool, type(None))


def futures_of(obj: Any) -> list[Future]:
    """Every Future inside nested lists, tuples, sets and dicts, and inside the graphs of
    dask collections (a persisted one is backed by futures), in order."""
    if (
        type(obj) is tuple
        and len(obj) == 2
        and type(obj[0]) is tuple
        and not obj[1]
        and all(type(a) in _ATOMS for a in obj[0])
    ):
        return []  # (args, kwargs) of plain values: the common case of map
    out: list[Future] = []
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, Future):
            out.append(x)
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(reversed(list(x)))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        elif hasattr(x, "__dask_graph__") and callable(x.__dask_graph__):
            stack.extend(reversed([_node_value(v) for v in x.__dask_graph__().values()]))
        elif (fields := spec.container_items(x)) is not None:  # a dataclass (as dask's)
            stack.extend(reversed(fields))
    return out


def _node_value(value: Any) -> Any:
    """A graph entry's value: a future sits in a ``DataNode`` once dask has seen it."""
    return value.value if type(value).__name__ == "DataNode" else value


def wait(fs: Any, timeout: float | None = None, return_when: str = "ALL_COMPLETED") -> Any:
    """Wait until all (or the first of) ``fs`` are done; returns ``(done, not_done)`` sets
    (an awaitable of them when the futures' client is asynchronous, as in dask)."""
    futures = futures_of(fs) if not isinstance(fs, Future) else [fs]
    if futures and getattr(futures[0].client, "asynchronous", False):
        from rdist.client.asynchronous import in_thread

        return in_thread(lambda: _wait(futures, timeout, return_when))
    return _wait(futures, timeout, return_when)


def _wait(futures: list[Future], timeout: float | None, return_when: str) -> Any:
    from collections import namedtuple

    if return_when not in ("ALL_COMPLETED", "FIRST_COMPLETED"):
        raise ValueError(
            f"return_when must be ALL_COMPLETED or FIRST_COMPLETED, not {return_when!r}"
        )
    deadline = None if timeout is None else time.monotonic() + timeout
    if return_when == "ALL_COMPLETED" and futures and len({id(f._host) for f in futures}) == 1:
        states = [f._state for f in futures]
        if not futures[0]._host.wait_all(states, timeout):  # one wake-up for them all
            raise TimeoutError(
                f"{sum(not g.done() for g in futures)} of {len(futures)} futures "
                f"not done after {timeout} s"
            )
    elif return_when == "ALL_COMPLETED":
        for f in futures:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not f._state.event.wait(remaining):
                raise TimeoutError(
                    f"{sum(not g.done() for g in futures)} of {len(futures)} futures "
                    f"not done after {timeout} s"
                )
    elif futures and not any(f.done() for f in futures):
        woken = threading.Event()
        for f in futures:
            f._host.when_done(f._state, woken.set)
        if not woken.wait(timeout):
            raise TimeoutError(f"none of {len(futures)} futures done after {timeout} s")
    done = {f for f in futures if f.done()}
    DoneAndNotDone = namedtuple("DoneAndNotDone", ["done", "not_done"])
    return DoneAndNotDone(done, {f for f in futures if f not in done})


class as_completed:
    """Yield futures as they complete (each once); ``with_results`` yields (future, result)."""

    def __init__(
        self,
        futures: Iterable[Future] = (),
        with_results: bool = False,
        raise_errors: bool = True,
        timeout: float | None = None,
    ) -> None:
        self.with_results = with_results
        self.raise_errors = raise_errors
        self.timeout = timeout
        self._queue: queue.Queue[Future] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self.update(futures)

    def add(self, future: Future) -> None:
        with self._lock:
            self._pending += 1
        future._host.when_done(future._state, lambda: self._queue.put(future))

    def update(self, futures: Iterable[Future]) -> None:
        for f in futures:
            self.add(f)

    def count(self) -> int:
        return self._pending

    def is_empty(self) -> bool:
        return self._pending == 0

    def __iter__(self) -> Iterator[Any]:
        return self

    def _take(self, future: Future) -> Any:
        with self._lock:
            self._pending -= 1
        if not self.with_results:
            return future
        if future.status == ERROR and not self.raise_errors:
            return future, future.exception()
        return future, future.result()

    def __next__(self) -> Any:
        if self._pending == 0:
            raise StopIteration
        try:
            future = self._queue.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"as_completed: nothing completed within {self.timeout} s") from None
        return self._take(future)

    def next_batch(self, block: bool = True) -> list[Any]:
        batch = [next(self)] if block and self._pending else []
        while True:
            try:
                future = self._queue.get_nowait()
            except queue.Empty:
                return batch
            batch.append(self._take(future))

    def batches(self) -> Iterator[list[Any]]:
        while self._pending:
            yield self.next_batch()

    def __aiter__(self) -> as_completed:
        return self

    async def __anext__(self) -> Any:
        if self._pending == 0:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        future = await loop.run_in_executor(None, self._queue.get)
        if self.with_results:
            with self._lock:
                self._pending -= 1
            return future, await loop.run_in_executor(None, future.result)
        return self._take(future)


def fire_and_forget(obj: Any) -> None:
    """Run these futures' tasks to completion even when no future for them remains."""
    futures = futures_of(obj) if not isinstance(obj, Future) else [obj]
    by_host: dict[int, tuple[FutureHost, list[str]]] = {}
    for f in futures:
        by_host.setdefault(id(f._host), (f._host, []))[1].append(f._name)
    for host, keys in by_host.values():
        host.fire_and_forget(keys)
