"""Inside a running task: its context and the functions tasks call (``secede``, ``rejoin``,
``get_client``, ``worker_client``).

The worker sets a :class:`TaskContext` as :func:`rdist.task_context.current` for the thread
running a task; the client asks for it (through :mod:`rdist.task_context`, without
importing the worker) before it blocks on futures, so a task waiting on other tasks gives
its thread up first -- those can run even on a one-thread worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rdist import task_context
from rdist.client.client import Client
from rdist.client.default import default_client

if TYPE_CHECKING:
    from rdist.worker.execution import Executor
    from rdist.worker.server import Worker

_thread_state = threading.local()


def get_worker() -> Worker:
    """The worker running the current task (as ``distributed.get_worker``)."""
    worker: Worker | None = getattr(_thread_state, "worker", None)
    if worker is None:
        raise ValueError("No worker found: get_worker() works only inside a running task")
    return worker


def bind_worker(worker: Worker) -> None:
    """This thread runs tasks (or ``client.run`` functions) of ``worker``."""
    _thread_state.worker = worker


class TaskContext:
    """The worker's side of one running task (a :class:`rdist.task_context.RunningTask`)."""

    __slots__ = ("executor", "key", "seceded", "replaced")

    def __init__(self, executor: Executor, key: str) -> None:
        self.executor = executor
        self.key = key
        self.seceded = False  #: holds no thread slot now
        self.replaced = False  #: seceded once: another thread took this one's place

    def secede(self) -> None:
        if not self.seceded:
            self.seceded = True
            self.executor.seceded(self)

    def rejoin(self) -> None:
        if self.seceded:
            self.executor.rejoin(self)  # blocks until the worker grants a slot
            self.seceded = False

    def client(self) -> Any:
        return self.executor.worker.task_client()

    def actor_host(self) -> Any:
        return self.executor.worker.actors

    def worker(self) -> Any:
        return self.executor.worker


def current() -> TaskContext | None:
    """This thread's task, when the worker runs one here."""
    context = task_context.current()
    return context if isinstance(context, TaskContext) else None


def set_current(context: TaskContext | None) -> None:
    task_context.set_current(context)


def secede() -> None:
    """Leave the worker's thread budget (as ``distributed.secede``): for a task that will
    wait on other tasks. The worker starts another thread and tells the scheduler."""
    context = task_context.current()
    if context is None:
        raise ValueError("secede() works only inside a task running on a worker")
    context.secede()


def rejoin() -> None:
    """Take a thread slot again after :func:`secede`, waiting for one to be free."""
    context = task_context.current()
    if context is not None:
        context.rejoin()


def get_client(timeout: float | None = None) -> Client:
    """The client of the worker running this task (created once per worker); outside a
    task, the default client."""
    context = task_context.current()
    if context is None:
        return default_client()
    client: Client = context.client()
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
    context = task_context.current()
    if context is not None and not context.seceded:
        context.secede()
