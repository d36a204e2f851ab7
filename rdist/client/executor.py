"""``client.get_executor()``: the cluster as a ``concurrent.futures.Executor``.

As dask's ``ClientExecutor``: ``submit`` returns the client's futures at once (``pure=False``,
so two calls run twice, as an executor's do) with the keyword arguments given to
``get_executor`` (``workers=``, ``resources=``, ``retries=``, ...) applied to every task;
``map`` yields results in order; ``shutdown(wait=True)`` waits for what was submitted,
``wait=False`` cancels it.
"""

from __future__ import annotations

import concurrent.futures
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rdist.client.client import Client
    from rdist.client.future import Future

__all__ = ["ClientExecutor"]

#: what ``get_executor(**kwargs)`` may set for every task
TASK_OPTIONS = frozenset({"workers", "resources", "retries", "priority", "allow_other_workers"})


class ClientExecutor(concurrent.futures.Executor):
    """Submits to ``client``; see the module docstring."""

    def __init__(self, client: Client, **options: Any) -> None:
        unknown = set(options) - TASK_OPTIONS
        if unknown:
            raise TypeError(
                f"get_executor() got unexpected option(s) {sorted(unknown)}; "
                f"it takes {sorted(TASK_OPTIONS)}"
            )
        self._client = client
        self._options = options
        self._futures: weakref.WeakSet[Future] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot submit to an executor that was shut down")
            future = self._client.submit(fn, *args, pure=False, **self._options, **kwargs)
            self._futures.add(future)
            return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """The results of ``fn`` over the zipped ``iterables``, in order; all are submitted
        at once (in one message), as ``client.map``; ``timeout`` bounds the whole wait."""
        if chunksize != 1:
            raise ValueError("chunksize is not supported: rdist batches submissions itself")
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot submit to an executor that was shut down")
            futures = self._client.map(fn, *iterables, pure=False, **self._options)
            self._futures.update(futures)
        return _results_in_order(futures, timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut = True
            pending = [f for f in self._futures if not f.done()]
        if not pending:
            return
        if wait and not cancel_futures:
            self._client.gather(pending, errors="skip")
        else:
            self._client.cancel(pending)


def _results_in_order(futures: list[Future], timeout: float | None) -> Iterator[Any]:
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    for future in futures:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            yield future.result(timeout=left)
        except TimeoutError:
            raise concurrent.futures.TimeoutError(
                f"executor map not done after {timeout} s"
            ) from None
