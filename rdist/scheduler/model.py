"""The scheduler's vocabulary: task states, the task and worker records it keeps in memory,
the constants of its policy, and the form a task is stored in (:func:`task_record`).

The bottom of the scheduler's import graph: nothing here imports another module of the
scheduler, so every room (transitions, placement, failures, ...) can import it at the top.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar, cast

from rdist.protocol import wire


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
HOLDER_PREFIX = wire.HOLDER_PREFIX  #: pseudo-clients of queue items, variables, datasets
#: Estimated duration of a task of an unseen kind (as dask): keeps it at one per thread.
DEFAULT_DURATION = 0.5
#: A worker may hold this much estimated work per thread beyond one task per thread.
TARGET_SECONDS_PER_THREAD = 0.05
MAX_IN_FLIGHT_PER_THREAD = 1000
#: Dependencies this large pin a task to the worker holding them, even when busy.
LOCALITY_BYTES = 1 << 20
#: Transitions the scheduler remembers for ``story`` (always on: one small tuple each, the
#: oldest dropped first), about the last 20,000 tasks' lives.
TRANSITION_LOG_LENGTH = 100_000


class InvalidTransition(RuntimeError):
    """A task was asked to go from one state to another the transition table does not know."""


Item = TypeVar("Item")


class Worklist(Generic[Item]):
    """Work pushed while the list is being drained joins the running loop, so a cascade (a
    released or forgotten chain of a million tasks) is walked iteratively, not by recursion."""

    __slots__ = ("items", "busy")

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.busy = False

    def run(self, item: Item, step: Callable[[Item], None]) -> None:
        self.items.append(item)
        if self.busy:
            return
        self.busy = True
        try:
            while self.items:
                step(self.items.pop())
        finally:
            self.busy = False


class PriorityWorklist:
    """Keys pushed while the list is drained join the running loop, highest priority (the
    smallest tuple) first: released dependencies wake in the order they will run."""

    __slots__ = ("heap", "busy")

    def __init__(self) -> None:
        self.heap: list[tuple[tuple[Any, ...], str]] = []
        self.busy = False

    def push(self, priority: tuple[Any, ...], key: str) -> None:
        heapq.heappush(self.heap, (priority, key))

    def drain(self, step: Callable[[str], None]) -> None:
        """``step`` each pushed key in priority order (at once, unless already draining)."""
        if self.busy:
            return
        self.busy = True
        try:
            while self.heap:
                _, key = heapq.heappop(self.heap)
                step(key)
        finally:
            self.busy = False


#: The value every set field of a :class:`Task` starts as, shared by all tasks: most tasks
#: never fill most of them (a ``map`` task has no dependencies, dependents or waiters) and
#: an empty set costs 216 bytes -- a million tasks would carry a gigabyte of them. A field
#: is a set of its own whenever it is non-empty: add through :func:`grown`, and replace
#: rather than clear. (Typed as a set so readers need no casts; it is a frozenset, so a
#: stray ``.add`` on it raises instead of sharing the item between tasks.)
NOTHING: set[str] = cast("set[str]", frozenset())


def grown(held: set[str], item: str) -> set[str]:
    """``held`` with ``item`` in it: ``held`` itself, or a new set if it was :data:`NOTHING`
    (or any empty set): assign the result back, ``ts.who_has = grown(ts.who_has, worker)``."""
    if held:
        held.add(item)
        return held
    return {item}


def discard(held: set[str], item: str) -> None:
    """Remove ``item`` from a task's set field, which may be :data:`NOTHING`."""
    if held:
        held.discard(item)


#: One shared frozenset per worker address or client id: ``who_has`` and ``who_wants`` hold
#: one name in the common case (one worker holds a result, one client wants it), and a
#: million tasks then share a few sets instead of carrying two each. Names come and go
#: (clients), so the cache starts over past a bound; sets already given out stay valid.
_ALONE: dict[str, set[str]] = {}  #: (frozensets, typed as the fields they go into)
_ALONE_LIMIT = 4096


def add_name(held: set[str], name: str) -> set[str]:
    """``held`` (a ``who_has`` or ``who_wants``) with ``name`` in it; assign it back. One name
    alone is a shared frozenset; a second one makes the field a set of its own."""
    if type(held) is set:
        held.add(name)
        return held
    if not held:
        alone = _ALONE.get(name)
        if alone is None:
            if len(_ALONE) >= _ALONE_LIMIT:
                _ALONE.clear()
            alone = _ALONE[name] = cast("set[str]", frozenset((name,)))
        return alone
    return held if name in held else {*held, name}


def drop_name(held: set[str], name: str) -> set[str]:
    """``held`` without ``name`` (see :func:`add_name`); assign it back."""
    if type(held) is set:
        held.discard(name)
        return held
    return NOTHING if name in held else held


@dataclass(slots=True, eq=False)
class Task:
    key: str
    prefix: str
    state: TS = TS.RELEASED  #: changed only by the transition table (``transitions.py``)
    dependencies: set[str] = NOTHING
    dependents: set[str] = NOTHING
    waiting_on: set[str] = NOTHING  #: dependencies not yet in memory
    waiters: set[str] = NOTHING  #: dependents that still need our data
    who_wants: set[str] = NOTHING  #: client ids (see :func:`add_name`)
    who_has: set[str] = NOTHING  #: worker addresses (see :func:`add_name`)
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
    #: the hash of the function its spec names in ``funcs`` (counted while the task lives)
    func: bytes | None = None


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


def notifiable(client: str) -> bool:
    """Whether ``client`` has a stream to be told on: not fire-and-forget, not a holder."""
    return client != FIRE_AND_FORGET and not client.startswith(HOLDER_PREFIX)


#: How a spec (msgpack ``[func_hash, args_blob, mode]``, a fourth item when it has a span)
#: starts when it names a function: an array of three (or four), then a bin8 of 16 bytes
#: (``rdist.protocol.spec.function_hash``).
_SPEC_WITH_FUNCTION = (b"\x93\xc4\x10", b"\x94\xc4\x10")


def spec_function(spec: bytes) -> bytes | None:
    """The function hash a task spec names, read from its first bytes (nothing unpickled,
    nothing unpacked); None when it names none (graph nodes) or is not a spec."""
    if spec[:3] in _SPEC_WITH_FUNCTION and len(spec) >= 19:
        return spec[3:19]
    return None


def key_prefix(key: str) -> str:
    """``inc-3f2a...`` -> ``inc``: tasks of one prefix share a duration estimate."""
    head, sep, _ = key.rpartition("-")
    # interned: a million tasks of one kind share one prefix string
    return sys.intern(head) if sep else key


def load(ws: WorkerInfo) -> float:
    """Tasks per thread on ``ws`` (seceded ones hold no thread)."""
    return (len(ws.processing) - len(ws.long_running)) / ws.nthreads


_STATE_NAMES = {s: s.value for s in TaskState}


def task_record(ts: Task) -> wire.TaskRecord:
    """What is stored in the ``tasks`` hash: enough to answer who_has and to rebuild."""
    erred = ts.state is TS.ERRED
    return wire.TaskRecord(
        _STATE_NAMES[ts.state],
        ts.priority,
        sorted(ts.dependencies) if ts.dependencies else [],
        sorted(ts.who_has) if ts.who_has else [],
        ts.nbytes,
        ts.in_redis,
        sorted(ts.who_wants) if ts.who_wants else [],
        ts.processing_on,
        ts.type_name,
        sorted(ts.restrictions) if ts.restrictions else None,
        ts.loose,
        ts.retries,
        ts.resources or None,
        ts.blame if erred else None,
        ts.error_text if erred else None,
        ts.error_kind if erred else None,
        ts.suspicious,
    )
