"""Events the scheduler state machine consumes and instructions it emits.

Events carry everything a decision needs, including the time; instructions say what the
server must write. Both are small slotted dataclasses. Where a message from the wire
already holds one row per task (a graph's tasks, a report's finished tasks), the event
carries those rows as they were decoded (:class:`~rdist.protocol.wire.TaskRow`,
:class:`~rdist.protocol.wire.DoneRow`): nothing is allocated twice per task on the hot path.
Likewise instructions carry the wire items the server sends (notification items, task
records), built once by the state machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rdist.protocol import wire

#: Scheduling metadata of one submitted task (its spec travels in ``GraphSubmitted.specs``).
TaskSpecMeta = wire.TaskRow
#: One task a worker ran and stored.
FinishedTask = wire.DoneRow


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
    #: opaque serialized specs of the tasks, by key (stored when the task is new)
    specs: dict[str, bytes] = field(default_factory=dict)
    #: the pickled functions those specs name, by hash (stored while a task names one)
    funcs: dict[bytes, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class KeysReleased(Event):
    client: str
    keys: list[str]


@dataclass(slots=True)
class KeysPassed(Event):
    """Keys change hands (``wire.PassKeys``): ``taker`` wants them, then ``giver`` not."""

    keys: list[str]
    taker: str = ""
    giver: str = ""


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
class TasksRestarted(Event):
    """A worker asks for ``keys`` to run again (a P2P exchange lost a worker)."""

    worker: str
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

    tasks: dict[str, wire.TaskRecord]  #: key -> task record (``model.task_record``)
    workers: dict[str, wire.WorkerRecord]  #: address -> worker record of live workers
    errors: dict[str, bytes]  #: erred key -> its stored (exception, traceback) blob
    #: keys whose stored record does not decode -> what is wrong with it
    corrupt: dict[str, str] = field(default_factory=dict)
    clients: list[str] = field(default_factory=list)  #: clients with a heartbeat record
    #: key -> the function hash its stored spec names (None: names none), for every spec
    spec_funcs: dict[str, bytes | None] = field(default_factory=dict)
    stored_funcs: list[bytes] = field(default_factory=list)  #: hashes in ``funcs``


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
    items: list[wire.ScatterItem]  #: (key, worker addresses, nbytes, in_redis)


@dataclass(slots=True)
class TaskSeceded(Event):
    """``key`` called ``secede()`` on ``worker``: it no longer occupies a thread there."""

    worker: str
    key: str


@dataclass(slots=True)
class TaskRescheduled(Event):
    """``key`` raised ``Reschedule`` on ``worker``: place it again (it is no error)."""

    worker: str
    key: str


@dataclass(slots=True)
class WorkersRetiring(Event):
    """``client.retire_workers``: ``workers`` are closing and take no new task."""

    client: str
    workers: list[str]


@dataclass(slots=True)
class ShutdownRequested(Event):
    """``client.shutdown()``: stop serving after this batch."""

    client: str


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
class KeysHeld(Event):
    """After Redis lost data, a worker re-announces what it holds: key -> nbytes."""

    worker: str
    keys: dict[str, int]


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


@dataclass(slots=True)
class StoryRequested(Event):
    """``client.story(*keys)``: answer ``client`` with the transitions kept for ``keys``."""

    client: str
    id: str
    keys: list[str]


@dataclass(slots=True)
class PluginOffered(Event):
    """A client offers a scheduler plugin (``wire.RegisterSchedulerPlugin``): nothing the
    state machine decides -- it hands the offer to the shell (:class:`OfferPlugin`)."""

    msg: Any


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
    deps: dict[str, wire.DepInfo]
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
    """Tell a client about a key it wants (in memory, erred, cancelled, lost) or answer its
    barrier: one item of the ``notify`` message its stream gets this batch."""

    client: str
    item: wire.Item

    @property
    def key(self) -> str:
        """The key the item is about (``""`` for a barrier's answer)."""
        return "" if isinstance(self.item, wire.BarrierReached) else self.item.key

    @property
    def status(self) -> str:
        """``memory``, ``erred``, ``cancelled``, ``lost`` or ``barrier``, as on the wire."""
        _, status, _ = wire.encode_item(self.item)
        return str(status)

    @property
    def info(self) -> dict[str, Any]:
        """The item's info map, as on the wire."""
        _, _, info = wire.encode_item(self.item)
        return dict(info)


@dataclass(slots=True)
class PersistTasks(Instruction):
    """Write these tasks' records: each task changed since the last flush, once however
    often it changed (the server flushes once per batch)."""

    records: dict[str, wire.TaskRecord]


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
class StoreFunction(Instruction):
    """A task names this function and no other living task did: store it (``funcs``)."""

    hash: bytes
    func: bytes


@dataclass(slots=True)
class DropFunction(Instruction):
    """The last task naming this function was forgotten: drop it from ``funcs``."""

    hash: bytes


@dataclass(slots=True)
class ForgetClient(Instruction):
    """A client left: its stream and heartbeat record go (after what this batch sends it,
    which nobody will read)."""

    client: str


@dataclass(slots=True)
class DropSpecs(Instruction):
    """Specs no task owns (left by a scheduler that died between writes): drop them."""

    keys: list[str]


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


@dataclass(slots=True)
class OfferPlugin(Instruction):
    """For the shell: a client's scheduler plugin to accept or refuse (and answer)."""

    msg: Any


@dataclass(slots=True)
class StopServing(Instruction):
    """For the shell: write this batch, then stop (``client.shutdown()``)."""

    client: str


@dataclass(slots=True)
class SendStory(Instruction):
    """The answer to a :class:`StoryRequested`: the scheduler's transition records."""

    client: str
    id: str
    records: list[wire.StoryRow]
