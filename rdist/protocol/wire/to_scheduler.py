"""Messages on the ``sched`` stream: from clients and workers to the scheduler.

The scheduler never unpickles: every field here is plain msgpack (specs and errors are
opaque bytes it stores and forwards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rdist.protocol.wire.amm import AmmRequest
from rdist.protocol.wire.base import (
    BLOB,
    BOOL,
    COUNT,
    NAME,
    NAMES,
    RESOURCES,
    SECONDS,
    TEXT,
    TIMESTAMP,
    Channel,
    DictOf,
    Integer,
    Message,
    OneOf,
    Optional,
    Rows,
    fields,
    row_spec,
)
from rdist.protocol.wire.exchange import RestartTasks
from rdist.protocol.wire.extension import PassKeys, RegisterSchedulerPlugin
from rdist.protocol.wire.recovery import HeldKeys
from rdist.protocol.wire.retire import RetireWorkers, Shutdown

WORKER_STATUSES = ("running", "paused", "closing")

# -- from clients ----------------------------------------------------------------------------


class TaskRow(NamedTuple):
    """Scheduling metadata of one submitted task (its spec travels beside, in ``specs``)."""

    key: str
    deps: list[str]
    priority: int = 0  #: user priority: higher runs first
    workers: list[str] | None = None  #: restriction to these addresses or names
    loose: bool = False  #: allow_other_workers
    retries: int = 0
    resources: dict[str, float] | None = None


TASK_ROW = row_spec(
    TaskRow,
    NAME,
    NAMES,
    Integer(-(1 << 62), 1 << 62),
    Optional(NAMES),
    BOOL,
    Integer(0, 1 << 30),
    Optional(RESOURCES),
)


def _fast_task_row(row: Any) -> TaskRow | None:
    """The common row (no restrictions, no resources) checked without error bookkeeping."""
    if type(row) is list and len(row) == 7:
        key, deps, priority, workers, loose, retries, resources = row
        if (
            type(key) is str
            and key
            and len(key) <= 65536
            and type(deps) is list
            and all(type(d) is str and d for d in deps)
            and type(priority) is int
            and -(1 << 62) <= priority <= 1 << 62
            and workers is None
            and type(loose) is bool
            and type(retries) is int
            and 0 <= retries <= 1 << 30
            and resources is None
        ):
            return TaskRow(key, deps, priority, None, loose, retries, None)
    return None


@dataclass(slots=True)
class UpdateGraph(Message):
    """New tasks (with their specs), keys the client now wants, keys to fire and forget,
    and the pickled functions the specs name (by hash: the scheduler stores each while a
    task names it, see ``rdist.scheduler.functions``)."""

    OP = "update-graph"
    client: str
    tasks: list[TaskRow] = field(default_factory=list)
    wanted: list[str] = field(default_factory=list)
    fire_and_forget: list[str] = field(default_factory=list)
    specs: dict[str, bytes] = field(default_factory=dict)
    funcs: dict[bytes, bytes] = field(default_factory=dict)


fields(
    UpdateGraph,
    {"fire_and_forget": "faf", "funcs": "fn"},
    client=NAME,
    tasks=Rows(TASK_ROW, _fast_task_row),
    wanted=NAMES,
    fire_and_forget=NAMES,
    specs=DictOf(NAME, BLOB),
    funcs=DictOf(BLOB, BLOB),
)


# -- the hot messages decoded whole (None: let the field by field path decide) --------------


def _name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= 65536


def _names(value: Any) -> bool:
    """A list of names, or a field left out (None)."""
    if value is None:
        return True
    if type(value) is not list:
        return False
    for item in value:
        if type(item) is not str or not item or len(item) > 65536:
            return False
    return True


def _fast_update_graph(body: Any) -> UpdateGraph | None:
    client, rows, wanted = body.get("client"), body.get("tasks"), body.get("wanted")
    faf, specs, funcs = body.get("faf"), body.get("specs"), body.get("fn")
    if not (_name(client) and _names(wanted) and _names(faf)):
        return None
    if specs is not None:
        if type(specs) is not dict:
            return None
        for key, spec in specs.items():
            if type(spec) is not bytes or not _name(key):
                return None
    if funcs is not None:
        if type(funcs) is not dict:
            return None
        for func_hash, pickled in funcs.items():
            if type(func_hash) is not bytes or type(pickled) is not bytes:
                return None
    tasks = []
    if rows is not None:
        if type(rows) is not list:
            return None
        for row in rows:
            decoded = _fast_task_row(row)
            if decoded is None:
                return None
            tasks.append(decoded)
    return UpdateGraph(client, tasks, wanted or [], faf or [], specs or {}, funcs or {})


def _fast_release_keys(body: Any) -> ReleaseKeys | None:
    client, keys = body.get("client"), body.get("keys")
    if _name(client) and keys is not None and _names(keys):
        return ReleaseKeys(client, keys)
    return None


UpdateGraph.FIELDS.fast = _fast_update_graph


@dataclass(slots=True)
class ReleaseKeys(Message):
    OP = "release-keys"
    client: str
    keys: list[str]


fields(ReleaseKeys, client=NAME, keys=NAMES)
ReleaseKeys.FIELDS.fast = _fast_release_keys


@dataclass(slots=True)
class Cancel(Message):
    OP = "cancel"
    client: str
    keys: list[str]
    force: bool = False


fields(Cancel, client=NAME, keys=NAMES, force=BOOL)


@dataclass(slots=True)
class Retry(Message):
    OP = "retry"
    client: str
    keys: list[str]


fields(Retry, client=NAME, keys=NAMES)


@dataclass(slots=True)
class ClientJoin(Message):
    OP = "client-join"
    client: str


fields(ClientJoin, client=NAME)


@dataclass(slots=True)
class ClientLeave(Message):
    OP = "client-leave"
    client: str


fields(ClientLeave, client=NAME)


class ScatterItem(NamedTuple):
    key: str
    holders: list[str]  #: worker addresses now holding the data
    nbytes: int
    in_redis: bool  #: small enough to be stored in ``results`` too


SCATTER_ITEM = row_spec(ScatterItem, NAME, NAMES, COUNT, BOOL)


@dataclass(slots=True)
class Scatter(Message):
    OP = "scatter"
    client: str
    items: list[ScatterItem]


fields(Scatter, client=NAME, items=Rows(SCATTER_ITEM))


@dataclass(slots=True)
class Restart(Message):
    """``client.restart()``: cancel every future of every client, restart all workers."""

    OP = "restart"
    client: str


fields(Restart, client=NAME)


@dataclass(slots=True)
class DropReplicas(Message):
    """Extra copies to forget: key -> workers that should stop holding it."""

    OP = "drop-replicas"
    client: str
    keys: dict[str, list[str]]


fields(DropReplicas, client=NAME, keys=DictOf(NAME, NAMES))


@dataclass(slots=True)
class Barrier(Message):
    """Answer ``client`` (a ``barrier`` notification) once everything before is handled."""

    OP = "barrier"
    client: str
    id: str


fields(Barrier, client=NAME, id=NAME)


@dataclass(slots=True)
class StoryRequest(Message):
    """``client.story(*keys)``: send the transition records of ``keys`` you keep (scheduler
    and workers alike) to ``client``'s stream as a ``story-reply`` with this ``id``."""

    OP = "story"
    client: str
    id: str
    keys: list[str]


fields(StoryRequest, client=NAME, id=NAME, keys=NAMES)


@dataclass(slots=True)
class Wake(Message):
    """Nothing to do: a stopping scheduler writes it to end its own blocking read at once
    (instead of after the read's block time); whoever reads it next skips it."""

    OP = "wake"


fields(Wake)


# -- from workers ----------------------------------------------------------------------------


@dataclass(slots=True)
class WorkerJoin(Message):
    OP = "worker-join"
    address: str
    name: str
    nthreads: int
    memory_limit: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    host: str = ""
    pid: int = 0
    status: str = "running"
    started: float = 0.0  #: start (or restart) time: client.restart() waits for newer ones
    transfer: str = "auto"


fields(
    WorkerJoin,
    address=NAME,
    name=NAME,
    nthreads=Integer(1, 1 << 16),
    memory_limit=COUNT,
    resources=RESOURCES,
    host=TEXT,
    pid=Integer(0, 1 << 32),
    status=OneOf(*WORKER_STATUSES),
    started=TIMESTAMP,
    transfer=OneOf("p2p", "redis", "auto"),
)


@dataclass(slots=True)
class WorkerLeave(Message):
    """A worker leaves cleanly (its unique data was handed to peers first)."""

    OP = "worker-leave"
    address: str


fields(WorkerLeave, address=NAME)


@dataclass(slots=True)
class WorkerLost(Message):
    """A worker died (its nanny saw it): what it ran becomes suspect."""

    OP = "worker-lost"
    address: str


fields(WorkerLost, address=NAME)


@dataclass(slots=True)
class AddKeys(Message):
    """``worker`` now holds ``keys`` too (data handed over by a leaving peer)."""

    OP = "add-keys"
    worker: str
    keys: list[str]


fields(AddKeys, worker=NAME, keys=NAMES)


@dataclass(slots=True)
class WorkerStatus(Message):
    OP = "worker-status"
    address: str
    status: str


fields(WorkerStatus, address=NAME, status=OneOf(*WORKER_STATUSES))


class DoneRow(NamedTuple):
    """A task that ran and stored its result."""

    key: str
    nbytes: int
    in_redis: bool  #: the (small) result is in the ``results`` hash
    inline: bytes | None  #: the serialized result itself, when tiny
    duration: float
    type_name: str = ""


DONE_ROW = row_spec(DoneRow, NAME, COUNT, BOOL, Optional(BLOB), SECONDS, TEXT)


def _fast_done_row(row: Any) -> DoneRow | None:
    if type(row) is list and len(row) == 6:
        key, nbytes, in_redis, inline, duration, type_name = row
        if (
            type(key) is str
            and key
            and len(key) <= 65536
            and type(nbytes) is int
            and 0 <= nbytes <= 1 << 53
            and type(in_redis) is bool
            and (inline is None or type(inline) is bytes)
            and type(duration) is float
            and 0.0 <= duration <= 1e11
            and type(type_name) is str
        ):
            return DoneRow(key, nbytes, in_redis, inline, duration, type_name)
    return None


class ErredRow(NamedTuple):
    key: str
    error: bytes  #: serialized (exception, traceback text): opaque to the scheduler
    duration: float


ERRED_ROW = row_spec(ErredRow, NAME, BLOB, SECONDS)


class MissingRow(NamedTuple):
    """``key`` could not start: its inputs ``deps`` were on none of the workers ``tried``."""

    key: str
    deps: list[str]
    tried: list[str]


MISSING_ROW = row_spec(MissingRow, NAME, NAMES, NAMES)


class StolenRow(NamedTuple):
    """The answer to a steal request: ``ok`` when the worker gave ``key`` up unstarted."""

    key: str
    ok: bool


STOLEN_ROW = row_spec(StolenRow, NAME, BOOL)


@dataclass(slots=True)
class TaskDone(Message):
    """A worker's report: everything that happened there since its last report."""

    OP = "task-done"
    worker: str
    done: list[DoneRow] = field(default_factory=list)
    erred: list[ErredRow] = field(default_factory=list)
    replicated: list[str] = field(default_factory=list)  #: dependencies copied here
    missing: list[MissingRow] = field(default_factory=list)
    seceded: list[str] = field(default_factory=list)
    stolen: list[StolenRow] = field(default_factory=list)
    #: tasks that raised ``rdist.Reschedule``: to be placed again, not erred
    rescheduled: list[str] = field(default_factory=list)


fields(
    TaskDone,
    worker=NAME,
    done=Rows(DONE_ROW, _fast_done_row),
    erred=Rows(ERRED_ROW),
    replicated=NAMES,
    missing=Rows(MISSING_ROW),
    seceded=NAMES,
    stolen=Rows(STOLEN_ROW),
    rescheduled=NAMES,
)


def _fast_task_done(body: Any) -> TaskDone | None:
    """The common report: tasks done, nothing else (the rest goes field by field)."""
    worker, rows = body.get("worker"), body.get("done")
    if not _name(worker):
        return None
    for name in ("erred", "replicated", "missing", "seceded", "stolen", "rescheduled"):
        other = body.get(name)
        if other is not None and (type(other) is not list or other):
            return None
    done = []
    if rows is not None:
        if type(rows) is not list:
            return None
        for row in rows:
            decoded = _fast_done_row(row)
            if decoded is None:
                return None
            done.append(decoded)
    return TaskDone(worker, done)


TaskDone.FIELDS.fast = _fast_task_done


#: Everything the ``sched`` stream may carry.
SCHEDULER = Channel(
    "sched",
    UpdateGraph,
    ReleaseKeys,
    Cancel,
    Retry,
    ClientJoin,
    ClientLeave,
    Scatter,
    Restart,
    DropReplicas,
    Barrier,
    WorkerJoin,
    WorkerLeave,
    WorkerLost,
    AddKeys,
    WorkerStatus,
    TaskDone,
    StoryRequest,
    PassKeys,
    RegisterSchedulerPlugin,
    RetireWorkers,
    Shutdown,
    HeldKeys,
    Wake,
    AmmRequest,
    RestartTasks,
)

__all__ = [
    "SCHEDULER",
    "WORKER_STATUSES",
    "AddKeys",
    "Barrier",
    "Cancel",
    "ClientJoin",
    "ClientLeave",
    "DoneRow",
    "DropReplicas",
    "ErredRow",
    "MissingRow",
    "ReleaseKeys",
    "Restart",
    "Retry",
    "Scatter",
    "ScatterItem",
    "StolenRow",
    "StoryRequest",
    "TaskDone",
    "TaskRow",
    "UpdateGraph",
    "Wake",
    "WorkerJoin",
    "WorkerLeave",
    "WorkerLost",
    "WorkerStatus",
]
