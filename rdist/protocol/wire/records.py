"""Records stored in hashes, and the entries of the informational streams.

- ``tasks`` hash: :class:`TaskRecord` per key (what a restarted scheduler rebuilds from, and
  what ``who_has`` and the dashboard read); short field names, empty fields left out.
- ``workers`` hash: :class:`WorkerRecord` per address (identity plus latest metrics).
- ``clients`` hash: :class:`ClientRecord` per client id (its heartbeat).
- ``heartbeats`` stream: :class:`Heartbeat`; ``events`` stream: :class:`ClusterEvent`;
  ``taskstream`` stream: :class:`TaskStreamBatch` of :class:`TaskRun` rows.
- ``transfer:*`` hashes (data through Redis): :class:`RelayMeta` beside the raw chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rdist.protocol.wire.base import (
    ANY,
    BOOL,
    COUNT,
    NAME,
    NAMES,
    PRIORITY,
    RESOURCES,
    TEXT,
    TIMESTAMP,
    Integer,
    ListOf,
    MalformedMessage,
    Number,
    OneOf,
    Optional,
    Record,
    Rows,
    Text,
    fields,
    pack,
    row_spec,
    unpack,
)
from rdist.protocol.wire.to_scheduler import WORKER_STATUSES

#: Task states as stored (the scheduler's ``TaskState`` values; a test pins the two together).
TASK_STATES = (
    "released",
    "waiting",
    "queued",
    "no-worker",
    "processing",
    "memory",
    "erred",
    "forgotten",
)


@dataclass(slots=True)
class TaskRecord(Record):
    """One task as the scheduler last wrote it: enough to answer ``who_has`` and to rebuild."""

    KIND = "task record"
    state: str
    priority: tuple[Any, ...]
    deps: list[str] = field(default_factory=list)
    who_has: list[str] = field(default_factory=list)
    nbytes: int = 0
    in_redis: bool = False
    who_wants: list[str] = field(default_factory=list)
    processing_on: str | None = None
    type_name: str = ""
    restrictions: list[str] | None = None
    loose: bool = False
    retries: int = 0
    resources: dict[str, float] | None = None
    blame: str | None = None
    error_text: str | None = None
    error_kind: str | None = None
    suspicious: int = 0  #: workers that died while running it

    def to_wire(self) -> dict[str, Any]:
        """The sparse map, built field by field: the scheduler writes one per changed task
        per batch. Byte for byte what the scheduler always wrote: flags as ``1`` and an
        erred task's ``b`` even when empty (``tests/test_scheduler_outbox.py`` pins it)."""
        out: dict[str, Any] = {"s": self.state, "p": list(self.priority)}
        if self.deps:
            out["d"] = self.deps
        if self.who_has:
            out["wh"] = self.who_has
        if self.nbytes:
            out["nb"] = self.nbytes
        if self.in_redis:
            out["r"] = 1
        if self.who_wants:
            out["ww"] = self.who_wants
        if self.processing_on:
            out["on"] = self.processing_on
        if self.type_name:
            out["t"] = self.type_name
        if self.restrictions:
            out["w"] = self.restrictions
        if self.loose:
            out["l"] = 1
        if self.retries:
            out["rt"] = self.retries
        if self.resources:
            out["res"] = self.resources
        if self.blame or self.state == "erred":
            out["b"] = self.blame
        if self.error_text is not None:
            out["et"] = self.error_text
        if self.error_kind is not None:
            out["ek"] = self.error_kind
        if self.suspicious:
            out["k"] = self.suspicious
        return out


fields(
    TaskRecord,
    {
        "state": "s",
        "priority": "p",
        "deps": "d",
        "who_has": "wh",
        "nbytes": "nb",
        "in_redis": "r",
        "who_wants": "ww",
        "processing_on": "on",
        "type_name": "t",
        "restrictions": "w",
        "loose": "l",
        "retries": "rt",
        "resources": "res",
        "blame": "b",
        "error_text": "et",
        "error_kind": "ek",
        "suspicious": "k",
    },
    sparse=True,
    state=OneOf(*TASK_STATES),
    priority=PRIORITY,
    deps=NAMES,
    who_has=NAMES,
    nbytes=COUNT,
    in_redis=BOOL,
    who_wants=NAMES,
    processing_on=Optional(NAME),
    type_name=TEXT,
    restrictions=Optional(NAMES),
    loose=BOOL,
    retries=Integer(0, 1 << 30),
    resources=Optional(RESOURCES),
    blame=Optional(NAME),
    error_text=Optional(TEXT),
    error_kind=Optional(Text(64)),
    suspicious=Integer(0, 1 << 20),
)


class TaskSummary(NamedTuple):
    """What the dashboard's census counts of a task record (a third of a full decode)."""

    state: str
    processing_on: str | None
    nbytes: int
    who_wants: list[str]


_STATE_SET = frozenset(TASK_STATES)


def summarize_task(payload: Any) -> TaskSummary | None:
    """The census's fields of a stored :class:`TaskRecord`, checked for their types only
    (the rest of the record is not looked at); None when they are not what they must be."""
    try:
        body = unpack(payload, "task record")
    except MalformedMessage:
        return None
    if type(body) is not dict:
        return None
    state, on, nbytes, wants = body.get("s"), body.get("on"), body.get("nb", 0), body.get("ww")
    if state not in _STATE_SET or (on is not None and type(on) is not str):
        return None
    if type(nbytes) is not int or nbytes < 0:
        return None
    if wants is None:
        return TaskSummary(state, on, nbytes, [])
    if type(wants) is not list or any(type(w) is not str for w in wants):
        return None
    return TaskSummary(state, on, nbytes, wants)


@dataclass(slots=True)
class WorkerRecord(Record):
    """A worker's identity and its latest metrics (rewritten by every heartbeat)."""

    KIND = "worker record"
    address: str
    name: str
    nthreads: int
    memory_limit: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    host: str = ""
    pid: int = 0
    status: str = "running"
    started: float = 0.0
    transfer: str = "auto"
    memory: int = 0  #: resident set size, bytes
    cpu: float = 0.0  #: percent of one core since the previous heartbeat
    executing: int = 0
    stored: int = 0  #: keys held
    stored_bytes: int = 0
    spilled_bytes: int = 0
    executed: int = 0
    last_seen: float = 0.0
    #: cumulative I/O counters (the dashboard draws their rates): the host's network
    #: bytes (a process has no counter of its own) and this process's disk bytes
    net_sent: int = 0
    net_recv: int = 0
    disk_read: int = 0
    disk_write: int = 0


fields(
    WorkerRecord,
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
    memory=COUNT,
    cpu=Number(0.0, 1e6),
    executing=COUNT,
    stored=COUNT,
    stored_bytes=COUNT,
    spilled_bytes=COUNT,
    executed=COUNT,
    last_seen=TIMESTAMP,
    net_sent=COUNT,
    net_recv=COUNT,
    disk_read=COUNT,
    disk_write=COUNT,
)


@dataclass(slots=True)
class ClientRecord(Record):
    """A client's heartbeat: a client silent past the client TTL is dropped."""

    KIND = "client record"
    name: str
    last_seen: float


fields(ClientRecord, name=TEXT, last_seen=TIMESTAMP)


@dataclass(slots=True)
class Heartbeat(Record):
    """One worker's metrics at one moment (the ``heartbeats`` stream, capped)."""

    KIND = "heartbeat"
    worker: str
    memory: int = 0
    cpu: float = 0.0
    executing: int = 0
    stored: int = 0
    stored_bytes: int = 0
    spilled_bytes: int = 0
    executed: int = 0
    last_seen: float = 0.0
    net_sent: int = 0  #: as in :class:`WorkerRecord`
    net_recv: int = 0
    disk_read: int = 0
    disk_write: int = 0


fields(
    Heartbeat,
    worker=NAME,
    memory=COUNT,
    cpu=Number(0.0, 1e6),
    executing=COUNT,
    stored=COUNT,
    stored_bytes=COUNT,
    spilled_bytes=COUNT,
    executed=COUNT,
    last_seen=TIMESTAMP,
    net_sent=COUNT,
    net_recv=COUNT,
    disk_read=COUNT,
    disk_write=COUNT,
)


@dataclass(slots=True)
class ClusterEvent:
    """An entry of the ``events`` log: a kind (``worker-joined``, ``restart``, ...) and a
    free-form map of plain values about it. Stored as the map with ``op`` = kind."""

    kind: str
    info: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return pack({**self.info, "op": self.kind})

    @classmethod
    def decode(cls, payload: Any, where: str = "events") -> ClusterEvent:
        body = unpack(payload, where)
        if type(body) is not dict:
            raise MalformedMessage(f"expected a map, got {type(body).__name__}", where=where)
        info = {str(k): v for k, v in body.items() if k != "op"}
        return cls(Text(256, empty=False).decode(body.get("op"), "op"), info)


@dataclass(slots=True)
class TopicEvent:
    """One event a user logged on a topic (``client.log_event``): when, and the message --
    any msgpack value, as in dask. Stored as ``[time, msg]``."""

    time: float
    msg: Any

    def encode(self) -> bytes:
        return pack([self.time, self.msg])

    @classmethod
    def decode(cls, payload: Any, where: str = "topic") -> TopicEvent:
        body = unpack(payload, where)
        if type(body) is not list or len(body) != 2:
            raise MalformedMessage("expected [time, msg]", where=where)
        return cls(TIMESTAMP.decode(body[0], "time"), body[1])


class TaskRun(NamedTuple):
    """One execution of one task on one worker (the dashboard's task stream)."""

    key: str
    worker: str
    thread: str  #: the executor thread that reported it, "" when reported in a batch
    start: float  #: epoch seconds
    stop: float
    status: str  #: "memory" or "erred"
    error: str = ""  #: "TypeName: message" of an erred task: shown without unpickling
    traceback: str = ""
    nbytes: int = 0  #: the result's size (0 for an erred task)
    type_name: str = ""  #: the result's type name
    span: str = ""  #: the id of the ``rdist.span`` it was submitted in ("" for none)

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


TASK_RUN = row_spec(
    TaskRun,
    NAME,
    NAME,
    TEXT,
    TIMESTAMP,
    TIMESTAMP,
    OneOf("memory", "erred"),
    TEXT,
    TEXT,
    COUNT,
    TEXT,
    TEXT,
)


class TransferRun(NamedTuple):
    """One dependency a worker fetched from a peer (the task stream's transfers)."""

    key: str
    worker: str  #: the worker that fetched it
    source: str  #: the worker it came from
    start: float  #: epoch seconds (the fetch of the batch it was part of)
    stop: float
    nbytes: int

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


TRANSFER_RUN = row_spec(TransferRun, NAME, NAME, NAME, TIMESTAMP, TIMESTAMP, COUNT)


@dataclass(slots=True)
class TaskStreamBatch(Record):
    """The runs of one worker report (one entry per report, never one per task)."""

    KIND = "task-stream entry"
    worker: str
    runs: list[TaskRun]
    #: fetches from peers since the last report (absent in entries of older workers)
    transfers: list[TransferRun] = field(default_factory=list)


fields(
    TaskStreamBatch,
    {"worker": "w", "runs": "r", "transfers": "x"},
    worker=NAME,
    runs=Rows(TASK_RUN),
    transfers=Rows(TRANSFER_RUN),
)


@dataclass(slots=True)
class RelayMeta(Record):
    """How the chunks of one value moved through Redis fit together."""

    KIND = "relay header"
    head: Any  #: the serialization header (checked by ``serialize.decode_frames``)
    chunks: list[int]  #: chunks per frame


fields(RelayMeta, {"chunks": "n"}, head=ANY, chunks=ListOf(Integer(0, 1 << 32)))

__all__ = [
    "TASK_STATES",
    "TaskSummary",
    "summarize_task",
    "ClientRecord",
    "ClusterEvent",
    "Heartbeat",
    "RelayMeta",
    "TaskRecord",
    "TaskRun",
    "TaskStreamBatch",
    "TopicEvent",
    "TransferRun",
    "WorkerRecord",
]
