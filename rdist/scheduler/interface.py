"""The internal interface of the scheduler's rooms: what they may use of the state.

The scheduler's decisions are split by concern into modules of plain functions --
:mod:`~rdist.scheduler.transitions` (the table), :mod:`~rdist.scheduler.placement`,
:mod:`~rdist.scheduler.lifecycle`, :mod:`~rdist.scheduler.failures`,
:mod:`~rdist.scheduler.dataops`, :mod:`~rdist.scheduler.stealing`,
:mod:`~rdist.scheduler.coassign`, :mod:`~rdist.scheduler.recovery` -- each taking the
state as its first argument. They reach it only through :class:`Scheduling`: its tables
and a handful of named operations. :class:`~rdist.scheduler.state.SchedulerState` is the
one implementation; mypy checks that it keeps the promise.

Two rules hold the rooms together: a task's ``state`` changes only through
:meth:`Scheduling.transition` (which logs the change and marks the task for writing), and
whatever the scheduler tells the world goes out through :meth:`Scheduling.emit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from rdist.scheduler import events as ev
from rdist.scheduler.model import TS, PriorityWorklist, Task, WorkerInfo, Worklist


class Scheduling(Protocol):
    """The tables and operations of the scheduler's state, as its rooms see them."""

    # -- settings (fixed at construction) ---------------------------------------------------
    #: a task errs with KilledWorker once this many workers died while running it
    allowed_failures: int
    #: workers tell the clients wanting a key themselves when it finishes (one hop
    #: instead of two); the scheduler then notifies only clients that came later
    direct_notify: bool
    #: a task whose inputs are all being computed on one worker is sent there at once
    coassign: bool

    # -- the tables -------------------------------------------------------------------------
    tasks: dict[str, Task]
    workers: dict[str, WorkerInfo]
    clients: dict[str, set[str]]  #: client -> wanted keys
    durations: dict[str, float]  #: task prefix -> average duration (seconds)
    #: heap of (priority, key) of ready tasks without restrictions; stale entries (tasks
    #: that left ``queued`` or changed priority) are skipped when they come up
    queued: list[tuple[tuple[Any, ...], str]]
    queued_restricted: set[str]  #: queued tasks with restrictions or resources
    no_worker: set[str]  #: ready tasks no present worker may run
    stealing: dict[str, tuple[str, str]]  #: key -> (victim, thief) of unanswered steals
    #: makes priorities unique per graph: (-user priority, generation, index in graph)
    generation: Iterator[int]
    #: function hash -> living tasks whose spec names it (``functions``)
    func_refs: dict[bytes, int]
    #: clients that left, oldest first (bounded): what they send later is ignored
    departed: dict[str, None]
    #: after Redis lost data: keys workers re-announced that no task has yet (the graph
    #: is re-submitted by its client): key -> (holders, nbytes, event time) (``reconcile``)
    held: dict[str, tuple[set[str], int, float]]

    # -- scratch of the rooms ---------------------------------------------------------------
    coassigning: Worklist[Task]  #: co-assignment walks chains in a loop (``coassign``)
    waking: PriorityWorklist  #: released inputs wake in priority order (``transitions``)
    last_balance: float  #: event time of the last look for work to steal

    # -- the event being handled ------------------------------------------------------------
    now: float  #: its time: the only clock the rooms know
    stimulus_id: str  #: its id, recorded with each transition it causes

    # -- operations -------------------------------------------------------------------------
    def transition(self, ts: Task, finish: TS, **kwargs: Any) -> None:
        """Move ``ts`` to ``finish`` through the table (``kwargs`` go to the table's
        function); no change when already there and the table has no such pair; any
        other pair it lacks raises :class:`~rdist.scheduler.model.InvalidTransition`."""

    def emit(self, instruction: ev.Instruction) -> None:
        """Add an instruction to what the current events produce."""

    def mark(self, ts: Task) -> None:
        """``ts`` changed in a way its stored record shows: write it with this batch."""

    def notify(self, client: str, ts: Task, inline: bytes | None = None) -> None:
        """Tell ``client`` that ``ts`` is in memory or erred (nothing in other states)."""

    def want(self, client: str, key: str) -> None:
        """``client`` holds a future for ``key``."""

    def unwant(self, client: str, keys: Iterable[str], already_removed: bool = False) -> None:
        """``client`` dropped its futures for ``keys``; what nothing needs is released."""

    def needed(self, ts: Task) -> bool:
        """A client wants ``ts``, or a dependent still needs its result."""

    def release_if_unneeded(self, ts: Task) -> None:
        """Release ``ts`` and, iteratively, what only it needed; forget what nothing
        references any more."""

    def forget_if_unreferenced(self, ts: Task) -> None:
        """Forget ``ts`` if released, unwanted and without dependents (iteratively)."""
