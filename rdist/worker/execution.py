"""Which ready task runs next, on which thread: the worker's execution budget.

A worker runs at most ``nthreads`` tasks at once, and at most as many tasks needing a
resource as it declared of it (``--resources GPU=2``). :class:`ReadyQueue` hands ready tasks
to threads, highest priority first, within both budgets.

Long-running tasks (:func:`secede`) give their slot back: the worker starts a replacement
thread and tells the scheduler, so a task waiting on subtasks never holds the thread those
subtasks need -- not even on a one-thread worker. :func:`rejoin` takes a slot again.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rdist.worker.state import WTask

if TYPE_CHECKING:
    from rdist.client.client import Client
    from rdist.worker.server import Worker

#: Tasks whose prefix is known to take less than this run on the thread that received
#: them when a slot is free: a thread hand-off costs more than such a task.
INLINE_SECONDS = 0.002
#: The stream thread runs quick tasks for at most this long before reading again: its
#: reports ride that read, and a worker dying with finished, unreported work makes the
#: scheduler run that work again (and count it against those tasks' allowed failures).
INLINE_BUDGET = 0.005

_local = threading.local()


class ReadyQueue:
    """Ready tasks, handed out within the thread and resource budgets of the worker."""

    def __init__(self, nthreads: int, resources: dict[str, float] | None = None) -> None:
        self.nthreads = nthreads
        self.resources = dict(resources or {})
        self.used: dict[str, float] = {}
        self.running = 0  #: tasks holding a slot (seceded ones do not)
        self._heap: list[tuple[tuple[Any, ...], int, WTask]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition(threading.Lock())
        self._closed = False
        self._slot_waiters = 0  #: threads in acquire_slot (rejoin)

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, tasks: list[WTask], wake: bool = True) -> None:
        """Queue ``tasks``; ``wake=False`` when the calling thread runs them itself next
        (waking an idle executor thread costs more than a quick task), and then calls
        :meth:`wake` for whatever it left."""
        if not tasks:
            return
        with self._cv:
            for ts in tasks:
                heapq.heappush(self._heap, (ts.priority, next(self._seq), ts))
            if wake:
                self._cv.notify(len(tasks))

    def wake(self) -> None:
        """Executor threads take over the tasks queued without waking them."""
        with self._cv:
            if self._heap:
                self._cv.notify(len(self._heap))

    def get(self) -> WTask | None:
        """Block until a task may run; None once closed."""
        with self._cv:
            while True:
                if self._closed:
                    return None
                ts = self._take()
                if ts is not None:
                    return ts
                self._cv.wait()

    def try_get(self, fast: Any = None) -> WTask | None:
        """A task that may run now (and satisfies ``fast(ts)`` when given), or None."""
        with self._cv:
            if self._heap and fast is not None and not fast(self._heap[0][2]):
                return None
            return self._take()

    def _take(self) -> WTask | None:
        if self.running >= self.nthreads:
            return None
        blocked = []
        found = None
        while self._heap:
            item = heapq.heappop(self._heap)
            if self._fits(item[2]):
                found = item[2]
                break
            blocked.append(item)
        for item in blocked:  # waiting for a resource another task holds
            heapq.heappush(self._heap, item)
        if found is not None:
            self.running += 1
            for name, amount in (found.resources or {}).items():
                self.used[name] = self.used.get(name, 0) + amount
        return found

    def _fits(self, ts: WTask) -> bool:
        return all(
            self.used.get(n, 0) + a <= self.resources.get(n, 0)
            for n, a in (ts.resources or {}).items()
        )

    def done(self, ts: WTask, seceded: bool = False) -> None:
        """``ts`` ended; its slot (unless it seceded) and resources are free again."""
        with self._cv:
            if not seceded:
                self.running -= 1
            for name, amount in (ts.resources or {}).items():
                self.used[name] = self.used.get(name, 0) - amount
            self._notify_freed()

    def release_slot(self) -> None:
        with self._cv:
            self.running -= 1
            self._notify_freed()

    def _notify_freed(self) -> None:
        # only when somebody can use it: a needless wake of every idle executor thread
        # per task costs more than a quick task
        if self._heap or self._slot_waiters:
            self._cv.notify_all()

    def acquire_slot(self) -> None:
        with self._cv:
            self._slot_waiters += 1
            try:
                while self.running >= self.nthreads and not self._closed:
                    self._cv.wait()
            finally:
                self._slot_waiters -= 1
            self.running += 1

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


# -- inside a task -------------------------------------------------------------------------


class TaskContext:
    """What the thread running a task knows about it."""

    __slots__ = ("worker", "task", "seceded", "replaced")

    def __init__(self, worker: Worker, task: WTask) -> None:
        self.worker = worker
        self.task = task
        self.seceded = False  #: holds no slot now
        self.replaced = False  #: seceded once: another thread took this one's place


def current() -> TaskContext | None:
    return getattr(_local, "context", None)


def set_current(context: TaskContext | None) -> None:
    _local.context = context


def secede() -> None:
    """Leave the worker's thread budget (as ``distributed.secede``): for a task that will
    wait on other tasks. The worker starts another thread and tells the scheduler."""
    context = current()
    if context is None:
        raise ValueError("secede() works only inside a task running on a worker")
    if context.seceded:
        return
    context.seceded = True
    context.worker._seceded(context.task)


def rejoin() -> None:
    """Take a thread slot again after :func:`secede`, waiting for one to be free."""
    context = current()
    if context is None or not context.seceded:
        return
    context.worker.ready.acquire_slot()
    context.seceded = False


def get_client(timeout: float | None = None) -> Client:
    """The client of the worker running this task (created once per worker); outside a
    task, the default client."""
    context = current()
    if context is None:
        from rdist.client.client import default_client

        return default_client()
    client: Client = context.worker.task_client()
    return client


@contextmanager
def worker_client(timeout: float | None = None, separate_thread: bool = True) -> Iterator[Client]:
    """``with worker_client() as c:`` -- submit and wait on subtasks from inside a task,
    with the task seceded meanwhile."""
    client = get_client(timeout)
    if separate_thread:
        secede()
    try:
        yield client
    finally:
        if separate_thread:
            rejoin()


def secede_before_waiting() -> None:
    """Called by a worker's own client before it blocks: a task waiting on futures gives
    its thread up, so the tasks it waits for can run even on a one-thread worker."""
    context = current()
    if context is not None and not context.seceded:
        secede()
