"""What the thread running a task knows about it, readable without importing the worker.

The worker sets a :class:`RunningTask` for the thread that runs a task; the client asks for
it before it blocks on futures (a task waiting on other tasks gives its thread up first,
so those can run even on a one-thread worker) and ``get_client()`` asks it for the worker's
client. This module imports nothing of rdist: it is how the client knows it runs inside a
task without the client package depending on the worker package.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class RunningTask(Protocol):
    """The worker's side of a running task (implemented by the worker's task context)."""

    key: str
    seceded: bool  #: gave its thread slot up (``secede``)

    def secede(self) -> None:
        """Leave the worker's thread budget; the worker starts a replacement thread."""

    def rejoin(self) -> None:
        """Take a thread slot again, waiting for one to be free."""

    def client(self) -> Any:
        """The client tasks on this worker use (made once per worker)."""

    def actor_host(self) -> Any:
        """The worker's actors (``rdist.actors.host.ActorHost``): where a task makes one."""

    def worker(self) -> Any:
        """The worker running the task (for extensions that must not import the worker
        package, e.g. ``rdist.shuffle``, which the client imports)."""


_local = threading.local()


def current_worker() -> Any:
    """The worker running the task on this thread (ValueError outside a task)."""
    task = current()
    if task is None:
        raise ValueError("no worker found: this works only inside a running task")
    return task.worker()


def current() -> RunningTask | None:
    """The task running on this thread, or None outside a task."""
    return getattr(_local, "task", None)


def set_current(task: RunningTask | None) -> None:
    _local.task = task
