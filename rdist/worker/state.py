"""The worker's bookkeeping of the tasks it was given, free of I/O.

The server feeds it the scheduler's actions and the outcome of fetches and executions; it
answers with what to do next (fetch these dependencies, run these tasks, report these keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class WTaskState(str, Enum):
    FETCHING = "fetching"  #: waiting for dependency data
    READY = "ready"  #: all inputs local, queued for a thread
    EXECUTING = "executing"
    MEMORY = "memory"
    CANCELLED = "cancelled"  #: freed by the scheduler while executing: drop its result


@dataclass(slots=True, eq=False)
class WTask:
    key: str
    priority: tuple[Any, ...]
    #: dependency key -> (holders, nbytes, in_redis)
    deps: dict[str, tuple[list[str], int, bool]]
    state: WTaskState = WTaskState.FETCHING
    missing: set[str] = field(default_factory=set)
    #: (function, args blob, mode) once loaded; specs are fetched per batch, not per task
    spec: Any = None
    #: clients to notify directly when the result is stored
    clients: list[str] | None = None
    resources: dict[str, float] | None = None


@dataclass(slots=True)
class Decisions:
    fetch: dict[str, tuple[list[str], int, bool]] = field(default_factory=dict)
    ready: list[WTask] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    drop_data: list[str] = field(default_factory=list)


class WorkerState:
    """Which tasks wait for which data, which are runnable, which were cancelled."""

    def __init__(self) -> None:
        self.tasks: dict[str, WTask] = {}
        self.have: set[str] = set()  #: keys whose data is local
        self.fetching: set[str] = set()
        self.waiting_for: dict[str, set[str]] = {}  #: dependency -> tasks waiting for it

    def compute(
        self,
        key: str,
        priority: list[Any],
        deps: dict[str, list[Any]],
        out: Decisions,
        task_spec: Any = None,
        clients: list[str] | None = None,
        resources: dict[str, float] | None = None,
    ) -> None:
        ts = self.tasks.get(key)
        if key in self.have:
            out.already_done.append(key)
            return
        if ts is not None:
            if ts.state is WTaskState.CANCELLED:
                ts.state = WTaskState.EXECUTING  # its running execution counts again
            ts.clients = clients or None
            return
        ts = WTask(
            key,
            tuple(priority),
            {k: (list(v[0]), int(v[1]), bool(v[2])) for k, v in deps.items()},
            spec=task_spec,
            clients=clients or None,
            resources=resources or None,
        )
        self.tasks[key] = ts
        for dep, info in ts.deps.items():
            if dep in self.have:
                continue
            ts.missing.add(dep)
            self.waiting_for.setdefault(dep, set()).add(key)
            if dep in self.tasks and not info[0]:
                continue  # co-assigned: the input is being computed here; wait for it
            if dep not in self.fetching:
                self.fetching.add(dep)
                out.fetch[dep] = info
        if not ts.missing:
            ts.state = WTaskState.READY
            out.ready.append(ts)

    def free(self, key: str, out: Decisions) -> None:
        ts = self.tasks.get(key)
        if ts is not None:
            if ts.state is WTaskState.EXECUTING:
                ts.state = WTaskState.CANCELLED
            else:
                self._forget_task(ts)
        if key in self.have and not self._needed_locally(key):
            self.have.discard(key)
            out.drop_data.append(key)

    def steal(self, key: str) -> bool:
        """The scheduler would move ``key`` to another worker: give it up unless it started
        (or finished) here. The answer makes the move safe: a task runs only once."""
        ts = self.tasks.get(key)
        if ts is None or ts.state not in (WTaskState.FETCHING, WTaskState.READY):
            return False
        self._forget_task(ts)
        return True

    def _needed_locally(self, key: str) -> bool:
        return bool(self.waiting_for.get(key))

    def _forget_task(self, ts: WTask) -> None:
        self.tasks.pop(ts.key, None)
        for dep in ts.missing:
            waiters = self.waiting_for.get(dep)
            if waiters is not None:
                waiters.discard(ts.key)
        ts.state = WTaskState.CANCELLED

    def fetched(self, keys: list[str], out: Decisions) -> None:
        for key in keys:
            self.fetching.discard(key)
            self.have.add(key)
            for waiter in self.waiting_for.pop(key, ()):
                ts = self.tasks.get(waiter)
                if ts is None:
                    continue
                ts.missing.discard(key)
                if not ts.missing and ts.state is WTaskState.FETCHING:
                    ts.state = WTaskState.READY
                    out.ready.append(ts)

    def fetch_failed(self, keys: list[str]) -> list[str]:
        """Dependencies that could not be fetched: the tasks needing them fail."""
        failed: list[str] = []
        for key in keys:
            self.fetching.discard(key)
            for waiter in self.waiting_for.pop(key, ()):
                ts = self.tasks.pop(waiter, None)
                if ts is not None:
                    failed.append(waiter)
        return failed

    def start(self, ts: WTask) -> bool:
        """A thread picks ``ts`` up; False when it was cancelled meanwhile."""
        if self.tasks.get(ts.key) is not ts or ts.state is not WTaskState.READY:
            return False
        ts.state = WTaskState.EXECUTING
        return True

    def finished(self, key: str, stored: bool) -> bool:
        """Execution ended; True when the outcome should be reported."""
        ts = self.tasks.pop(key, None)
        if ts is None or ts.state is WTaskState.CANCELLED:
            return False
        if stored:
            self.have.add(key)
        return True

    def validate_state(self) -> None:
        for key, ts in self.tasks.items():
            for dep in ts.missing:
                assert key in self.waiting_for.get(dep, ()), (key, dep)
            if ts.state is WTaskState.READY:
                assert not ts.missing
