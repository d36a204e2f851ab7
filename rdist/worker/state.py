"""The worker's decisions, free of I/O: events in, instructions out.

:meth:`WorkerState.handle_stimulus` takes the events the worker's shell made of stream
entries and thread completions (:mod:`rdist.worker.events`) and answers with instructions:
run these tasks, fetch these inputs, drop this data, report these outcomes. It owns every
decision a worker makes -- which ready task runs next (priority order within the thread
budget ``nthreads`` and the declared ``resources``), the slot accounting of seceded and
rejoining tasks, which task is quick enough to run on the thread that received it, what a
steal request is answered, what happens to a task freed while it runs. Threads, locks and
clocks stay in the shell; time arrives on the events.

Every key the worker knows is a :class:`WTask`: tasks it runs and inputs it fetched alike.
Every state change goes through one table of ``(start, finish)`` transitions (an illegal
pair raises :class:`InvalidTransition`) and is logged, so :meth:`story` can tell a key's
history; :meth:`validate_state` checks every cross-reference (the tests call it).

A key stays while the scheduler wants it here (``wanted``: assigned, or a replica it was
told of) or a local task still needs it (``dependents``); once neither holds, it is
forgotten, or cancelled while it still runs (its result is then dropped).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from rdist.protocol.wire import DepInfo, StoryRow
from rdist.worker.events import (
    ComputeTask,
    ComputeTasks,
    DataArrived,
    Event,
    Execute,
    ExecuteFailure,
    ExecuteSuccess,
    FreeKeys,
    GatherDep,
    GatherDepFailed,
    GatherDepSuccess,
    Instruction,
    Pause,
    RejoinGranted,
    RejoinRequest,
    ReleaseData,
    ReportError,
    ReportInMemory,
    ReportMissing,
    ReportReplicas,
    ReportRescheduled,
    ReportSeceded,
    ReportStolen,
    ReportSuccess,
    ResetState,
    Secede,
    StealRequest,
    Unpause,
)

#: Tasks whose kind (key prefix) is known to take less than this may run on the thread
#: that received them (see ``Execute.inline``): a thread hand-off costs more than such a task.
INLINE_SECONDS = 0.002
#: Transitions kept for :meth:`WorkerState.story` (a bounded, always-on log).
LOG_LENGTH = 100_000


#: The inputs of a task that has none, or that ran (one shared, read-only mapping).
NO_DEPS: Mapping[str, DepInfo] = MappingProxyType({})
_NONE: frozenset[str] = frozenset()


class InvalidTransition(RuntimeError):
    pass


class WTaskState(str, Enum):
    RELEASED = "released"  #: just made, not placed yet (never kept)
    WAITING = "waiting"  #: to run here once its inputs are local
    READY = "ready"  #: inputs local, queued for a thread slot
    EXECUTING = "executing"  #: running, holding a thread slot
    LONG_RUNNING = "long-running"  #: running after secede(): no slot held
    FLIGHT = "flight"  #: an input being fetched from a peer
    MEMORY = "memory"  #: its value is stored here
    ERROR = "error"  #: raised and reported; kept only while tasks here wait for it
    CANCELLED = "cancelled"  #: released while running: its result is dropped when it ends
    FORGOTTEN = "forgotten"  #: gone (never kept)


TS = WTaskState
#: States of a task that a thread is running.
RUNNING = frozenset({TS.EXECUTING, TS.LONG_RUNNING, TS.CANCELLED})


@dataclass(slots=True, eq=False)
class WTask:
    key: str
    state: WTaskState = TS.RELEASED
    priority: tuple[Any, ...] = ()
    #: input key -> where it is (from the compute action; :data:`NO_DEPS` once it ran)
    deps: Mapping[str, DepInfo] = field(default_factory=lambda: NO_DEPS)
    #: the loaded spec, opaque here (handed back in :class:`Execute`)
    spec: Any = None
    #: clients the shell tells directly when the result is stored
    clients: list[str] | None = None
    resources: dict[str, float] | None = None
    #: where to fetch it from, while it is an input in flight
    where: DepInfo | None = None
    assigned: bool = False  #: the scheduler asked us to compute it (and hear of it)
    wanted: bool = False  #: the scheduler wants it here (assigned, or a known replica)
    # The three links are None while empty, and made on first use: most tasks have no
    # inputs or no local dependents, and an empty set costs 216 bytes (a worker holding a
    # million results would spend 650 MB on empty sets).
    dependencies: set[str] | None = None  #: inputs, linked until it ran
    waiting_for_data: set[str] | None = None  #: inputs not local yet
    dependents: set[str] | None = None  #: local tasks needing it
    holds_slot: bool = False  #: counts against ``nthreads``
    holds_resources: bool = False  #: counts against the declared resources


class WorkerState:
    """What the worker knows of its tasks and data, and what it decides about them."""

    def __init__(
        self,
        nthreads: int = 1,
        resources: dict[str, float] | None = None,
        inline_seconds: float = INLINE_SECONDS,
        log_length: int = LOG_LENGTH,
    ) -> None:
        self.nthreads = max(1, nthreads)
        self.total_resources = dict(resources or {})
        self.inline_seconds = inline_seconds
        self.tasks: dict[str, WTask] = {}
        self.running = 0  #: thread slots in use
        self.used: dict[str, float] = {}  #: resources in use
        self.paused = False
        #: key prefix -> duration of its latest successful run (decides ``Execute.inline``)
        self.durations: dict[str, float] = {}
        #: (key, start, finish, stimulus_id, time) of every transition, newest last
        self.log: deque[tuple[str, WTaskState, WTaskState, str, float]] = deque(maxlen=log_length)
        self._ready: list[tuple[tuple[Any, ...], int, WTask]] = []
        self._seq = itertools.count()
        self._rejoining: deque[str] = deque()  #: seceded tasks waiting for a slot, in order
        self._fetch: dict[str, DepInfo] = {}  #: inputs to fetch, sent once per stimulus
        self._woken: set[str] = set()  #: made ready by a finished task in this stimulus
        self._drop: list[str] = []  #: values to drop, sent once per stimulus
        self._out: list[Instruction] = []
        self._stimulus = ""
        self._time = 0.0

    # -- the interface -------------------------------------------------------------------------
    def handle_stimulus(self, *events: Event) -> list[Instruction]:
        out = self._out = []
        for event in events:
            self._stimulus, self._time = event.stimulus_id, event.time
            _HANDLERS[type(event)](self, event)
        self._schedule()
        self._woken.clear()
        if self._fetch:
            out.append(GatherDep(self._stimulus, self._fetch))
            self._fetch = {}
        if self._drop:
            out.append(ReleaseData(self._stimulus, self._drop))
            self._drop = []
        return out

    def story(self, *keys: str) -> list[StoryRow]:
        """The logged transitions of ``keys``, oldest first."""
        wanted = set(keys)
        return [
            StoryRow(key, start.value, finish.value, sid, t)
            for key, start, finish, sid, t in self.log
            if key in wanted
        ]

    # read-only questions the shell asks while it loads a batch
    def wants_spec(self, key: str) -> bool:
        """Whether a compute action for ``key`` needs its spec loaded: it makes a new task,
        runs an erred one again, or may run an input in flight (if its fetch fails)."""
        ts = self.tasks.get(key)
        return ts is None or ts.state is TS.FLIGHT or ts.state is TS.ERROR

    def wanting_specs(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` whose compute action needs its spec (see :meth:`wants_spec`)."""
        tasks = self.tasks
        wanting = set()
        for key in keys:
            ts = tasks.get(key)
            if ts is None or ts.state is TS.FLIGHT or ts.state is TS.ERROR:
                wanting.add(key)
        return wanting

    def has_data(self, key: str) -> bool:
        ts = self.tasks.get(key)
        return ts is not None and ts.state is TS.MEMORY

    def is_quick(self, key: str) -> bool:
        duration = self.durations.get(key.rpartition("-")[0])
        return duration is not None and duration < self.inline_seconds

    @property
    def have(self) -> set[str]:
        """Keys whose value is here (for inspection; decisions use the task states)."""
        return {k for k, ts in self.tasks.items() if ts.state is TS.MEMORY}

    @property
    def fetching(self) -> set[str]:
        return {k for k, ts in self.tasks.items() if ts.state is TS.FLIGHT}

    def count(self, *states: WTaskState) -> int:
        return sum(1 for ts in self.tasks.values() if ts.state in states)

    def validate_state(self) -> None:
        """Raise AssertionError unless every cross-reference holds (tests call this)."""
        queued = {id(item[2]) for item in self._ready}
        running = 0
        used: dict[str, float] = {}
        for key, ts in self.tasks.items():
            assert ts.key == key, (key, ts.key)
            self._validate_task(ts, queued)
            running += ts.holds_slot
            if ts.holds_resources:
                for name, amount in (ts.resources or {}).items():
                    used[name] = used.get(name, 0.0) + amount
        assert running == self.running <= self.nthreads, (running, self.running)
        for name in set(used) | set(self.used):
            assert abs(used.get(name, 0.0) - self.used.get(name, 0.0)) < 1e-9, name
            assert used.get(name, 0.0) <= self.total_resources.get(name, 0.0) + 1e-9, name
        for key in self._rejoining:
            waiting = self.tasks.get(key)
            assert waiting is None or not waiting.holds_slot, key
        assert not self._fetch and not self._drop

    def _validate_task(self, ts: WTask, queued: set[int]) -> None:
        key, state = ts.key, ts.state
        assert state not in (TS.RELEASED, TS.FORGOTTEN), (key, state)
        if state is TS.EXECUTING:
            assert ts.holds_slot, key
        if ts.holds_slot:
            assert state is TS.EXECUTING or state is TS.CANCELLED, (key, state)
        assert not ts.holds_resources or state in RUNNING, (key, state)
        dependencies, waiting, dependents = (
            ts.dependencies or _NONE,
            ts.waiting_for_data or _NONE,
            ts.dependents or _NONE,
        )
        assert waiting <= dependencies, key
        assert (state is TS.WAITING) == bool(waiting), (key, state)
        if state is TS.READY:
            assert id(ts) in queued, key
        if state is TS.FLIGHT:
            assert ts.where is not None, key
        if state in (TS.MEMORY, TS.ERROR, TS.CANCELLED):
            assert not ts.dependencies, (key, state)
        if state is TS.ERROR:
            assert ts.dependents and not ts.wanted, key
        if state is TS.CANCELLED:
            assert not ts.dependents and not ts.wanted, key
        elif not ts.wanted:
            assert ts.dependents, f"{key!r} ({state.value}) is neither wanted nor needed"
        for dep in dependencies:
            dts = self.tasks.get(dep)
            assert dts is not None and key in (dts.dependents or _NONE), (key, dep)
            assert (dts.state is not TS.MEMORY) == (dep in waiting), (key, dep)
        for dependent in dependents:
            dts = self.tasks.get(dependent)
            assert dts is not None and key in (dts.dependencies or _NONE), (key, dependent)

    # -- event handlers ------------------------------------------------------------------------
    def _on_compute(self, ev: ComputeTask) -> None:
        self._compute(ev.key, ev.priority, ev.deps, ev.resources, ev.clients, ev.spec)

    def _on_computes(self, ev: ComputeTasks) -> None:
        specs, compute = ev.specs, self._compute
        for a in ev.actions:
            resources, clients = a.resources or None, a.clients or None
            compute(a.key, a.priority, a.deps, resources, clients, specs.get(a.key))

    def _compute(
        self,
        key: str,
        priority: tuple[Any, ...],
        deps: dict[str, DepInfo],
        resources: dict[str, float] | None,
        clients: list[str] | None,
        spec: Any,
    ) -> None:
        ts = self.tasks.get(key)
        if ts is None:
            ts = self.tasks[key] = WTask(key)
        elif ts.state is TS.MEMORY:
            ts.wanted = True
            self._out.append(ReportInMemory(self._stimulus, key, clients))
            return
        elif ts.state is TS.ERROR:  # computed again (a retry)
            self._transition(ts, TS.RELEASED)
        elif ts.state is not TS.FLIGHT:  # already here: waiting, ready, running
            ts.assigned = ts.wanted = True
            ts.clients = clients
            if ts.state is TS.CANCELLED:  # its running execution counts again
                self._resume(ts)
            return
        ts.priority, ts.deps, ts.spec = priority, deps, spec
        ts.clients, ts.resources = clients, resources
        ts.assigned = ts.wanted = True
        if ts.state is TS.RELEASED:
            self._place(ts)
        # an input in flight: its fetch decides (the value comes, or it runs here)

    def _on_free(self, ev: FreeKeys) -> None:
        for key in ev.keys:
            ts = self.tasks.get(key)
            if ts is not None:
                ts.wanted = ts.assigned = False
                ts.clients = None
                self._release_if_unneeded(ts)

    def _on_steal(self, ev: StealRequest) -> None:
        ts = self.tasks.get(ev.key)
        ok = (
            ts is not None
            and ts.assigned
            and ts.state in (TS.WAITING, TS.READY)
            and not ts.dependents  # a co-assigned task here waits for it
        )
        if ok and ts is not None:
            self._transition(ts, TS.FORGOTTEN)
        self._out.append(ReportStolen(self._stimulus, ev.key, ok))

    def _on_data(self, ev: DataArrived) -> None:
        arrived = self._arrive(ev.keys)
        if ev.replica and arrived:
            self._out.append(ReportReplicas(self._stimulus, arrived))

    def _on_gathered(self, ev: GatherDepSuccess) -> None:
        arrived = self._arrive([k for k in ev.keys if self._in_flight(k)])
        self._drop += [k for k in ev.keys if k not in self.tasks]  # nobody needs them now
        if arrived:
            self._out.append(ReportReplicas(self._stimulus, arrived))

    def _on_gather_failed(self, ev: GatherDepFailed) -> None:
        missing: dict[str, list[str]] = {}  #: dependent -> its inputs that failed
        for key in ev.keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state is TS.FLIGHT and not ts.assigned:
                for dependent in ts.dependents or ():
                    missing.setdefault(dependent, []).append(key)
        for key in ev.keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state is not TS.FLIGHT:
                continue
            if ts.assigned:  # we were asked to compute it anyway: run it here
                self._transition(ts, TS.RELEASED)
                self._place(ts)
                continue
            self._transition(ts, TS.FORGOTTEN)
            self._fail_dependents(ts, ev.tried, missing)

    def _on_success(self, ev: ExecuteSuccess) -> None:
        ts = self.tasks.get(ev.key)
        if ts is None or ts.state not in RUNNING:  # abandoned (e.g. by a reset)
            self._drop.append(ev.key)
            return
        self.durations[ev.key.rpartition("-")[0]] = ev.duration
        if ts.state is TS.CANCELLED:
            self._drop.append(ev.key)
            self._transition(ts, TS.FORGOTTEN)
            return
        if ts.assigned:
            self._out.append(ReportSuccess(self._stimulus, ev.key, ev.row, ts.clients))
        self._transition(ts, TS.MEMORY)

    def _on_failure(self, ev: ExecuteFailure) -> None:
        ts = self.tasks.get(ev.key)
        if ts is None or ts.state not in RUNNING:
            return
        if ts.state is TS.CANCELLED:
            self._transition(ts, TS.FORGOTTEN)
            return
        if ts.assigned:
            report = (
                ReportRescheduled(self._stimulus, ev.key)
                if ev.reschedule
                else ReportError(self._stimulus, ev.key, ev.error, ev.duration)
            )
            self._out.append(report)
        # a rescheduled task is kept like an erred one: assigned here again, it runs again
        self._transition(ts, TS.ERROR)

    def _on_secede(self, ev: Secede) -> None:
        ts = self.tasks.get(ev.key)
        if ts is None or not ts.holds_slot:
            return
        if ts.state is TS.EXECUTING:
            if ts.assigned:
                self._out.append(ReportSeceded(self._stimulus, ev.key))
            self._transition(ts, TS.LONG_RUNNING)
        else:  # cancelled meanwhile: still give the slot back
            self._give_back_slot(ts)

    def _on_rejoin(self, ev: RejoinRequest) -> None:
        ts = self.tasks.get(ev.key)
        if ts is None or ts.holds_slot or ts.state not in RUNNING:
            self._out.append(RejoinGranted(self._stimulus, ev.key))  # nothing to wait for
        elif ev.key not in self._rejoining:
            self._rejoining.append(ev.key)

    def _on_pause(self, ev: Pause) -> None:
        self.paused = True

    def _on_unpause(self, ev: Unpause) -> None:
        self.paused = False

    def _on_reset(self, ev: ResetState) -> None:
        for ts in self.tasks.values():  # unlinked first: nothing cascades
            ts.dependencies = ts.waiting_for_data = ts.dependents = None
            ts.wanted = ts.assigned = False
            ts.clients = None
        for ts in list(self.tasks.values()):
            if ts.state is TS.EXECUTING or ts.state is TS.LONG_RUNNING:
                self._transition(ts, TS.CANCELLED)
            elif ts.state is not TS.CANCELLED:
                self._transition(ts, TS.FORGOTTEN)
        self._ready.clear()
        self._fetch.clear()

    # -- decisions -----------------------------------------------------------------------------
    def _place(self, ts: WTask) -> None:
        """Link a task to be computed here to its inputs; fetch those nobody makes here."""
        if not ts.deps:
            self._transition(ts, TS.READY)
            return
        dependencies: set[str] = set()
        waiting: set[str] = set()
        ts.dependencies, ts.waiting_for_data = dependencies, waiting
        for dep, info in ts.deps.items():
            dts = self.tasks.get(dep)
            if dts is None:
                dts = self.tasks[dep] = WTask(dep, where=info)
                self._transition(dts, TS.FLIGHT)
            elif dts.state is TS.CANCELLED:  # needed after all: its execution counts again
                self._resume(dts)
            dependencies.add(dep)
            if dts.dependents is None:
                dts.dependents = {ts.key}
            else:
                dts.dependents.add(ts.key)
            if dts.state is not TS.MEMORY:
                waiting.add(dep)
        if not waiting:
            ts.waiting_for_data = None
        self._transition(ts, TS.WAITING if waiting else TS.READY)

    def _resume(self, ts: WTask) -> None:
        self._transition(ts, TS.EXECUTING if ts.holds_slot else TS.LONG_RUNNING)

    def _in_flight(self, key: str) -> bool:
        ts = self.tasks.get(key)
        return ts is not None and ts.state is TS.FLIGHT

    def _arrive(self, keys: Iterable[str]) -> list[str]:
        """Values now stored here: unknown keys and inputs in flight go to memory."""
        arrived = []
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = WTask(key)
            elif ts.state is not TS.FLIGHT:
                if ts.state is TS.MEMORY:
                    ts.wanted = True
                continue  # being computed here: that run stores it too
            ts.wanted = True
            if ts.assigned:
                self._out.append(ReportInMemory(self._stimulus, key, ts.clients))
            self._transition(ts, TS.MEMORY)
            arrived.append(key)
        return arrived

    def _release_if_unneeded(self, ts: WTask) -> None:
        if ts.wanted or ts.dependents:
            return
        if ts.state is TS.EXECUTING or ts.state is TS.LONG_RUNNING:
            self._transition(ts, TS.CANCELLED)
        elif ts.state is not TS.CANCELLED:
            self._transition(ts, TS.FORGOTTEN)

    def _fail_dependents(self, ts: WTask, tried: list[str], missing: dict[str, list[str]]) -> None:
        """``ts`` (forgotten just now) will not come: the tasks here waiting for it cannot
        start, nor can what waits for them. Not their fault: the scheduler hears they are
        missing inputs and finds (or recomputes) them; ``missing`` names, per dependent,
        every input it lost in this stimulus."""
        stack, doomed = [ts], []
        while stack:
            failed = stack.pop()
            dependents, failed.dependents = failed.dependents or (), None
            for key in dependents:
                dts = self.tasks.get(key)
                if dts is None or dts.state is not TS.WAITING or dts in doomed:
                    continue
                if dts.assigned:
                    deps = missing.get(key) or [failed.key]
                    self._out.append(ReportMissing(self._stimulus, key, deps, tried))
                dts.wanted = dts.assigned = False
                doomed.append(dts)
                stack.append(dts)
        for dts in doomed:
            if self.tasks.get(dts.key) is dts:
                self._transition(dts, TS.FORGOTTEN)

    def _unlink_dependent(self, dts: WTask, key: str) -> None:
        if dts.dependents is not None:
            dts.dependents.discard(key)
            if not dts.dependents:
                dts.dependents = None
        if dts.state is not TS.FORGOTTEN and self.tasks.get(dts.key) is dts:
            self._release_if_unneeded(dts)

    def _unlink_inputs(self, ts: WTask) -> None:
        """``ts`` ran (or is gone): its inputs no longer need to stay for it."""
        if not ts.dependencies:
            return
        deps, ts.dependencies, ts.waiting_for_data = ts.dependencies, None, None
        for dep in deps:
            dts = self.tasks.get(dep)
            if dts is not None:
                self._unlink_dependent(dts, ts.key)

    def _wake_dependents(self, ts: WTask) -> None:
        for key in ts.dependents or ():
            dts = self.tasks[key]
            waiting = dts.waiting_for_data
            if waiting is not None:
                waiting.discard(ts.key)
                if waiting:
                    continue
                dts.waiting_for_data = None
            if dts.state is TS.WAITING:
                self._woken.add(key)
                self._transition(dts, TS.READY)

    # -- thread slots and resources ------------------------------------------------------------
    def _schedule(self) -> None:
        """Hand free slots out: to rejoining tasks first, then to ready tasks by priority."""
        while self._rejoining and self.running < self.nthreads:
            ts = self.tasks.get(self._rejoining.popleft())
            if ts is None or ts.holds_slot or ts.state not in RUNNING:
                continue
            self._take_slot(ts)
            if ts.state is TS.LONG_RUNNING:
                self._transition(ts, TS.EXECUTING)
            self._out.append(RejoinGranted(self._stimulus, ts.key))
        if self.paused:
            return
        while self.running < self.nthreads and self._ready:
            ts = self._pop_ready()
            if ts is None:
                break
            ts.holds_slot = True  # (_take_slot, inline: once per task)
            self.running += 1
            if ts.resources:
                ts.holds_resources = True
                for name, amount in ts.resources.items():
                    self.used[name] = self.used.get(name, 0.0) + amount
            self._transition(ts, TS.EXECUTING)
            inline = ts.key not in self._woken and self.is_quick(ts.key)
            self._out.append(Execute(self._stimulus, ts.key, ts.spec, inline))

    def _pop_ready(self) -> WTask | None:
        """The highest-priority ready task whose resources are free (stale entries of
        tasks that left the ready state are dropped on the way)."""
        blocked = []
        found = None
        heap = self._ready
        while heap:
            item = heapq.heappop(heap)
            ts = item[2]
            if ts.state is not TS.READY or self.tasks.get(ts.key) is not ts:
                continue
            if not ts.resources or self._fits(ts.resources):
                found = ts
                break
            blocked.append(item)  # waits for a resource another task holds
        for item in blocked:
            heapq.heappush(heap, item)
        return found

    def _fits(self, resources: dict[str, float]) -> bool:
        return all(
            self.used.get(n, 0.0) + a <= self.total_resources.get(n, 0.0)
            for n, a in resources.items()
        )

    def _take_slot(self, ts: WTask) -> None:
        ts.holds_slot = True
        self.running += 1

    def _give_back_slot(self, ts: WTask) -> None:
        if ts.holds_slot:
            ts.holds_slot = False
            self.running -= 1

    def _give_back_resources(self, ts: WTask) -> None:
        if ts.holds_resources and ts.resources:
            for name, amount in ts.resources.items():
                self.used[name] = self.used.get(name, 0.0) - amount
        ts.holds_resources = False

    def _ended(self, ts: WTask) -> None:
        """Its thread finished running it."""
        if ts.holds_slot:
            ts.holds_slot = False
            self.running -= 1
        if ts.holds_resources:
            self._give_back_resources(ts)

    # -- transitions ---------------------------------------------------------------------------
    def _transition(self, ts: WTask, finish: WTaskState) -> None:
        start = ts.state
        method = _TRANSITIONS.get((start, finish))
        if method is None:
            raise InvalidTransition(f"{ts.key!r}: {start.value} -> {finish.value}")
        self.log.append((ts.key, start, finish, self._stimulus, self._time))
        ts.state = finish
        method(self, ts)

    def _t_nothing(self, ts: WTask) -> None:
        pass

    def _t_ready(self, ts: WTask) -> None:
        heapq.heappush(self._ready, (ts.priority, next(self._seq), ts))

    def _t_flight(self, ts: WTask) -> None:
        assert ts.where is not None
        self._fetch[ts.key] = ts.where

    def _t_forgotten(self, ts: WTask) -> None:
        del self.tasks[ts.key]
        if ts.dependencies:
            self._unlink_inputs(ts)

    def _t_memory_forgotten(self, ts: WTask) -> None:
        self._drop.append(ts.key)
        self._t_forgotten(ts)

    def _t_running_forgotten(self, ts: WTask) -> None:
        self._ended(ts)
        self._t_forgotten(ts)

    def _t_arrived(self, ts: WTask) -> None:
        """Its value is here (computed or fetched): what waited for it may run."""
        ts.where = None
        if ts.dependents:
            self._wake_dependents(ts)

    def _t_ran(self, ts: WTask) -> None:
        # the hot path of every task: helpers only where there is something to do
        if ts.holds_slot:  # (_ended, inline)
            ts.holds_slot = False
            self.running -= 1
        if ts.holds_resources:
            self._give_back_resources(ts)
        if ts.dependencies:
            self._unlink_inputs(ts)
        _let_go_of_inputs(ts)  # (after the resources went back: it drops their list)
        if ts.dependents:
            self._wake_dependents(ts)
        elif not ts.wanted:
            self._release_if_unneeded(ts)

    def _t_erred(self, ts: WTask) -> None:
        """Reported already; kept only while tasks here wait for it (the scheduler errs or
        frees those, or computes it again)."""
        self._ended(ts)
        self._unlink_inputs(ts)
        _let_go_of_inputs(ts)
        ts.wanted = ts.assigned = False
        ts.clients = None
        if not ts.dependents:
            self._transition(ts, TS.FORGOTTEN)

    def _t_seceded(self, ts: WTask) -> None:
        self._give_back_slot(ts)  # its resources stay held until it ends

    def _t_flight_released(self, ts: WTask) -> None:
        ts.where = None


def _let_go_of_inputs(ts: WTask) -> None:
    """What only running a task needed: a worker keeps a result per task the scheduler
    wants, for as long as it wants it (a million at once, when a client holds a million
    futures), so each keeps no more than its state and links. Computed again (a retry,
    a lost result), a task gets all of it from its new compute action."""
    ts.spec = None
    ts.deps = NO_DEPS
    ts.priority = ()
    ts.resources = None


_T = Callable[[WorkerState, WTask], None]
_TRANSITIONS: dict[tuple[WTaskState, WTaskState], _T] = {
    (TS.RELEASED, TS.WAITING): WorkerState._t_nothing,
    (TS.RELEASED, TS.READY): WorkerState._t_ready,
    (TS.RELEASED, TS.FLIGHT): WorkerState._t_flight,
    (TS.RELEASED, TS.MEMORY): WorkerState._t_arrived,
    (TS.WAITING, TS.READY): WorkerState._t_ready,
    (TS.WAITING, TS.FORGOTTEN): WorkerState._t_forgotten,
    (TS.READY, TS.EXECUTING): WorkerState._t_nothing,
    (TS.READY, TS.FORGOTTEN): WorkerState._t_forgotten,
    (TS.EXECUTING, TS.MEMORY): WorkerState._t_ran,
    (TS.EXECUTING, TS.ERROR): WorkerState._t_erred,
    (TS.EXECUTING, TS.LONG_RUNNING): WorkerState._t_seceded,
    (TS.EXECUTING, TS.CANCELLED): WorkerState._t_nothing,
    (TS.LONG_RUNNING, TS.EXECUTING): WorkerState._t_nothing,  # rejoined: slot taken
    (TS.LONG_RUNNING, TS.MEMORY): WorkerState._t_ran,
    (TS.LONG_RUNNING, TS.ERROR): WorkerState._t_erred,
    (TS.LONG_RUNNING, TS.CANCELLED): WorkerState._t_nothing,
    (TS.CANCELLED, TS.EXECUTING): WorkerState._t_nothing,  # resumed
    (TS.CANCELLED, TS.LONG_RUNNING): WorkerState._t_nothing,
    (TS.CANCELLED, TS.FORGOTTEN): WorkerState._t_running_forgotten,
    (TS.ERROR, TS.FORGOTTEN): WorkerState._t_forgotten,
    (TS.ERROR, TS.RELEASED): WorkerState._t_nothing,  # computed again
    (TS.FLIGHT, TS.MEMORY): WorkerState._t_arrived,
    (TS.FLIGHT, TS.RELEASED): WorkerState._t_flight_released,
    (TS.FLIGHT, TS.FORGOTTEN): WorkerState._t_forgotten,
    (TS.MEMORY, TS.FORGOTTEN): WorkerState._t_memory_forgotten,
}

_HANDLERS: dict[type[Event], Callable[[WorkerState, Any], None]] = {
    ComputeTask: WorkerState._on_compute,
    ComputeTasks: WorkerState._on_computes,
    FreeKeys: WorkerState._on_free,
    StealRequest: WorkerState._on_steal,
    DataArrived: WorkerState._on_data,
    GatherDepSuccess: WorkerState._on_gathered,
    GatherDepFailed: WorkerState._on_gather_failed,
    ExecuteSuccess: WorkerState._on_success,
    ExecuteFailure: WorkerState._on_failure,
    Secede: WorkerState._on_secede,
    RejoinRequest: WorkerState._on_rejoin,
    Pause: WorkerState._on_pause,
    Unpause: WorkerState._on_unpause,
    ResetState: WorkerState._on_reset,
}
