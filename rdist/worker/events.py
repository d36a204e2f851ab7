"""Events the worker's state machine consumes and instructions it emits.

The worker's shell turns stream entries and thread completions into events; every event
carries a ``stimulus_id`` (a stream entry id, or a named internal cause) and the ``time``
it happened, so the machine itself never reads a clock. Instructions say what the shell
must do: run a task, fetch data, drop data, tell the scheduler. All are small slotted
dataclasses (see ``distributed.worker_state_machine`` for the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rdist.protocol.wire import Compute, DepInfo

# -- events ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Event:
    stimulus_id: str
    time: float


@dataclass(slots=True)
class ComputeTask(Event):
    """The scheduler assigned ``key`` here (one ``c`` action of a batch)."""

    key: str
    priority: tuple[Any, ...]
    deps: dict[str, DepInfo]
    resources: dict[str, float] | None = None
    clients: list[str] | None = None
    #: the loaded spec, opaque here: ``(function, args blob, mode)`` or the exception that
    #: running the task must raise (no spec in Redis, a corrupt one)
    spec: Any = None

    @classmethod
    def from_wire(cls, action: Compute, spec: Any, stimulus_id: str, time: float) -> ComputeTask:
        return cls(
            stimulus_id,
            time,
            action.key,
            action.priority,
            action.deps,
            action.resources or None,
            action.clients or None,
            spec,
        )


@dataclass(slots=True)
class ComputeTasks(Event):
    """The compute actions of one stream entry, in order (one event for a whole batch of
    assignments: the common case, a map's hundred tasks per entry, makes no per-task event).
    ``specs`` holds the loaded spec of each key that needed one (see ``ComputeTask.spec``)."""

    actions: list[Compute]
    specs: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FreeKeys(Event):
    """The scheduler released these keys here: drop their data, cancel them if running."""

    keys: list[str]


@dataclass(slots=True)
class StealRequest(Event):
    """The scheduler would move ``key`` elsewhere: give it up unless it started."""

    key: str


@dataclass(slots=True)
class DataArrived(Event):
    """Values of ``keys`` were stored here by the shell: pushed by a client or a leaving
    peer, gathered on request, or small inputs loaded from Redis (``replica``: the scheduler
    is told we hold a copy)."""

    keys: list[str]
    replica: bool = False


@dataclass(slots=True)
class GatherDepSuccess(Event):
    """Fetched inputs, stored here by the shell."""

    keys: list[str]


@dataclass(slots=True)
class GatherDepFailed(Event):
    """Inputs that none of the workers ``tried`` could give."""

    keys: list[str]
    tried: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ExecuteSuccess(Event):
    """``key`` ran and its value is stored; ``row`` is the shell's report of it (opaque)."""

    key: str
    duration: float
    row: Any = None


@dataclass(slots=True)
class ExecuteFailure(Event):
    """``key`` raised (or its result could not be serialized); ``error`` is the serialized
    ``(exception, traceback)``."""

    key: str
    duration: float
    error: bytes = b""
    #: it raised ``rdist.Reschedule``: the scheduler places it again, it is no error
    reschedule: bool = False


@dataclass(slots=True)
class Secede(Event):
    """The running task ``key`` left the thread budget (``secede()``)."""

    key: str


@dataclass(slots=True)
class RejoinRequest(Event):
    """The seceded task ``key`` wants a thread slot again (``rejoin()``)."""

    key: str


@dataclass(slots=True)
class Pause(Event):
    """Memory is past the pause fraction: start nothing new."""


@dataclass(slots=True)
class Unpause(Event):
    pass


@dataclass(slots=True)
class ResetState(Event):
    """``client.restart()`` or a rejoin after being declared dead: forget every task and all
    data; tasks still running are abandoned (their results are dropped when they end)."""


# -- instructions ------------------------------------------------------------------------------


@dataclass(slots=True)
class Instruction:
    stimulus_id: str


@dataclass(slots=True)
class Execute(Instruction):
    """Run ``key`` (its thread slot is already counted). ``inline``: the thread that got
    this may run it itself -- its kind is known to take less than a thread hand-off, and it
    is not a task that a run just made ready (a chain's next link goes to an executor, so
    the thread that ran the link reads again and reports it: the scheduler waits on that)."""

    key: str
    spec: Any
    inline: bool = False


@dataclass(slots=True)
class GatherDep(Instruction):
    """Fetch these inputs from the workers holding them (one instruction per stimulus)."""

    wanted: dict[str, DepInfo]


@dataclass(slots=True)
class ReleaseData(Instruction):
    """Drop the stored values of ``keys`` (one instruction per stimulus)."""

    keys: list[str]


@dataclass(slots=True)
class RejoinGranted(Instruction):
    """The seceded task ``key`` holds a thread slot again: wake its thread."""

    key: str


@dataclass(slots=True)
class SendReport(Instruction):
    """One item of the next report to the scheduler (``task-done``)."""


@dataclass(slots=True)
class ReportSuccess(SendReport):
    """``key`` ran and its result is stored; ``row`` is what the shell made of it."""

    key: str
    row: Any
    clients: list[str] | None = None


@dataclass(slots=True)
class ReportInMemory(SendReport):
    """Asked to compute a key whose value is already here."""

    key: str
    clients: list[str] | None = None


@dataclass(slots=True)
class ReportError(SendReport):
    key: str
    error: bytes
    duration: float


@dataclass(slots=True)
class ReportMissing(SendReport):
    """``key`` cannot start: its inputs ``deps`` were on none of the workers ``tried``."""

    key: str
    deps: list[str]
    tried: list[str]


@dataclass(slots=True)
class ReportStolen(SendReport):
    """The answer to a steal request."""

    key: str
    ok: bool


@dataclass(slots=True)
class ReportRescheduled(SendReport):
    """The task raised ``Reschedule``: the scheduler should place it again."""

    key: str


@dataclass(slots=True)
class ReportSeceded(SendReport):
    key: str


@dataclass(slots=True)
class ReportReplicas(SendReport):
    """Inputs copied here: the scheduler records the replicas so it frees them later."""

    keys: list[str]
