"""The scheduler's decisions as a pure state machine: events in, instructions out.

No Redis, sockets, threads or clocks here: time arrives on the events. Every task state
change goes through :meth:`SchedulerState._transition`, which looks the pair up in
``_TRANSITIONS``; an illegal pair raises.

Lifetime: a task is *needed* while a client wants it or while a dependent still waits on
it. A task that is no longer needed is released; a released task is forgotten once no
dependent remembers it (so lineage survives for recomputation).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rdist.scheduler import coassign, dataops, recovery, stealing
from rdist.scheduler import events as ev


class TaskState(str, Enum):
    RELEASED = "released"
    WAITING = "waiting"  #: some dependency is not in memory yet
    QUEUED = "queued"  #: ready, held at the scheduler until a worker has room
    NO_WORKER = "no-worker"  #: ready, but no allowed worker exists
    PROCESSING = "processing"  #: assigned to a worker
    MEMORY = "memory"
    ERRED = "erred"
    FORGOTTEN = "forgotten"


TS = TaskState
FIRE_AND_FORGET = "fire-and-forget"  #: pseudo-client that wants fire_and_forget keys
#: Estimated duration of a task of an unseen kind (as dask): keeps it at one per thread.
DEFAULT_DURATION = 0.5
#: A worker may hold this much estimated work per thread beyond one task per thread.
TARGET_SECONDS_PER_THREAD = 0.05
MAX_IN_FLIGHT_PER_THREAD = 1000
#: Dependencies this large pin a task to the worker holding them, even when busy.
LOCALITY_BYTES = 1 << 20


class InvalidTransition(RuntimeError):
    pass


class Worklist:
    """Work pushed while the list is being drained joins the running loop, so a cascade (a
    released or forgotten chain of a million tasks) is walked iteratively, not by recursion."""

    __slots__ = ("items", "busy")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.busy = False

    def run(self, item: Any, step: Callable[[Any], None]) -> None:
        self.items.append(item)
        if self.busy:
            return
        self.busy = True
        try:
            while self.items:
                step(self.items.pop())
        finally:
            self.busy = False


@dataclass(slots=True, eq=False)
class Task:
    key: str
    prefix: str
    state: TS = TS.RELEASED
    dependencies: set[str] = field(default_factory=set)
    dependents: set[str] = field(default_factory=set)
    waiting_on: set[str] = field(default_factory=set)  #: dependencies not yet in memory
    waiters: set[str] = field(default_factory=set)  #: dependents that still need our data
    who_wants: set[str] = field(default_factory=set)  #: client ids
    who_has: set[str] = field(default_factory=set)  #: worker addresses
    in_redis: bool = False  #: the (small) result is stored in Redis
    nbytes: int = 0
    type_name: str = ""
    priority: tuple[Any, ...] = ()
    restrictions: set[str] | None = None
    loose: bool = False
    retries: int = 0
    resources: dict[str, float] | None = None
    processing_on: str | None = None
    occupancy: float = 0.0  #: estimated duration added to the worker's occupancy
    error: bytes | None = None  #: opaque serialized error from the worker
    error_text: str | None = None  #: scheduler-made error (no pickles here)
    blame: str | None = None  #: the key whose failure erred this one
    broken: str | None = None  #: why this task can never run (e.g. a missing dependency)
    #: clients the worker running this task notifies itself (fewer hops on the result path)
    notified: tuple[str, ...] = ()
    processing_since: float = 0.0  #: event time of the assignment (stealing waits a while)
    #: the opaque spec until the first assignment carries it (saves the worker a round
    #: trip to Redis); later assignments (retries, steals) load it from Redis
    spec: bytes | None = None
    error_kind: str | None = None  #: "killed-worker" when workers died running it
    suspicious: int = 0  #: workers that died while running this task


@dataclass(slots=True, eq=False)
class WorkerInfo:
    address: str
    name: str
    nthreads: int
    memory_limit: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    processing: set[str] = field(default_factory=set)
    has_what: set[str] = field(default_factory=set)
    occupancy: float = 0.0  #: estimated seconds of work assigned
    used_resources: dict[str, float] = field(default_factory=dict)
    long_running: set[str] = field(default_factory=set)  #: seceded: hold no thread
    status: str = "running"  #: "paused" while its memory is high: it gets no new tasks


def key_prefix(key: str) -> str:
    """``inc-3f2a...`` -> ``inc``: tasks of one prefix share a duration estimate."""
    head, sep, _ = key.rpartition("-")
    return head if sep else key


class SchedulerState:
    """Tasks, workers and clients; :meth:`handle` is the only entry point."""

    def __init__(
        self, allowed_failures: int = 3, direct_notify: bool = True, coassign: bool = True
    ) -> None:
        #: a task errs with KilledWorker once this many workers died while running it
        self.allowed_failures = allowed_failures
        #: workers tell the clients wanting a key themselves when it finishes (one hop
        #: instead of two); the scheduler then notifies only clients that came later
        self.direct_notify = direct_notify
        #: a task whose inputs are all being computed on one worker is sent there at once
        self.coassign = coassign
        self.coassigning = Worklist()
        #: key -> (victim, thief) of steal requests awaiting the victim's answer
        self.stealing: dict[str, tuple[str, str]] = {}
        self.last_balance = float("-inf")
        self._now = 0.0  #: time of the event being handled
        self.tasks: dict[str, Task] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.clients: dict[str, set[str]] = {FIRE_AND_FORGET: set()}  #: client -> wanted keys
        self.durations: dict[str, float] = {}  #: prefix -> average duration
        self.queued: list[tuple[tuple[Any, ...], str]] = []  #: heap of ready unrestricted keys
        self.queued_restricted: set[str] = set()
        self.no_worker: set[str] = set()
        self._generation = itertools.count()
        self._out: list[ev.Instruction] = []
        self._dirty: set[str] = set()
        self._stimulus = ""
        #: work deferred so that long chains are walked in a loop, not by recursion
        self._forgetting = Worklist()
        self._releasing = Worklist()
        self._wake_heap: list[tuple[tuple[Any, ...], str]] = []
        self._waking = False
        self.transition_log: list[tuple[str, str, str, str]] = []  #: (key, start, finish, stimulus)
        self.keep_log = False

    # -- entry point ---------------------------------------------------------------------
    def handle(self, *events: ev.Event, flush: bool = True) -> list[ev.Instruction]:
        """Apply ``events``; returns the instructions. With ``flush=False`` the task records
        changed are written by a later :meth:`flush` (the server flushes once per batch, so
        a task that changes in many entries of a batch is written once)."""
        for event in events:
            self._stimulus = event.stimulus_id
            self._now = event.time
            handler = _HANDLERS[type(event)]
            handler(self, event)
        self._fill_all_workers()
        stealing.balance(self, self._now)
        if flush:
            self._flush_dirty()
        out, self._out = self._out, []
        return out

    def flush(self) -> list[ev.Instruction]:
        """Records of the tasks changed since the last flush."""
        self._flush_dirty()
        out, self._out = self._out, []
        return out

    # -- event handlers ------------------------------------------------------------------
    def _on_client_joined(self, e: ev.ClientJoined) -> None:
        self.clients.setdefault(e.client, set())

    def _on_client_left(self, e: ev.ClientLeft) -> None:
        keys = self.clients.pop(e.client, set())
        self._unwant(e.client, keys)

    def _on_graph(self, e: ev.GraphSubmitted) -> None:
        self.clients.setdefault(e.client, set())
        generation = next(self._generation)
        new: list[Task] = []
        for index, meta in enumerate(e.tasks):
            ts = self.tasks.get(meta.key)
            if ts is None:
                ts = self._new_task(meta, (-meta.priority, generation, index))
                new.append(ts)
        for ts in new:
            self._link_dependencies(ts)
        for key in e.wanted:
            self._want(e.client, key)
        for key in e.fire_and_forget:
            self._want(FIRE_AND_FORGET, key)
        # new tasks, and released ones kept only for lineage that are wanted again
        revived = [self.tasks[m.key] for m in e.tasks] + [
            self.tasks[k] for k in (*e.wanted, *e.fire_and_forget) if k in self.tasks
        ]
        finished_before = {ts.key for ts in revived if ts.state in (TS.MEMORY, TS.ERRED)}
        for ts in revived:
            if ts.state is TS.RELEASED and self._needed(ts):
                self._transition(ts, TS.WAITING)
        # keys wanted that were already finished get an answer straight away (those that
        # finished just now, e.g. erred on a failed dependency, were notified on the way)
        for key in e.wanted:
            ts = self.tasks.get(key)
            if key in finished_before and ts is not None and ts.state in (TS.MEMORY, TS.ERRED):
                self._notify_one(e.client, ts)
        for key in e.fire_and_forget:
            ts = self.tasks.get(key)
            if ts is not None and ts.state in (TS.MEMORY, TS.ERRED):
                self._unwant(FIRE_AND_FORGET, [key])

    def _new_task(self, meta: ev.TaskSpecMeta, priority: tuple[Any, ...]) -> Task:
        ts = Task(
            key=meta.key,
            prefix=key_prefix(meta.key),
            priority=priority,
            restrictions=set(meta.workers) if meta.workers else None,
            loose=meta.loose,
            retries=meta.retries,
            resources=meta.resources or None,
        )
        ts.dependencies = set(meta.deps)
        self.tasks[meta.key] = ts
        if meta.spec is not None:
            self._emit(ev.StoreSpec(meta.key, meta.spec))
            ts.spec = meta.spec  # travels with the first assignment, then only in Redis
        return ts

    def _link_dependencies(self, ts: Task) -> None:
        for dep_key in ts.dependencies:
            dep = self.tasks.get(dep_key)
            if dep is None:
                # a dependency nobody holds any more: fail loudly rather than wait forever
                ts.broken = f"dependency {dep_key!r} of {ts.key!r} is unknown (released?)"
                continue
            dep.dependents.add(ts.key)

    def _on_released(self, e: ev.KeysReleased) -> None:
        wanted = self.clients.get(e.client)
        if wanted is None:
            return
        keys = [k for k in e.keys if k in wanted]
        wanted.difference_update(keys)
        self._unwant(e.client, keys, already_removed=True)

    def _on_cancelled(self, e: ev.KeysCancelled) -> None:
        unknown = [key for key in e.keys if key not in self.tasks]
        targets = self._with_dependents(e.keys)
        for ts in targets:
            clients = set(ts.who_wants) if e.force else ({e.client} & ts.who_wants)
            for client in clients:
                if client != FIRE_AND_FORGET:
                    self._emit(ev.Notify(client, ts.key, "cancelled", {}))
                self.clients.get(client, set()).discard(ts.key)
                self._unwant(client, [ts.key], already_removed=True)
        for key in unknown:  # not the keys just forgotten above: they were notified
            self._emit(ev.Notify(e.client, key, "cancelled", {}))

    def _with_dependents(self, keys: Iterable[str]) -> list[Task]:
        """The tasks and all their unfinished dependents, transitively."""
        seen: dict[str, Task] = {}
        stack = [self.tasks[k] for k in keys if k in self.tasks]
        while stack:
            ts = stack.pop()
            if ts.key in seen:
                continue
            seen[ts.key] = ts
            for d in ts.dependents:
                dts = self.tasks.get(d)
                if dts is not None and dts.state not in (TS.MEMORY, TS.ERRED):
                    stack.append(dts)
        return list(seen.values())

    def _on_retry(self, e: ev.RetryRequested) -> None:
        roots = [self.tasks[k] for k in e.keys if k in self.tasks]
        for ts in self._erred_lineage(roots):
            self._transition(ts, TS.RELEASED)
        for ts in self._erred_lineage_order:
            if ts.state is TS.RELEASED and self._needed(ts):
                self._transition(ts, TS.WAITING)

    def _erred_lineage(self, roots: list[Task]) -> list[Task]:
        """Erred tasks among ``roots`` and, through ``blame``, the task that failed first."""
        out: dict[str, Task] = {}
        for ts in roots:
            stack = [ts]
            while stack:
                t = stack.pop()
                if t.state is not TS.ERRED or t.key in out:
                    continue
                out[t.key] = t
                stack.extend(self.tasks[d] for d in t.dependencies if d in self.tasks)
        ordered = sorted(out.values(), key=lambda t: t.priority)
        self._erred_lineage_order = ordered
        return ordered

    _erred_lineage_order: list[Task]

    def _on_worker_joined(self, e: ev.WorkerJoined) -> None:
        if e.address in self.workers:
            return
        ws = WorkerInfo(
            e.address, e.name, max(1, e.nthreads), e.memory_limit, dict(e.resources or {})
        )
        self.workers[e.address] = ws
        self._emit(ev.LogEvent("worker-joined", {"worker": e.address, "name": e.name}))
        for key in sorted(self.no_worker, key=lambda k: self.tasks[k].priority):
            ts = self.tasks[key]
            if self._candidates(ts):
                self._transition(ts, TS.QUEUED)

    def _on_worker_left(self, e: ev.WorkerLeft) -> None:
        ws = self.workers.pop(e.address, None)
        if ws is None:
            return
        self._emit(ev.LogEvent("worker-lost" if e.lost else "worker-left", {"worker": e.address}))
        suspects = _likely_running(ws, self.tasks) if e.lost else set()
        for key in list(ws.processing):
            ts = self.tasks.get(key)
            if ts is None or ts.processing_on != e.address:
                continue  # moved already (a co-assigned task whose input was released)
            if key in suspects:
                ts.suspicious += 1
                if ts.suspicious >= self.allowed_failures:
                    self._killed_worker(ts, e.address)
                    continue
            self._transition(ts, TS.RELEASED)
            if ts.state is TS.RELEASED and self._needed(ts):  # (a cascade may have moved it)
                self._transition(ts, TS.WAITING)
        for key in list(ws.has_what):
            ts = self.tasks[key]
            ts.who_has.discard(e.address)
            self._mark(ts)  # the stored record's who_has must not name the departed worker
            if ts.state is TS.MEMORY and not ts.who_has and not ts.in_redis:
                self._data_lost(ts)
        for ts in list(self.tasks.values()):
            if ts.state in (TS.QUEUED, TS.WAITING) and ts.restrictions and not self._candidates(ts):
                if ts.state is TS.QUEUED:
                    self._transition(ts, TS.NO_WORKER)

    def _on_restart(self, e: ev.RestartRequested) -> None:
        """Every task is cancelled and forgotten; workers restart with nothing."""
        for ts in self.tasks.values():
            for client in sorted(ts.who_wants):
                if client != FIRE_AND_FORGET:
                    self._emit(ev.Notify(client, ts.key, "cancelled", {}))
            self._emit(ev.ForgetTask(ts.key))
        self.tasks.clear()
        for wanted in self.clients.values():
            wanted.clear()
        for ws in self.workers.values():
            ws.processing.clear()
            ws.has_what.clear()
            ws.occupancy = 0.0
            ws.used_resources.clear()
        self.queued.clear()
        self.stealing.clear()
        self.queued_restricted.clear()
        self.no_worker.clear()
        self._dirty.clear()
        self._emit(ev.LogEvent("restart", {"client": e.client}))
        self._emit(ev.RestartWorkers(sorted(self.workers), e.client))

    def _on_missing_data(self, e: ev.MissingData) -> None:
        """Holders that could not deliver are struck off; data nobody holds is recomputed, and
        the task that needed it waits again instead of failing."""
        for dep_key in e.deps:
            dep = self.tasks.get(dep_key)
            if dep is None or dep.state is not TS.MEMORY:
                continue
            for address in e.tried:
                dep.who_has.discard(address)
                ws = self.workers.get(address)
                if ws is not None:
                    ws.has_what.discard(dep_key)
            self._mark(dep)
            if not dep.who_has and not dep.in_redis:
                self._data_lost(dep)
        ts = self.tasks.get(e.key)
        if ts is not None and ts.state is TS.PROCESSING and ts.processing_on == e.worker:
            self._transition(ts, TS.RELEASED)
            if self._needed(ts):
                self._transition(ts, TS.WAITING)

    def _killed_worker(self, ts: Task, last_worker: str) -> None:
        text = (
            f"Attempted to run task {ts.key!r} on {ts.suspicious} different workers, but all "
            f"those workers died while running it. The last worker was {last_worker}."
        )
        ts.error_kind = "killed-worker"
        self._fail(ts, None, ts.key, text)

    def _data_lost(self, ts: Task) -> None:
        """The only copy of a result is gone: recompute it if anything still needs it."""
        for client in sorted(ts.who_wants):
            if client != FIRE_AND_FORGET:  # their futures go back to pending, not to error
                self._emit(ev.Notify(client, ts.key, "lost", {}))
        self._transition(ts, TS.RELEASED)
        if self._needed(ts):
            self._transition(ts, TS.WAITING)
        for d in ts.dependents:
            dts = self.tasks.get(d)
            if dts is not None and dts.state in (TS.WAITING, TS.QUEUED, TS.NO_WORKER):
                # straight back to waiting: releasing it would free its other inputs too
                self._transition(dts, TS.WAITING)
                dts.waiting_on.add(ts.key)

    def _on_finished(self, e: ev.TasksFinished) -> None:
        ws = self.workers.get(e.worker)
        for item in e.tasks:
            ts = self.tasks.get(item.key)
            self._learn_duration(item.key, item.duration)
            if ts is None or ts.state is not TS.PROCESSING or ts.processing_on != e.worker:
                if ts is not None and ts.state is TS.MEMORY and ws is not None:
                    # a duplicate or late completion: the data is valid, keep it as a replica
                    ts.who_has.add(e.worker)
                    ws.has_what.add(ts.key)
                    self._mark(ts)
                elif ws is not None:
                    self._emit(ev.FreeKeys(e.worker, [item.key]))
                continue
            ts.nbytes = item.nbytes
            ts.in_redis = item.in_redis
            ts.type_name = item.type_name
            self._transition(ts, TS.MEMORY, worker=e.worker, inline=item.inline)

    def _on_erred(self, e: ev.TaskErred) -> None:
        ts = self.tasks.get(e.key)
        if ts is None or ts.state is not TS.PROCESSING or ts.processing_on != e.worker:
            return
        if ts.retries > 0:
            ts.retries -= 1
            self._transition(ts, TS.RELEASED)
            if self._needed(ts):
                self._transition(ts, TS.WAITING)
            return
        self._fail(ts, e.error, ts.key, None)

    def _on_scattered(self, e: ev.DataScattered) -> None:
        self.clients.setdefault(e.client, set())
        for key, holders, nbytes, in_redis in e.items:
            ts = self.tasks.get(key)
            if ts is None:
                ts = Task(key=key, prefix=key_prefix(key), priority=(0, next(self._generation), 0))
                self.tasks[key] = ts
            ts.nbytes, ts.in_redis = nbytes, in_redis
            for address in holders:
                ws = self.workers.get(address)
                if ws is not None:
                    ts.who_has.add(address)
                    ws.has_what.add(key)
            self._want(e.client, key)
            if ts.state is TS.RELEASED:
                self._transition(ts, TS.MEMORY)
            self._mark(ts)

    def _on_replicated(self, e: ev.DataReplicated) -> None:
        ws = self.workers.get(e.worker)
        if ws is None:
            return
        stale = []
        for key in e.keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state is TS.MEMORY:
                ts.who_has.add(e.worker)
                ws.has_what.add(key)
                self._mark(ts)
            else:
                stale.append(key)  # released meanwhile: the copy must not linger
        if stale:
            self._emit(ev.FreeKeys(e.worker, stale))

    def _on_seceded(self, e: ev.TaskSeceded) -> None:
        """A long-running task left its worker's thread budget: room for its subtasks."""
        ts = self.tasks.get(e.key)
        ws = self.workers.get(e.worker)
        if ts is None or ws is None or ts.processing_on != e.worker:
            return
        if e.key not in ws.long_running:
            ws.long_running.add(e.key)
            ws.occupancy = max(0.0, ws.occupancy - ts.occupancy)
            ts.occupancy = 0.0

    def _move_processing(self, ts: Task, ws: WorkerInfo) -> None:
        """A confirmed steal: the victim dropped ``ts`` unstarted; assign it to ``ws``."""
        if self.keep_log:
            self.transition_log.append((ts.key, "processing", "processing", self._stimulus))
        self._stop_processing(ts)
        self._t_to_processing(ts, ws)
        self._mark(ts)

    # -- wanting and needing -------------------------------------------------------------
    def _want(self, client: str, key: str) -> None:
        ts = self.tasks.get(key)
        if ts is None:
            return
        ts.who_wants.add(client)
        self.clients.setdefault(client, set()).add(key)
        self._mark(ts)

    def _unwant(self, client: str, keys: Iterable[str], already_removed: bool = False) -> None:
        wanted = self.clients.get(client)
        for key in list(keys):
            if wanted is not None and not already_removed:
                wanted.discard(key)
            ts = self.tasks.get(key)
            if ts is None or client not in ts.who_wants:
                continue
            ts.who_wants.discard(client)
            self._mark(ts)
            self._release_if_unneeded(ts)

    def _needed(self, ts: Task) -> bool:
        return bool(ts.who_wants or ts.waiters or self._has_needed_dependent(ts))

    def _has_needed_dependent(self, ts: Task) -> bool:
        return any(
            (d := self.tasks.get(k)) is not None
            and d.state in (TS.WAITING, TS.QUEUED, TS.NO_WORKER, TS.PROCESSING)
            for k in ts.dependents
        )

    def _release_if_unneeded(self, ts: Task) -> None:
        """Release ``ts`` (then its unneeded dependencies, iteratively) unless it is needed."""
        self._releasing.run(ts, self._release_one)

    def _release_one(self, ts: Task) -> None:
        if self._needed(ts):
            return
        if ts.state not in (TS.RELEASED, TS.FORGOTTEN):
            self._transition(ts, TS.RELEASED)
        self._forget_if_unreferenced(ts)

    def _forget_if_unreferenced(self, ts: Task) -> None:
        """Forget ``ts``, then dependencies nothing references any more -- iteratively, so a
        chain of a million tasks does not recurse a million frames deep."""
        self._forgetting.run(ts, self._forget_one)

    def _forget_one(self, ts: Task) -> None:
        if ts.state is TS.RELEASED and not ts.who_wants and not ts.dependents:
            self._transition(ts, TS.FORGOTTEN)

    # -- transitions ---------------------------------------------------------------------
    def _transition(self, ts: Task, finish: TS, **kwargs: Any) -> None:
        start = ts.state
        if start is finish:
            return
        method = _TRANSITIONS.get((start, finish))
        if method is None:
            raise InvalidTransition(f"{ts.key!r}: {start.value} -> {finish.value}")
        if self.keep_log:
            self.transition_log.append((ts.key, start.value, finish.value, self._stimulus))
        method(self, ts, **kwargs)
        self._mark(ts)

    def _t_released_waiting(self, ts: Task) -> None:
        ts.state = TS.WAITING
        ts.waiting_on = set()
        if ts.broken is not None:
            self._fail(ts, None, ts.key, ts.broken)
            return
        for dep_key in ts.dependencies:
            dep = self.tasks[dep_key]
            dep.waiters.add(ts.key)
            if dep.state is TS.ERRED:
                ts.error_kind = dep.error_kind
                self._fail(ts, dep.error, dep.blame, dep.error_text)
                return
            if dep.state is not TS.MEMORY:
                ts.waiting_on.add(dep_key)
                if dep.state is TS.RELEASED:
                    heapq.heappush(self._wake_heap, (dep.priority, dep_key))
        if not ts.waiting_on:
            self._ready(ts)
        elif self.coassign:
            coassign.waiting(self, ts)
        self._wake_dependencies()

    def _wake_dependencies(self) -> None:
        """Released dependencies go to waiting in a loop, highest priority first, so that a
        long chain is not walked by recursion."""
        if self._waking:
            return
        self._waking = True
        try:
            while self._wake_heap:
                _, key = heapq.heappop(self._wake_heap)
                dep = self.tasks.get(key)
                if dep is not None and dep.state is TS.RELEASED and self._needed(dep):
                    self._transition(dep, TS.WAITING)
        finally:
            self._waking = False

    def _ready(self, ts: Task) -> None:
        """All inputs are in memory: run now, queue, or wait for an allowed worker."""
        if (
            self.queued
            and self.workers
            and not (ts.dependencies or ts.restrictions or ts.resources)
        ):
            # others already wait for room: join them (the fill at the end of this batch
            # places the highest priorities first) instead of asking every worker again
            self._transition(ts, TS.QUEUED)
            return
        candidates = self._candidates(ts)
        if not candidates:
            self._transition(ts, TS.NO_WORKER)
            return
        ws = self._decide_worker(ts, candidates)
        if ws is not None:
            self._transition(ts, TS.PROCESSING, worker=ws)
        else:
            self._transition(ts, TS.QUEUED)

    def _t_to_queued(self, ts: Task) -> None:
        self.no_worker.discard(ts.key)
        ts.state = TS.QUEUED
        if ts.restrictions or ts.resources:
            self.queued_restricted.add(ts.key)
        else:
            heapq.heappush(self.queued, (ts.priority, ts.key))

    def _t_ready_to_waiting(self, ts: Task) -> None:
        """An input of a ready task was lost: wait again, keeping the inputs still held."""
        self.queued_restricted.discard(ts.key)  # heap entries are skipped lazily
        self.no_worker.discard(ts.key)
        ts.state = TS.WAITING
        ts.waiting_on = {k for k in ts.dependencies if self.tasks[k].state is not TS.MEMORY}

    def _t_to_no_worker(self, ts: Task) -> None:
        self.queued_restricted.discard(ts.key)
        ts.state = TS.NO_WORKER
        self.no_worker.add(ts.key)

    def _t_to_processing(self, ts: Task, worker: WorkerInfo) -> None:
        self.queued_restricted.discard(ts.key)
        self.no_worker.discard(ts.key)
        ts.state = TS.PROCESSING
        ts.processing_on = worker.address
        ts.processing_since = self._now
        worker.processing.add(ts.key)
        ts.occupancy = self._estimate(ts)
        worker.occupancy += ts.occupancy
        for name, amount in (ts.resources or {}).items():
            worker.used_resources[name] = worker.used_resources.get(name, 0) + amount
        deps = {}
        for dep_key in ts.dependencies:
            dep = self.tasks[dep_key]
            deps[dep_key] = (sorted(dep.who_has), dep.nbytes, dep.in_redis)
        wants = ts.who_wants
        if self.direct_notify and wants:
            ts.notified = tuple(c for c in wants if c != FIRE_AND_FORGET)
        self._emit(
            ev.Compute(
                worker.address, ts.key, ts.priority, deps, ts.resources, list(ts.notified), ts.spec
            )
        )
        ts.spec = None
        if ts.dependents and self.coassign:
            coassign.dependents(self, ts, worker)

    def _stop_processing(self, ts: Task) -> WorkerInfo | None:
        ws = self.workers.get(ts.processing_on or "")
        ts.processing_on = None
        ts.notified = ()
        if self.stealing:
            self.stealing.pop(ts.key, None)
        if ws is not None and ts.key in ws.processing:
            ws.processing.discard(ts.key)
            ws.long_running.discard(ts.key)
            ws.occupancy = max(0.0, ws.occupancy - ts.occupancy) if ws.processing else 0.0
            for name, amount in (ts.resources or {}).items():
                ws.used_resources[name] = ws.used_resources.get(name, 0) - amount
        return ws

    def _t_processing_memory(self, ts: Task, worker: str, inline: bytes | None = None) -> None:
        told = ts.notified  # the worker notified these clients itself
        ts.waiting_on = set()  # co-assigned, finished before its input's report arrived
        self._stop_processing(ts)
        ts.state = TS.MEMORY
        ws = self.workers.get(worker)
        if ws is not None:
            ts.who_has.add(worker)
            ws.has_what.add(ts.key)
        self._after_memory(ts, inline, told)

    def _t_released_memory(self, ts: Task) -> None:
        """Data arrived from outside (scatter) rather than from running the task."""
        ts.state = TS.MEMORY
        self._after_memory(ts, None)

    def _after_memory(self, ts: Task, inline: bytes | None, told: tuple[str, ...] = ()) -> None:
        for client in list(ts.who_wants):
            if client == FIRE_AND_FORGET:
                self._unwant(FIRE_AND_FORGET, [ts.key])
            elif client not in told:
                self._notify_one(client, ts, inline)
        for dep_key in ts.dependents:
            dts = self.tasks.get(dep_key)
            if dts is None:
                continue
            if dts.state is TS.PROCESSING:  # co-assigned: it waited for us on our worker
                dts.waiting_on.discard(ts.key)
                continue
            if dts.state is not TS.WAITING:
                continue
            dts.waiting_on.discard(ts.key)
            if not dts.waiting_on:
                self._ready(dts)
        for dep_key in ts.dependencies:
            dep = self.tasks.get(dep_key)
            if dep is not None:
                dep.waiters.discard(ts.key)
                self._release_if_unneeded(dep)
        if ts.state is TS.MEMORY:
            self._release_if_unneeded(ts)

    def _fail(
        self, ts: Task, error: bytes | None, blame: str | None, error_text: str | None
    ) -> None:
        ts.error, ts.blame, ts.error_text = error, blame, error_text
        self._transition(ts, TS.ERRED)

    def _t_to_erred(self, ts: Task) -> None:
        """Mark ``ts`` erred; every dependent still waiting errs with the same failure."""
        # copied first: ``ts`` itself may be released (clearing its error) while we go
        failure = ts.error, ts.blame, ts.error_text, ts.error_kind
        stack = [ts]
        while stack:
            t = stack.pop()
            if t is not ts:
                if t.state not in (TS.WAITING, TS.QUEUED, TS.NO_WORKER) and not (
                    t.state is TS.PROCESSING and t.waiting_on
                ):  # co-assigned
                    continue
                t.error, t.blame, t.error_text, t.error_kind = failure
                if self.keep_log:
                    self.transition_log.append((t.key, t.state.value, "erred", self._stimulus))
            self._enter_erred(t)
            stack.extend(d for k in t.dependents if (d := self.tasks.get(k)) is not None)

    def _enter_erred(self, ts: Task) -> None:
        if ts.state is TS.PROCESSING:
            worker, coassigned = ts.processing_on, bool(ts.waiting_on)
            self._stop_processing(ts)
            if coassigned and worker in self.workers:  # it waits there for data never coming
                self._emit(ev.FreeKeys(worker, [ts.key]))
        self.queued_restricted.discard(ts.key)
        self.no_worker.discard(ts.key)
        ts.state = TS.ERRED
        ts.waiting_on = set()
        self._mark(ts)
        for client in list(ts.who_wants):
            if client == FIRE_AND_FORGET:
                self._unwant(FIRE_AND_FORGET, [ts.key])
            else:
                self._notify_one(client, ts)
        for dep_key in ts.dependencies:
            dep = self.tasks.get(dep_key)
            if dep is not None:
                dep.waiters.discard(ts.key)
                self._release_if_unneeded(dep)

    def _t_to_released(self, ts: Task) -> None:
        start = ts.state
        if start is TS.PROCESSING:
            worker = ts.processing_on
            self._stop_processing(ts)
            if worker in self.workers:
                self._emit(ev.FreeKeys(worker, [ts.key]))
        elif start is TS.MEMORY:
            self._free_data(ts)
        elif start is TS.QUEUED:
            self.queued_restricted.discard(ts.key)  # heap entries are skipped lazily
        elif start is TS.NO_WORKER:
            self.no_worker.discard(ts.key)
        ts.state = TS.RELEASED
        ts.error = ts.blame = ts.error_text = ts.error_kind = None
        for dep_key in ts.dependencies:
            dep = self.tasks.get(dep_key)
            if dep is not None:
                dep.waiters.discard(ts.key)
        for dep_key in ts.dependencies:
            dep = self.tasks.get(dep_key)
            if dep is not None and dep.state is not TS.RELEASED:
                self._release_if_unneeded(dep)
        ts.waiting_on = set()
        if start is TS.PROCESSING and ts.dependents:
            coassign.undo(self, ts)

    def _free_data(self, ts: Task) -> None:
        for address in sorted(ts.who_has):
            ws = self.workers.get(address)
            if ws is not None:
                ws.has_what.discard(ts.key)
                self._emit(ev.FreeKeys(address, [ts.key]))
        ts.who_has = set()
        if ts.in_redis:
            self._emit(ev.DropResult(ts.key))
            ts.in_redis = False

    def _t_released_forgotten(self, ts: Task) -> None:
        ts.state = TS.FORGOTTEN
        del self.tasks[ts.key]
        self._emit(ev.ForgetTask(ts.key))
        for dep_key in ts.dependencies:
            dep = self.tasks.get(dep_key)
            if dep is not None:
                dep.dependents.discard(ts.key)
                self._forgetting.run(dep, self._forget_one)  # queued: we are inside its loop

    # -- placement -----------------------------------------------------------------------
    def _candidates(self, ts: Task) -> list[WorkerInfo]:
        workers = list(self.workers.values())
        if ts.resources:
            workers = [
                w
                for w in workers
                if all(w.resources.get(r, 0) >= n for r, n in ts.resources.items())
            ]
        if ts.restrictions:
            allowed = [
                w for w in workers if w.address in ts.restrictions or w.name in ts.restrictions
            ]
            if allowed or not ts.loose:
                return allowed
        return workers

    def _estimate(self, ts: Task) -> float:
        return self.durations.get(ts.prefix, DEFAULT_DURATION)

    def _resources_free(self, ws: WorkerInfo, ts: Task) -> bool:
        for name, amount in (ts.resources or {}).items():
            if ws.used_resources.get(name, 0) + amount > ws.resources.get(name, 0):
                return False
        return True

    def _has_room(self, ws: WorkerInfo, ts: Task) -> bool:
        if ws.status != "running":
            return False
        if ts.resources and not self._resources_free(ws, ts):
            return False
        n = len(ws.processing) - len(ws.long_running)
        if n < ws.nthreads:
            return True
        if n >= ws.nthreads * MAX_IN_FLIGHT_PER_THREAD:
            return False
        return ws.occupancy + self._estimate(ts) <= ws.nthreads * TARGET_SECONDS_PER_THREAD

    def _decide_worker(self, ts: Task, candidates: list[WorkerInfo]) -> WorkerInfo | None:
        """The candidate holding most input bytes, then the least loaded; None to queue."""
        if ts.dependencies:
            local: dict[str, int] = {}
            for dep_key in ts.dependencies:
                dep = self.tasks[dep_key]
                for address in dep.who_has:
                    local[address] = local.get(address, 0) + dep.nbytes
            best = max(candidates, key=lambda w: (local.get(w.address, 0), -_load(w)))
            if (
                local.get(best.address, 0) >= LOCALITY_BYTES
                and not ts.resources
                and best.status == "running"
            ):
                return best
            if self._has_room(best, ts):
                return best
        roomy = [w for w in candidates if self._has_room(w, ts)]
        if not roomy:
            return None
        return min(roomy, key=_load)

    def _fill_all_workers(self) -> None:
        """Hand queued tasks to workers with room, highest priority first."""
        if not self.workers or not (self.queued or self.queued_restricted):
            return
        if self.queued_restricted:
            for key in sorted(self.queued_restricted, key=lambda k: self.tasks[k].priority):
                ts = self.tasks[key]
                roomy = [w for w in self._candidates(ts) if self._has_room(w, ts)]
                if roomy:
                    self._transition(ts, TS.PROCESSING, worker=min(roomy, key=_load))
        while self.queued:
            priority, key = self.queued[0]
            ts = self.tasks.get(key)
            if ts is None or ts.state is not TS.QUEUED or ts.priority != priority:
                heapq.heappop(self.queued)
                continue
            roomy = [w for w in self.workers.values() if self._has_room(w, ts)]
            if not roomy:
                return
            heapq.heappop(self.queued)
            self._transition(ts, TS.PROCESSING, worker=min(roomy, key=_load))

    def _learn_duration(self, key: str, duration: float) -> None:
        prefix = key_prefix(key)
        old = self.durations.get(prefix)
        self.durations[prefix] = duration if old is None else 0.8 * old + 0.2 * duration

    # -- output --------------------------------------------------------------------------
    def _emit(self, instruction: ev.Instruction) -> None:
        self._out.append(instruction)

    def _mark(self, ts: Task) -> None:
        self._dirty.add(ts.key)

    def _notify_one(self, client: str, ts: Task, inline: bytes | None = None) -> None:
        if ts.state is TS.MEMORY:
            info: dict[str, Any] = {
                "nbytes": ts.nbytes,
                "redis": ts.in_redis,
                "who_has": sorted(ts.who_has),
                "type": ts.type_name,
            }
            if inline is not None:
                info["inline"] = inline
            self._emit(ev.Notify(client, ts.key, "memory", info))
        elif ts.state is TS.ERRED:
            info = {"blame": ts.blame}
            if ts.error is not None:
                info["error"] = ts.error
            if ts.error_text is not None:
                info["error_text"] = ts.error_text
            if ts.error_kind is not None:
                info["kind"] = ts.error_kind
            self._emit(ev.Notify(client, ts.key, "erred", info))

    def _flush_dirty(self) -> None:
        for key in self._dirty:
            ts = self.tasks.get(key)
            if ts is not None:
                self._emit(ev.PersistTask(key, task_record(ts)))
        self._dirty.clear()

    # -- introspection -------------------------------------------------------------------
    def validate_state(self) -> None:
        """Check every cross-reference; tests call this after each scenario."""
        for key, ts in self.tasks.items():
            assert ts.key == key
            for dep in ts.dependencies:
                if dep in self.tasks:
                    assert key in self.tasks[dep].dependents, (key, dep)
            if ts.state is TS.PROCESSING:
                assert ts.processing_on in self.workers, ts
                assert key in self.workers[ts.processing_on].processing
            else:
                assert ts.processing_on is None, ts
            if ts.state is TS.MEMORY:
                assert ts.who_has or ts.in_redis, f"{key} in memory nowhere"
                for dep in ts.dependents:
                    d = self.tasks.get(dep)
                    assert d is None or key not in d.waiting_on
            else:
                assert not ts.who_has, f"{key} is {ts.state.value} but held by {ts.who_has}"
            if ts.state is TS.WAITING:
                assert ts.waiting_on, f"{key} waiting on nothing"
                for dep in ts.waiting_on:
                    assert self.tasks[dep].state is not TS.MEMORY, (key, dep)
            if ts.state is TS.QUEUED and not (ts.restrictions or ts.resources):
                assert any(k == key for _, k in self.queued), key
            if ts.state is TS.NO_WORKER:
                assert key in self.no_worker
            for client in ts.who_wants:
                assert key in self.clients.get(client, ()), (key, client)
        for client, keys in self.clients.items():
            for key in keys:
                assert key in self.tasks and client in self.tasks[key].who_wants, (client, key)
        for address, ws in self.workers.items():
            for key in ws.processing:
                assert self.tasks[key].processing_on == address
            for key in ws.has_what:
                assert address in self.tasks[key].who_has, (address, key)
            assert ws.long_running <= ws.processing, (address, ws.long_running - ws.processing)
            for key in ws.processing:  # co-assigned tasks wait only for inputs computed there
                for dep in self.tasks[key].waiting_on:
                    assert self.tasks[dep].processing_on == address, (key, dep)
        for key, (victim, _) in self.stealing.items():
            assert self.tasks[key].processing_on == victim, (key, victim)

    def story(self, key: str) -> list[tuple[str, str, str, str]]:
        return [entry for entry in self.transition_log if entry[0] == key]


def _likely_running(ws: WorkerInfo, tasks: dict[str, Task]) -> set[str]:
    """The tasks a dead worker was probably running: its seceded ones and, of the others,
    as many as it has threads, highest priority first (it runs them in that order). Only
    these become suspects: a worker holds many more quick tasks than it runs at once, and
    blaming all of them would err innocent tasks with KilledWorker."""
    waiting = sorted(
        (k for k in ws.processing if k not in ws.long_running), key=lambda k: tasks[k].priority
    )
    return set(waiting[: ws.nthreads]) | ws.long_running


def _load(ws: WorkerInfo) -> float:
    return (len(ws.processing) - len(ws.long_running)) / ws.nthreads


_STATE_NAMES = {s: s.value for s in TaskState}


def task_record(ts: Task) -> dict[str, Any]:
    """What is stored in the ``tasks`` hash (msgpack): enough to answer who_has and rebuild."""
    record: dict[str, Any] = {"s": _STATE_NAMES[ts.state], "p": ts.priority}
    if ts.dependencies:
        record["d"] = sorted(ts.dependencies)
    if ts.who_has:
        record["wh"] = sorted(ts.who_has)
    if ts.nbytes:
        record["nb"] = ts.nbytes
    if ts.in_redis:
        record["r"] = 1
    if ts.who_wants:
        record["ww"] = sorted(ts.who_wants)
    if ts.processing_on:
        record["on"] = ts.processing_on
    if ts.type_name:
        record["t"] = ts.type_name
    if ts.restrictions:
        record["w"] = sorted(ts.restrictions)
    if ts.loose:
        record["l"] = 1
    if ts.retries:
        record["rt"] = ts.retries
    if ts.resources:
        record["res"] = ts.resources
    if ts.state is TS.ERRED:
        record["b"] = ts.blame
        if ts.error_text is not None:
            record["et"] = ts.error_text
        if ts.error_kind is not None:
            record["ek"] = ts.error_kind
    if ts.suspicious:
        record["k"] = ts.suspicious
    return record


_T = Callable[..., None]
_TRANSITIONS: dict[tuple[TS, TS], _T] = {
    (TS.RELEASED, TS.WAITING): SchedulerState._t_released_waiting,
    (TS.RELEASED, TS.MEMORY): SchedulerState._t_released_memory,
    (TS.RELEASED, TS.FORGOTTEN): SchedulerState._t_released_forgotten,
    (TS.WAITING, TS.PROCESSING): SchedulerState._t_to_processing,
    (TS.WAITING, TS.QUEUED): SchedulerState._t_to_queued,
    (TS.WAITING, TS.NO_WORKER): SchedulerState._t_to_no_worker,
    (TS.WAITING, TS.RELEASED): SchedulerState._t_to_released,
    (TS.WAITING, TS.ERRED): SchedulerState._t_to_erred,
    (TS.QUEUED, TS.PROCESSING): SchedulerState._t_to_processing,
    (TS.QUEUED, TS.NO_WORKER): SchedulerState._t_to_no_worker,
    (TS.QUEUED, TS.RELEASED): SchedulerState._t_to_released,
    (TS.QUEUED, TS.ERRED): SchedulerState._t_to_erred,
    (TS.NO_WORKER, TS.ERRED): SchedulerState._t_to_erred,
    (TS.NO_WORKER, TS.QUEUED): SchedulerState._t_to_queued,
    (TS.NO_WORKER, TS.PROCESSING): SchedulerState._t_to_processing,
    (TS.NO_WORKER, TS.RELEASED): SchedulerState._t_to_released,
    (TS.QUEUED, TS.WAITING): SchedulerState._t_ready_to_waiting,
    (TS.NO_WORKER, TS.WAITING): SchedulerState._t_ready_to_waiting,
    (TS.PROCESSING, TS.MEMORY): SchedulerState._t_processing_memory,
    (TS.PROCESSING, TS.ERRED): SchedulerState._t_to_erred,
    (TS.PROCESSING, TS.RELEASED): SchedulerState._t_to_released,
    (TS.MEMORY, TS.RELEASED): SchedulerState._t_to_released,
    (TS.ERRED, TS.RELEASED): SchedulerState._t_to_released,
}

_HANDLERS: dict[type, Callable[[SchedulerState, Any], None]] = {
    ev.StateRestored: recovery.on_restored,
    ev.MissingData: SchedulerState._on_missing_data,
    ev.RestartRequested: SchedulerState._on_restart,
    ev.GraphSubmitted: SchedulerState._on_graph,
    ev.KeysReleased: SchedulerState._on_released,
    ev.KeysCancelled: SchedulerState._on_cancelled,
    ev.RetryRequested: SchedulerState._on_retry,
    ev.ClientJoined: SchedulerState._on_client_joined,
    ev.ClientLeft: SchedulerState._on_client_left,
    ev.WorkerJoined: SchedulerState._on_worker_joined,
    ev.WorkerLeft: SchedulerState._on_worker_left,
    ev.TasksFinished: SchedulerState._on_finished,
    ev.TaskErred: SchedulerState._on_erred,
    ev.DataScattered: SchedulerState._on_scattered,
    ev.DataReplicated: SchedulerState._on_replicated,
    ev.TaskSeceded: SchedulerState._on_seceded,
    ev.StealResponse: stealing.answered,
    ev.WorkerStatusChanged: dataops.on_worker_status,
    ev.DropReplicas: dataops.on_drop_replicas,
    ev.Barrier: dataops.on_barrier,
}
