"""Events the scheduler state machine consumes and instructions it emits.

Events carry everything a decision needs, including the time; instructions say what the
server must write. Both are small slotted dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class TaskSpecMeta:
    """Scheduling metadata of one submitted task (never the pickled spec itself)."""

    key: str
    deps: list[str] = field(default_factory=list)
    priority: int = 0  #: user priority: higher runs first
    workers: list[str] | None = None  #: restriction to these addresses or names
    loose: bool = False  #: allow_other_workers
    retries: int = 0
    resources: dict[str, float] | None = None
    spec: bytes | None = None  #: opaque serialized spec, stored when the task is new


@dataclass(slots=True)
class Event:
    stimulus_id: str
    time: float


@dataclass(slots=True)
class GraphSubmitted(Event):
    client: str
    tasks: list[TaskSpecMeta]
    wanted: list[str]  #: keys the client holds futures for
    fire_and_forget: list[str] = field(default_factory=list)


@dataclass(slots=True)
class KeysReleased(Event):
    client: str
    keys: list[str]


@dataclass(slots=True)
class KeysCancelled(Event):
    client: str
    keys: list[str]
    force: bool = False


@dataclass(slots=True)
class RetryRequested(Event):
    client: str
    keys: list[str]


@dataclass(slots=True)
class ClientJoined(Event):
    client: str


@dataclass(slots=True)
class ClientLeft(Event):
    client: str


@dataclass(slots=True)
class WorkerJoined(Event):
    address: str
    name: str
    nthreads: int
    memory_limit: int = 0
    resources: dict[str, float] | None = None


@dataclass(slots=True)
class WorkerLeft(Event):
    address: str
    #: died (heartbeat timeout, nanny report) rather than left cleanly: the tasks it was
    #: running become suspects, and ``allowed_failures`` suspicions err them (KilledWorker)
    lost: bool = False


@dataclass(slots=True)
class RestartRequested(Event):
    """``client.restart()``: cancel every future of every client and restart all workers."""

    client: str


@dataclass(slots=True)
class StateRestored(Event):
    """A (new) scheduler rebuilds its state from the records it finds in Redis."""

    tasks: dict[str, dict[str, Any]]  #: key -> task record (``state.task_record``)
    workers: dict[str, dict[str, Any]]  #: address -> worker record of live workers
    errors: dict[str, bytes]  #: erred key -> its stored (exception, traceback) blob


@dataclass(slots=True)
class FinishedTask:
    key: str
    nbytes: int
    in_redis: bool
    inline: bytes | None
    duration: float
    type_name: str = ""


@dataclass(slots=True)
class TasksFinished(Event):
    worker: str
    tasks: list[FinishedTask]


@dataclass(slots=True)
class TaskErred(Event):
    worker: str
    key: str
    error: bytes  #: opaque serialized (exception, traceback text) from the worker
    duration: float = 0.0


@dataclass(slots=True)
class DataScattered(Event):
    client: str
    items: list[tuple[str, list[str], int, bool]]  #: (key, worker addresses, nbytes, in_redis)


@dataclass(slots=True)
class TaskSeceded(Event):
    """``key`` called ``secede()`` on ``worker``: it no longer occupies a thread there."""

    worker: str
    key: str


@dataclass(slots=True)
class StealResponse(Event):
    """``worker`` answers a steal request: ``ok`` when it dropped ``key`` unstarted."""

    worker: str
    key: str
    ok: bool


@dataclass(slots=True)
class MissingData(Event):
    """``worker`` could not fetch ``deps`` of ``key`` from any of ``tried``."""

    worker: str
    key: str
    deps: list[str]
    tried: list[str]


@dataclass(slots=True)
class DataReplicated(Event):
    """A worker now also holds ``keys`` (it fetched them as dependencies)."""

    worker: str
    keys: list[str]


@dataclass(slots=True)
class WorkerStatusChanged(Event):
    """A worker paused (memory past its pause fraction) or runs again."""

    address: str
    status: str  #: "running" or "paused"


@dataclass(slots=True)
class DropReplicas(Event):
    """A client wants extra copies gone (replicate to fewer workers, rebalance)."""

    client: str
    keys: dict[str, list[str]]  #: key -> workers that should stop holding it


@dataclass(slots=True)
class Barrier(Event):
    """Answer ``client`` once everything it sent before has been handled."""

    client: str
    id: str


# -- instructions ------------------------------------------------------------------------


@dataclass(slots=True)
class Instruction:
    pass


@dataclass(slots=True)
class Compute(Instruction):
    worker: str
    key: str
    priority: tuple[Any, ...]
    #: dependency key -> (holders, nbytes, in_redis)
    deps: dict[str, tuple[list[str], int, bool]]
    resources: dict[str, float] | None = None
    #: clients wanting the key: the worker notifies them directly when it finishes
    clients: list[str] | None = None
    spec: bytes | None = None  #: the task's spec, when the scheduler still holds it


@dataclass(slots=True)
class StealRequest(Instruction):
    """Ask ``worker`` to give ``key`` up unless it has started it (answered by StealResponse)."""

    worker: str
    key: str


@dataclass(slots=True)
class FreeKeys(Instruction):
    worker: str
    keys: list[str]


@dataclass(slots=True)
class Notify(Instruction):
    """Tell a client about a key it wants: ``status`` is memory, erred, cancelled or lost."""

    client: str
    key: str
    status: str
    info: dict[str, Any]


@dataclass(slots=True)
class PersistTask(Instruction):
    key: str
    record: dict[str, Any]


@dataclass(slots=True)
class ForgetTask(Instruction):
    """The key is gone: drop its record, spec and stored result."""

    key: str


@dataclass(slots=True)
class StoreSpec(Instruction):
    """Write a new task's spec. The scheduler is the only writer (and deleter) of specs, so
    a key forgotten and submitted again can never lose its spec to a late delete."""

    key: str
    spec: bytes


@dataclass(slots=True)
class RestartWorkers(Instruction):
    """Tell every worker to restart, then tell ``client`` the cluster was reset."""

    workers: list[str]
    client: str


@dataclass(slots=True)
class DropResult(Instruction):
    """The result stored in Redis is no longer wanted (the task itself may be kept)."""

    key: str


@dataclass(slots=True)
class LogEvent(Instruction):
    """An entry for the cluster event log."""

    kind: str
    info: dict[str, Any]
