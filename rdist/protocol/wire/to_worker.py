"""Messages on a worker's stream (``worker:<address>``): from the scheduler, clients, peers.

The scheduler sends one ``batch`` per worker per scheduling round, holding every action of
that round in order; clients send ``run`` (``client.run``); the data plane's Redis path
sends ``publish`` / ``load`` requests and their answers (see :mod:`rdist.comm.relay`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from rdist.protocol.wire.base import (
    BLOB,
    BOOL,
    COUNT,
    INT64,
    MAX_COUNT,
    MAX_NAME_CHARS,
    MAX_PRIORITY_PARTS,
    NAME,
    NAMES,
    PRIORITY,
    RESOURCES,
    TEXT,
    Channel,
    Codec,
    DictOf,
    MalformedMessage,
    Message,
    OneOf,
    Optional,
    fields,
    row_spec,
)
from rdist.protocol.wire.extension import ActorCall, PluginAdded, PluginRemoved
from rdist.protocol.wire.retire import Retire
from rdist.protocol.wire.stacks import StackRequest
from rdist.protocol.wire.to_scheduler import StoryRequest


class DepInfo(NamedTuple):
    """Where a task's input is: the workers holding it, its size, whether Redis has it."""

    holders: list[str]
    nbytes: int
    in_redis: bool


DEP_INFO = row_spec(DepInfo, NAMES, COUNT, BOOL)


class Compute(NamedTuple):
    """Run ``key`` here once its inputs ``deps`` are local."""

    key: str
    priority: tuple[Any, ...]
    deps: dict[str, DepInfo]
    resources: dict[str, float] | None = None
    #: the task's spec when the scheduler still had it (its first assignment); otherwise
    #: the worker loads it from the ``specs`` hash
    spec: bytes | None = None
    #: clients the worker tells itself when the result is stored (one hop less)
    clients: list[str] | None = None


class Free(NamedTuple):
    """Forget these keys: drop their data, cancel them if they run."""

    keys: list[str]


class Steal(NamedTuple):
    """Give ``key`` up unless it started (answered in the next report's ``stolen``)."""

    key: str


Action = Compute | Free | Steal

_COMPUTE = row_spec(
    Compute,
    NAME,
    PRIORITY,
    DictOf(NAME, DEP_INFO),
    Optional(RESOURCES),
    Optional(BLOB),
    Optional(NAMES),
)
_FREE = row_spec(Free, NAMES)
_STEAL = row_spec(Steal, NAME)
_TAGS: dict[str, Any] = {"c": _COMPUTE, "f": _FREE, "s": _STEAL}
_TAG_OF = {Compute: "c", Free: "f", Steal: "s"}
_MAX_NAME, _MAX_PRIORITY, _MAX_COUNT, _INT64 = MAX_NAME_CHARS, MAX_PRIORITY_PARTS, MAX_COUNT, INT64


def _names(values: Any) -> bool:
    """Whether ``values`` is a list of non-empty strings (checked without a generator)."""
    if type(values) is not list:
        return False
    for v in values:
        if type(v) is not str or not v or len(v) > _MAX_NAME:
            return False
    return True


def _fast_compute(row: list[Any]) -> Compute | None:
    """The common compute action checked without error bookkeeping (None: ask the slow path).

    Per task on the worker's hot path: plain loops, no generators, one tuple per input."""
    if len(row) != 7:
        return None
    _, key, priority, deps, resources, spec, clients = row
    if (
        type(key) is not str
        or not key
        or len(key) > _MAX_NAME
        or type(priority) is not list
        or len(priority) > _MAX_PRIORITY
        or type(deps) is not dict
        or resources is not None
        or (spec is not None and type(spec) is not bytes)
        or (clients is not None and not _names(clients))
    ):
        return None
    for p in priority:
        if type(p) is not int or not -_INT64 <= p < _INT64:
            return None
    if not deps:
        return Compute(key, tuple(priority), {}, None, spec, clients)
    checked = {}
    for dep, info in deps.items():
        if type(dep) is not str or not dep or type(info) is not list or len(info) != 3:
            return None
        holders, nbytes, in_redis = info
        if (
            not _names(holders)
            or type(nbytes) is not int
            or not 0 <= nbytes <= _MAX_COUNT
            or type(in_redis) is not bool
        ):
            return None
        checked[dep] = DepInfo(holders, nbytes, in_redis)
    return Compute(key, tuple(priority), checked, None, spec, clients)


def _fast_free(row: list[Any]) -> Free | None:
    """The free action checked without error bookkeeping (None: ask the slow path)."""
    if len(row) != 2 or not _names(row[1]):
        return None
    return Free(row[1])


class Actions(Codec):
    """The actions of a batch: rows tagged ``c`` (compute), ``f`` (free), ``s`` (steal)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(plain=False)

    def decode(self, value: Any, field: str) -> list[Action]:
        if type(value) is not list:
            raise MalformedMessage(f"expected a list of actions, got {type(value).__name__}", field)
        out: list[Action] = []
        for i, row in enumerate(value):
            if type(row) is not list or not row or type(row[0]) is not str or row[0] not in _TAGS:
                tag = row[0] if type(row) is list and row else row
                raise MalformedMessage(
                    f"an action is a list tagged c, f or s; got {tag!r:.40}", f"{field}[{i}]"
                )
            tag = row[0]
            fast = _fast_compute(row) if tag == "c" else _fast_free(row) if tag == "f" else None
            out.append(fast if fast is not None else _TAGS[tag].decode(row[1:], f"{field}[{i}]"))
        return out

    def encode(self, value: Any) -> Any:
        out: list[list[Any]] = []
        for a in value:
            if type(a) is Compute:  # (the scheduler's hot path: what _COMPUTE.encode gives)
                out.append(["c", a.key, list(a.priority), a.deps, a.resources, a.spec, a.clients])
            else:
                tag = _TAG_OF[type(a)]
                out.append([tag, *_TAGS[tag].encode(a)])
        return out


@dataclass(slots=True)
class Batch(Message):
    """Everything the scheduler decided for this worker in one round, in order."""

    OP = "batch"
    actions: list[Action]

    def to_wire(self) -> dict[str, Any]:
        """(What the generic encoding gives, without its bookkeeping: one per worker per
        scheduling round.)"""
        return {"a": _ACTIONS.encode(self.actions), "op": "batch"}


_ACTIONS = Actions()
fields(Batch, {"actions": "a"}, actions=_ACTIONS)


@dataclass(slots=True)
class Run(Message):
    """``client.run``: call a pickled ``(function, args, kwargs)`` here, answer the client."""

    OP = "run"
    client: str
    id: str
    func: bytes


fields(Run, client=NAME, id=NAME, func=BLOB)


@dataclass(slots=True)
class Stop(Message):
    """Leave the cluster (``LocalCluster.scale`` down, ``client.shutdown``)."""

    OP = "stop"


fields(Stop)


@dataclass(slots=True)
class RestartWorker(Message):
    """``client.restart()``: drop every task and all data (under a nanny: a new process)."""

    OP = "restart"


fields(RestartWorker)


class ReplyTo(NamedTuple):
    """Who asked: a worker (``w``) or a client (``c``), by address or id; ``n``: nobody
    waits for an answer (the scheduler's memory manager, which hears of new copies from
    the worker's ``replicated`` report)."""

    kind: str
    ident: str


REPLY_TO = row_spec(ReplyTo, OneOf("w", "c", "n"), TEXT)


@dataclass(slots=True)
class Publish(Message):
    """Write ``keys`` we hold into Redis under request ``id``, then answer (Redis path)."""

    OP = "publish"
    id: str
    keys: list[str]
    to: ReplyTo


@dataclass(slots=True)
class Load(Message):
    """Load ``keys`` pushed into Redis under request ``id`` (scatter through Redis)."""

    OP = "load"
    id: str
    keys: list[str]
    to: ReplyTo


for _cls in (Publish, Load):
    fields(_cls, id=NAME, keys=NAMES, to=REPLY_TO)


@dataclass(slots=True)
class GatherKeys(Message):
    """Copy ``keys`` here from their holders (``replicate``, ``rebalance``), then answer."""

    OP = "gather-keys"
    id: str
    keys: dict[str, list[str]]  #: key -> workers holding it
    to: ReplyTo


fields(GatherKeys, id=NAME, keys=DictOf(NAME, NAMES), to=REPLY_TO)


# -- answers (to a worker's or a client's stream) ---------------------------------------------


@dataclass(slots=True)
class Published(Message):
    OP = "published"
    id: str
    keys: list[str]
    missing: list[str]
    error: str | None = None


fields(Published, id=NAME, keys=NAMES, missing=NAMES, error=Optional(TEXT))


@dataclass(slots=True)
class Loaded(Message):
    OP = "loaded"
    id: str
    error: str | None = None


fields(Loaded, id=NAME, error=Optional(TEXT))


@dataclass(slots=True)
class Gathered(Message):
    OP = "gathered"
    id: str
    worker: str
    keys: list[str]
    missing: list[str]


fields(Gathered, id=NAME, worker=NAME, keys=NAMES, missing=NAMES)

#: The data plane's answers, which reach workers and clients alike.
DATA_REPLIES: tuple[type[Message], ...] = (Published, Loaded, Gathered)

#: Everything a worker's stream may carry (``story``: a client asks every worker too).
WORKER = Channel(
    "worker",
    Batch,
    Run,
    Stop,
    RestartWorker,
    Publish,
    Load,
    GatherKeys,
    StoryRequest,
    *DATA_REPLIES,
    PluginAdded,
    PluginRemoved,
    ActorCall,
    StackRequest,
    Retire,
)

__all__ = [
    "DATA_REPLIES",
    "WORKER",
    "Action",
    "Batch",
    "Compute",
    "DepInfo",
    "Free",
    "GatherKeys",
    "Gathered",
    "Load",
    "Loaded",
    "Publish",
    "Published",
    "ReplyTo",
    "RestartWorker",
    "Run",
    "Steal",
    "Stop",
]
