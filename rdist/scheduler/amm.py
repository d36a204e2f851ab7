"""The Active Memory Manager's decisions: which extra copies to drop, where to put new ones.

dask.distributed's semantics (``distributed.active_memory_manager``), as a pure function:
a :class:`MemoryView` (the scheduler's tasks and workers, each worker's memory by the
configured *measure*, the copies already on their way) goes in, a :class:`Suggestions`
(key -> workers to drop it from, target -> keys to copy there from their holders) comes
out. The scheduler's shell (:mod:`rdist.scheduler.amm_runner`) carries them out through
the data operations: drops as ``drop-replicas`` (:func:`rdist.scheduler.dataops.
on_drop_replicas`), copies as ``gather-keys`` on the target worker's stream.

Policies yield ``(command, key, candidates)``; the manager picks the worker for each
suggestion by dask's rules and sends it back into the policy (None: refused):

- *drop* (:meth:`Manager.find_dropper`): never the last copy (copies on their way do not
  count), nor the last copy on a worker that is not closing; never from a worker where a
  dependent of the key is processing; among the candidates, a closing worker first, then
  the worker with the most memory in use (the one under most pressure);
- *replicate* (:meth:`Manager.find_recipient`): only a key in memory; only to a
  ``running`` worker (not paused, not closing) that holds no copy and gets none yet; among
  those, the worker with the least memory in use.

After each choice the chosen worker's memory is moved by the key's size, so one run does
not pile every copy on one worker. The policies:

- :class:`ReduceReplicas`: every key held by more workers than its waiting dependents
  need (one, or one per worker its dependents run on) loses the extra copies;
- :class:`RetireWorker`: a closing worker's data moves off it -- a key held elsewhere is
  dropped there, a key held only there (or only on closing workers) is copied to a
  running worker; :meth:`RetireWorker.done` says when the worker may leave.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from rdist.scheduler.model import TS, Task, WorkerInfo

#: a retiring worker's status (as :data:`rdist.scheduler.dataops.CLOSING`)
CLOSING = "closing"
RUNNING = "running"
#: The memory measures a worker can be judged by (dask's ``MemoryState`` attributes that
#: rdist's heartbeats can give): see :func:`measure_memory`.
MEASURES = ("optimistic", "process", "managed", "managed_total", "unmanaged")
#: The policies the configuration may name (RetireWorker is started by retire_workers).
CONFIGURABLE = ("ReduceReplicas",)

Command = Literal["drop", "replicate"]
#: What a policy yields: a command, the key, and the workers it may pick from (None: any).
Suggestion = tuple[Command, str, "set[str] | None"]
#: A policy's run: yields suggestions, is sent the worker picked (None: refused).
PolicyRun = Generator[Suggestion, "str | None", None]


@dataclass(slots=True)
class WorkerMemory:
    """One worker's memory as its last heartbeat told it (bytes)."""

    process: int = 0  #: resident set size
    managed: int = 0  #: bytes of results held in memory
    spilled: int = 0  #: bytes of results spilled to disk


def measure_memory(
    measure: str,
    workers: Mapping[str, WorkerInfo],
    tasks: Mapping[str, Task],
    beats: Mapping[str, WorkerMemory],
) -> dict[str, int]:
    """Each worker's memory in use by ``measure``.

    ``process``, ``managed``, ``managed_total`` (managed + spilled) and ``unmanaged``
    (process - managed) come from the heartbeat; ``optimistic`` (dask's default) is what
    the scheduler itself counts as held there (the sizes of the keys it records on the
    worker, which change the moment a copy is dropped or made) plus the unmanaged memory
    of the last heartbeat -- dask's "managed + unmanaged old", without the history of
    recent unmanaged memory that rdist does not keep."""
    out: dict[str, int] = {}
    for address, ws in workers.items():
        beat = beats.get(address) or WorkerMemory()
        unmanaged = max(0, beat.process - beat.managed)
        if measure == "process":
            out[address] = beat.process
        elif measure == "managed":
            out[address] = beat.managed
        elif measure == "managed_total":
            out[address] = beat.managed + beat.spilled
        elif measure == "unmanaged":
            out[address] = unmanaged
        else:
            held = 0
            for key in ws.has_what:
                ts = tasks.get(key)
                if ts is not None:
                    held += ts.nbytes
            out[address] = held + unmanaged
    return out


@dataclass(slots=True)
class MemoryView:
    """What one run of the manager looks at (nothing in it is changed)."""

    tasks: Mapping[str, Task]
    workers: Mapping[str, WorkerInfo]
    memory: dict[str, int]  #: address -> memory in use (by the measure); copied per run
    #: key -> workers a copy is on its way to (asked by an earlier run, not arrived)
    incoming: Mapping[str, set[str]] = field(default_factory=dict)


@dataclass(slots=True)
class Suggestions:
    """One run's outcome, for the shell to carry out."""

    drop: dict[str, list[str]] = field(default_factory=dict)  #: key -> workers to drop from
    #: target worker -> {key: its holders (where to copy from)}
    replicate: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.drop or self.replicate)


class Manager:
    """One run: the policies' suggestions, judged against the view (see module doc)."""

    def __init__(self, view: MemoryView) -> None:
        self.view = view
        self.memory = dict(view.memory)
        #: key -> (workers it is to be copied to, workers it is to be dropped from), this
        #: run (the copies asked by earlier runs are counted as pending copies too)
        self.pending: dict[str, tuple[set[str], set[str]]] = {}
        self.out = Suggestions()

    def running_workers(self) -> set[str]:
        return {a for a, ws in self.view.workers.items() if ws.status == RUNNING}

    def pending_of(self, key: str) -> tuple[set[str], set[str]]:
        got = self.pending.get(key)
        if got is None:
            got = (set(self.view.incoming.get(key, ())), set())
            self.pending[key] = got
        return got

    def run(self, policies: Iterable[Policy]) -> Suggestions:
        for policy in policies:
            self._run_policy(policy.run(self))
        return self.out

    def _run_policy(self, run: PolicyRun) -> None:
        try:
            command, key, candidates = next(run)
            while True:
                picked = self._decide(command, key, candidates)
                command, key, candidates = run.send(picked)
        except StopIteration:
            return

    def _decide(self, command: Command, key: str, candidates: set[str] | None) -> str | None:
        ts = self.view.tasks.get(key)
        if ts is None:
            return None
        repl, drop = self.pending_of(key)
        if command == "replicate":
            target = self.find_recipient(ts, candidates, repl)
            if target is not None:
                repl.add(target)
                self.memory[target] = self.memory.get(target, 0) + ts.nbytes
                holders = sorted(ts.who_has - drop) or sorted(ts.who_has)
                self.out.replicate.setdefault(target, {})[key] = holders
            return target
        dropper = self.find_dropper(ts, candidates, drop)
        if dropper is not None:
            drop.add(dropper)
            self.memory[dropper] = self.memory.get(dropper, 0) - ts.nbytes
            self.out.drop.setdefault(key, []).append(dropper)
        return dropper

    def find_recipient(self, ts: Task, candidates: set[str] | None, repl: set[str]) -> str | None:
        """The running worker with the least memory that has no copy and gets none yet."""
        if ts.state is not TS.MEMORY or not ts.who_has:
            return None
        running = self.running_workers()
        pool = running if candidates is None else candidates & running
        pool = pool - ts.who_has - repl
        if not pool:
            return None
        return min(pool, key=lambda a: (self.memory.get(a, 0), a))

    def find_dropper(self, ts: Task, candidates: set[str] | None, drop: set[str]) -> str | None:
        """The holder with the most memory whose copy no dependent there needs; never the
        last copy (copies on their way do not count: they may never arrive)."""
        if ts.state is not TS.MEMORY or len(ts.who_has) - len(drop) < 2:
            return None
        pool = set(ts.who_has) if candidates is None else candidates & ts.who_has
        pool -= drop
        pool -= self.waiters_on(ts)
        workers = self.view.workers
        staying = [a for a in ts.who_has - drop if _stays(workers, a)]
        if len(staying) == 1:  # the last copy on a worker that stays: not that one
            pool.discard(staying[0])
        if not pool:
            return None
        # a closing worker's copy first (it is leaving anyway), then the fullest worker's
        return max(pool, key=lambda a: (not _stays(workers, a), self.memory.get(a, 0), a))

    def waiters_on(self, ts: Task) -> set[str]:
        """Workers where a dependent needing ``ts`` is processing."""
        tasks = self.view.tasks
        out: set[str] = set()
        for key in ts.waiters:
            waiter = tasks.get(key)
            if waiter is not None and waiter.processing_on is not None:
                out.add(waiter.processing_on)
        return out


def _stays(workers: Mapping[str, WorkerInfo], address: str) -> bool:
    ws = workers.get(address)
    return ws is not None and ws.status != CLOSING


class Policy(Protocol):
    """A policy: :meth:`run` yields suggestions for one run of the manager."""

    def run(self, manager: Manager) -> PolicyRun: ...


class ReduceReplicas:
    """Drop the copies of a key beyond what its waiting dependents need (dask's policy):
    one copy, or one per worker its dependents are processing on (a dependent not placed
    yet counts as a worker of its own: the copy is kept for it, erring on the safe side)."""

    def run(self, manager: Manager) -> PolicyRun:
        tasks = manager.view.tasks
        for key, ts in _replicated(tasks, manager.view.workers):
            places: set[tuple[str, str]] = set()
            for waiter_key in ts.waiters:
                waiter = tasks.get(waiter_key)
                if waiter is not None:  # (a worker, or the unplaced dependent itself)
                    place = waiter.processing_on
                    places.add(("worker", place) if place else ("task", waiter_key))
            _, drop = manager.pending_of(key)
            extra = len(ts.who_has) - max(1, len(places)) - len(drop)
            for _ in range(extra):
                if (yield "drop", key, None) is None:
                    break  # refused: no other holder may drop it this run

    def __repr__(self) -> str:
        return "ReduceReplicas()"


def _replicated(
    tasks: Mapping[str, Task], workers: Mapping[str, WorkerInfo]
) -> Iterable[tuple[str, Task]]:
    """Keys in memory on more than one worker, by walking the smaller side: the workers'
    holdings when there are few held keys, else every task."""
    held = sum(len(ws.has_what) for ws in workers.values())
    if held < len(tasks):
        seen: set[str] = set()
        for ws in workers.values():
            for key in ws.has_what:
                if key in seen:
                    continue
                seen.add(key)
                ts = tasks.get(key)
                if ts is not None and len(ts.who_has) > 1:
                    yield key, ts
        return
    for key, ts in tasks.items():
        if len(ts.who_has) > 1:
            yield key, ts


class RetireWorker:
    """Move the data off a closing worker (dask's policy): a key also held elsewhere is
    dropped here; a key held only here, or only on closing workers, is copied to a running
    worker. ``no_recipients`` is set when a key has nowhere to go (every other worker
    paused or closing): retiring then stops, as dask's does."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.no_recipients = False

    def run(self, manager: Manager) -> PolicyRun:
        view = manager.view
        ws = view.workers.get(self.address)
        if ws is None:
            return
        running = manager.running_workers()
        for key in sorted(ws.has_what):
            ts = view.tasks.get(key)
            if ts is None or ts.state is not TS.MEMORY:
                continue
            if len(ts.who_has) > 1:
                dropped = yield "drop", key, {self.address}
                if dropped is not None or ts.who_has & running:
                    continue  # dropped, or a running worker keeps a copy anyway
            if ts.in_redis:
                continue  # survives the worker in Redis (rdist's small results)
            repl, _ = manager.pending_of(key)
            if repl:
                continue  # a copy is on its way (asked by this run or an earlier one)
            if (yield "replicate", key, None) is None:
                self.no_recipients = True

    def done(self, view: MemoryView) -> bool:
        """Whether the worker may leave: every key it holds is also held by a worker that
        is not closing, or stored in Redis (dask asks only for a second copy anywhere,
        which two workers retiring at once could both be counting on)."""
        ws = view.workers.get(self.address)
        if ws is None:
            return True
        staying = {a for a, w in view.workers.items() if w.status != CLOSING}
        for key in ws.has_what:
            ts = view.tasks.get(key)
            if ts is None or ts.in_redis:
                continue
            if not ts.who_has & staying:
                return False
        return True

    def __repr__(self) -> str:
        return f"RetireWorker({self.address!r})"


def policy_named(name: str) -> Policy:
    """A configured policy by name (``ReduceReplicas``, also as dask spells it:
    ``distributed.active_memory_manager.ReduceReplicas``); ValueError for others."""
    short = name.rsplit(".", 1)[-1].strip()
    if short == "ReduceReplicas":
        return ReduceReplicas()
    raise ValueError(
        f"unknown active memory manager policy {name!r}: rdist has {', '.join(CONFIGURABLE)} "
        "(RetireWorker is started by retire_workers)"
    )


def suggest(view: MemoryView, policies: Iterable[Policy]) -> Suggestions:
    """One run of the manager: the policies' suggestions as the manager accepts them."""
    return Manager(view).run(policies)


__all__ = [
    "MEASURES",
    "Manager",
    "MemoryView",
    "Policy",
    "ReduceReplicas",
    "RetireWorker",
    "Suggestions",
    "WorkerMemory",
    "measure_memory",
    "policy_named",
    "suggest",
]
