"""The scheduler's decisions as a pure state machine: events in, instructions out.

No Redis, sockets, threads or clocks here: time arrives on the events. :class:`SchedulerState`
holds the tables (tasks, workers, clients, the queue) and implements the internal
interface its rooms use (:class:`~rdist.scheduler.interface.Scheduling`); the decisions
themselves live in the rooms, one concern each:

=====================  =========================================================
``lifecycle``          clients, graphs, releases, cancels, finished tasks
``transitions``        the transition table: every change of a task's state
``placement``          which worker runs a ready task, the queue, worker capacity
``failures``           lost workers and data, errors and retries, restart
``dataops``            scatter, replicas, worker status, barriers
``stealing``           moving unstarted work from busy workers to idle ones
``coassign``           sending a task to the worker computing all its inputs
``recovery``           rebuilding the state from a previous scheduler's records
=====================  =========================================================

Every task state change goes through :meth:`SchedulerState.transition`, which looks the
pair up in :data:`~rdist.scheduler.transitions.TRANSITIONS` (an illegal pair raises) and
records it in a bounded, always-on log that :meth:`SchedulerState.story` reads.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rdist.protocol import wire
from rdist.scheduler import (
    dataops,
    exchange,
    failures,
    lifecycle,
    placement,
    reconcile,
    recovery,
    stealing,
)
from rdist.scheduler import events as ev
from rdist.scheduler.model import (
    FIRE_AND_FORGET,
    HOLDER_PREFIX,
    TRANSITION_LOG_LENGTH,
    TS,
    InvalidTransition,
    PriorityWorklist,
    Task,
    TaskState,
    WorkerInfo,
    Worklist,
    add_name,
    drop_name,
    task_record,
)
from rdist.scheduler.transitions import TRANSITIONS
from rdist.settings import BY_NAME

__all__ = ["FIRE_AND_FORGET", "InvalidTransition", "SchedulerState", "TaskState", "task_record"]

#: One entry of the transition log: (key, start, finish, stimulus id, event time).
LogEntry = tuple[str, TaskState, TaskState, str, float]

_ACTIVE = (TS.WAITING, TS.QUEUED, TS.NO_WORKER, TS.PROCESSING)
#: the default of ``scheduler.allowed_failures`` (the server passes the configured value)
ALLOWED_FAILURES: int = BY_NAME["scheduler.allowed_failures"].default


class SchedulerState:
    """Tasks, workers and clients; :meth:`handle` is the only entry point."""

    def __init__(
        self,
        allowed_failures: int = ALLOWED_FAILURES,
        direct_notify: bool = True,
        coassign: bool = True,
        log_length: int = TRANSITION_LOG_LENGTH,
        work_stealing: bool = True,
    ) -> None:
        self.allowed_failures = allowed_failures
        #: balance work between workers by stealing (``scheduler.work_stealing``)
        self.work_stealing = work_stealing
        self.direct_notify = direct_notify
        self.coassign = coassign
        self.tasks: dict[str, Task] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.clients: dict[str, set[str]] = {FIRE_AND_FORGET: set()}
        self.durations: dict[str, float] = {}
        self.queued: list[tuple[tuple[Any, ...], str]] = []
        self.queued_restricted: set[str] = set()
        self.no_worker: set[str] = set()
        self.stealing: dict[str, tuple[str, str]] = {}
        self.generation: Iterator[int] = itertools.count()
        self.func_refs: dict[bytes, int] = {}
        self.departed: dict[str, None] = {}
        self.held: dict[str, tuple[set[str], int, float]] = {}
        self.coassigning: Worklist[Task] = Worklist()
        self.waking = PriorityWorklist()
        self.last_balance = float("-inf")
        self.now = 0.0
        self.stimulus_id = ""
        #: the last ``log_length`` transitions, oldest first (see :meth:`story`)
        self.transition_log: deque[LogEntry] = deque(maxlen=log_length)
        self._out: list[ev.Instruction] = []
        self._dirty: set[str] = set()
        #: work deferred so that long chains are walked in a loop, not by recursion
        self._forgetting: Worklist[Task] = Worklist()
        self._releasing: Worklist[Task] = Worklist()

    # -- entry point ---------------------------------------------------------------------
    def handle(
        self, *events: ev.Event, flush: bool = True, place: bool = True
    ) -> list[ev.Instruction]:
        """Apply ``events``; returns the instructions. With ``flush=False`` the task records
        changed are written by a later :meth:`flush` (the server flushes once per batch, so
        a task that changes in many entries of a batch is written once); with
        ``place=False`` the ready tasks wait for :meth:`place` (the server places once per
        batch: its instructions go out together anyway, and the workers that finished
        tasks in any of its entries are filled in one pass)."""
        for event in events:
            self.stimulus_id = event.stimulus_id
            self.now = event.time
            _HANDLERS[type(event)](self, event)
        if place:
            self._place()
        if flush:
            self._flush_dirty()
        out, self._out = self._out, []
        return out

    def place(self) -> list[ev.Instruction]:
        """Placement (and stealing) of what entries handled with ``place=False`` made
        ready, then the records of every task changed since the last flush."""
        self._place()
        return self.flush()

    def flush(self) -> list[ev.Instruction]:
        """Records of the tasks changed since the last flush."""
        self._flush_dirty()
        out, self._out = self._out, []
        return out

    def _place(self) -> None:
        placement.fill_all_workers(self)
        if self.work_stealing:
            stealing.balance(self, self.now)

    # -- the rooms' interface (see rdist.scheduler.interface) ----------------------------
    def transition(self, ts: Task, finish: TS, **kwargs: Any) -> None:
        start = ts.state
        method = TRANSITIONS.get((start, finish))
        if method is None:
            if start is finish:
                return
            raise InvalidTransition(f"{ts.key!r}: {start.value} -> {finish.value}")
        self.transition_log.append((ts.key, start, finish, self.stimulus_id, self.now))
        method(self, ts, **kwargs)
        self._dirty.add(ts.key)

    def emit(self, instruction: ev.Instruction) -> None:
        self._out.append(instruction)

    def mark(self, ts: Task) -> None:
        self._dirty.add(ts.key)

    def notify(self, client: str, ts: Task, inline: bytes | None = None) -> None:
        if client.startswith(HOLDER_PREFIX):  # a queue item, variable or dataset: no stream
            return
        if ts.state is TS.MEMORY:
            item: wire.Item = wire.KeyInMemory(
                ts.key, ts.nbytes, ts.in_redis, sorted(ts.who_has), ts.type_name, inline
            )
        elif ts.state is TS.ERRED:
            item = wire.KeyErred(ts.key, ts.blame, ts.error, ts.error_text, ts.error_kind)
        else:
            return
        self._out.append(ev.Notify(client, item))

    def want(self, client: str, key: str) -> None:
        ts = self.tasks.get(key)
        if ts is None:
            return
        ts.who_wants = add_name(ts.who_wants, client)
        self.clients.setdefault(client, set()).add(key)
        self._dirty.add(key)

    def unwant(self, client: str, keys: Iterable[str], already_removed: bool = False) -> None:
        wanted = self.clients.get(client)
        for key in list(keys):
            if wanted is not None and not already_removed:
                wanted.discard(key)
            ts = self.tasks.get(key)
            if ts is None or client not in ts.who_wants:
                continue
            ts.who_wants = drop_name(ts.who_wants, client)
            self._dirty.add(key)
            self.release_if_unneeded(ts)

    def needed(self, ts: Task) -> bool:
        if ts.who_wants or ts.waiters:
            return True
        tasks = self.tasks
        return any((d := tasks.get(k)) is not None and d.state in _ACTIVE for k in ts.dependents)

    def release_if_unneeded(self, ts: Task) -> None:
        self._releasing.run(ts, self._release_one)

    def forget_if_unreferenced(self, ts: Task) -> None:
        self._forgetting.run(ts, self._forget_one)

    def _release_one(self, ts: Task) -> None:
        if self.needed(ts):
            return
        if ts.state is not TS.RELEASED and ts.state is not TS.FORGOTTEN:
            self.transition(ts, TS.RELEASED)
        self.forget_if_unreferenced(ts)

    def _forget_one(self, ts: Task) -> None:
        if ts.state is TS.RELEASED and not ts.who_wants and not ts.dependents:
            self.transition(ts, TS.FORGOTTEN)

    def _flush_dirty(self) -> None:
        if not self._dirty:
            return
        tasks = self.tasks
        records = {
            key: task_record(ts) for key in self._dirty if (ts := tasks.get(key)) is not None
        }
        self._dirty.clear()
        if records:
            self._out.append(ev.PersistTasks(records))

    # -- introspection -------------------------------------------------------------------
    def story(self, *keys_or_stimuli: str) -> list[wire.StoryRow]:
        """The transitions kept for these keys (or caused by these stimulus ids), oldest
        first: ``(key, start, finish, stimulus_id, time)``, as dask's ``story``."""
        wanted = set(keys_or_stimuli)
        return [
            wire.StoryRow(key, start.value, finish.value, stimulus, time)
            for key, start, finish, stimulus, time in self.transition_log
            if key in wanted or stimulus in wanted
        ]

    def _on_story(self, e: ev.StoryRequested) -> None:
        self._out.append(ev.SendStory(e.client, e.id, self.story(*e.keys)))

    def _on_plugin_offered(self, e: ev.PluginOffered) -> None:
        self._out.append(ev.OfferPlugin(e.msg))  # the shell's to judge: no pickles here

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
        named = Counter(ts.func for ts in self.tasks.values() if ts.func is not None)
        assert named == self.func_refs, (dict(named), self.func_refs)


_HANDLERS: dict[type[ev.Event], Callable[[SchedulerState, Any], None]] = {
    ev.StateRestored: recovery.on_restored,
    ev.GraphSubmitted: lifecycle.on_graph,
    ev.KeysReleased: lifecycle.on_released,
    ev.KeysCancelled: lifecycle.on_cancelled,
    ev.KeysPassed: lifecycle.on_passed,
    ev.ClientJoined: lifecycle.on_client_joined,
    ev.ClientLeft: lifecycle.on_client_left,
    ev.TasksFinished: lifecycle.on_finished,
    ev.WorkerJoined: placement.on_worker_joined,
    ev.TaskSeceded: placement.on_seceded,
    ev.WorkerLeft: failures.on_worker_left,
    ev.MissingData: failures.on_missing_data,
    ev.TaskErred: failures.on_erred,
    ev.TaskRescheduled: failures.on_rescheduled,
    ev.RetryRequested: failures.on_retry,
    ev.TasksRestarted: exchange.on_tasks_restarted,
    ev.RestartRequested: failures.on_restart,
    ev.DataScattered: dataops.on_scattered,
    ev.DataReplicated: dataops.on_replicated,
    ev.KeysHeld: reconcile.on_keys_held,
    ev.WorkerStatusChanged: dataops.on_worker_status,
    ev.DropReplicas: dataops.on_drop_replicas,
    ev.Barrier: dataops.on_barrier,
    ev.WorkersRetiring: dataops.on_retiring,
    ev.ShutdownRequested: dataops.on_shutdown,
    ev.StealResponse: stealing.answered,
    ev.StoryRequested: SchedulerState._on_story,
    ev.PluginOffered: SchedulerState._on_plugin_offered,
}
