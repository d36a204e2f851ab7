"""Running tasks: the executor threads, quick tasks on the stream thread, specs to values.

Which task runs when is the state machine's decision (:mod:`rdist.worker.state`): it emits
an :class:`~rdist.worker.events.Execute` only for a task holding a thread slot. Here those
are carried out -- by an executor thread, or by the thread that got the instruction when
the task is known to be quick -- and their outcome goes back to the machine as an event.

Long-running tasks (:func:`secede`) give their slot back: a replacement thread starts, so a
task waiting on subtasks never holds the thread those need, even on a one-thread worker;
:func:`rejoin` waits until the machine grants a slot again.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections import deque
from types import CoroutineType, TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from rdist import task_context
from rdist.exceptions import Reschedule
from rdist.protocol import serialize, spec, tracebacks
from rdist.supervise import start_thread
from rdist.worker.context import (  # noqa: F401  (the task-side API, re-exported)
    TaskContext,
    bind_worker,
    current,
    get_client,
    rejoin,
    secede,
    secede_before_waiting,
    set_current,
    worker_client,
)
from rdist.worker.events import (
    Execute,
    ExecuteFailure,
    ExecuteSuccess,
    RejoinRequest,
    Secede,
    SendReport,
)
from rdist.worker.sizeof import sizeof
from rdist.worker.state import INLINE_SECONDS  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from rdist.worker.server import Worker
    from rdist.worker.tracing import TaskTracer

#: Results up to this size (serialized) are also stored in Redis.
REDIS_RESULT_BYTES = 64 * 1024
#: The stream thread runs quick tasks for at most this long before reading again: its
#: reports ride that read, and a worker dying with finished, unreported work makes the
#: scheduler run that work again (and count it against those tasks' allowed failures).
INLINE_BUDGET = 0.005
#: Span tags of runs awaiting their report kept at most (see Worker.task_spans).
MAX_SPAN_TAGS = 100_000


class Outcome(NamedTuple):
    """What a successful run left, for its report."""

    nbytes: int
    blob: bytes | None  #: the serialized value, when small enough to store in Redis
    duration: float
    type_name: str
    stop: float = 0.0  #: when it ended (epoch seconds): the task stream's stop time


Ran = tuple[list[Execute], list[SendReport], TaskContext]


class Executor:
    """The worker's executor threads and the runs of single tasks."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._queue: queue.SimpleQueue[Execute | None] = queue.SimpleQueue()
        self._rejoins: dict[str, threading.Event] = {}  #: seceded tasks waiting for a slot
        self._lock = threading.Lock()
        #: thread id -> key of the task it runs now (the dashboard's call stacks)
        self.running: dict[int, str] = {}

    def start_thread(self, name: str) -> None:
        worker = self.worker
        thread = start_thread(name, self._loop, worker.stop_event, worker.on_thread_death)
        worker.threads.append(thread)

    def submit(self, executes: list[Execute]) -> None:
        """Hand instructions to the executor threads."""
        for ex in executes:
            self._queue.put(ex)

    def close(self) -> None:
        for _ in range(len(self.worker.threads) + 1):
            self._queue.put(None)
        with self._lock:
            for event in self._rejoins.values():
                event.set()

    def _loop(self) -> None:
        worker = self.worker
        bind_worker(worker)
        while True:
            ex = self._queue.get()
            while ex is not None and not worker.stop_event.is_set():
                executes, reports, context = self.run(ex)
                ex = executes.pop(0) if executes else None  # the next runs here: no hand-off
                if executes:
                    self.submit(executes)
                if ex is None and self._queue.empty() and worker.reporter.idle():
                    worker.reporter.report(reports)  # nothing to batch with: skip a hop
                else:
                    worker.reporter.put(reports)
                if context.replaced:  # it seceded: a replacement thread took our place
                    if ex is not None:
                        self.submit([ex])
                    return
            if worker.stop_event.is_set():
                return

    def run_inline(self, executes: list[Execute]) -> list[SendReport]:
        """On the stream thread: run the tasks the machine let run inline here (no thread
        hand-off, one report for all, sent with the next read) for at most
        :data:`INLINE_BUDGET`; the others, and what is left when the budget is spent, go
        to the executor threads."""
        reports: list[SendReport] = []
        pending = deque(executes)
        deadline = time.monotonic() + INLINE_BUDGET
        while pending:
            ex = pending.popleft()
            if not ex.inline or time.monotonic() >= deadline:
                self.submit([ex])
                continue
            more, done, context = self.run(ex)
            reports += done
            pending.extend(more)
            if context.replaced:  # it seceded: this thread must go back to reading
                self.submit(list(pending))
                break
        return reports

    def run(self, ex: Execute) -> Ran:
        """Run one task and tell the state machine how it went."""
        worker = self.worker
        key = ex.key
        context = TaskContext(self, key)
        task_context.set_current(context)
        profiler = worker.profiler
        ident = threading.get_ident()
        profiler.begin(key, ident)
        self.running[ident] = key
        try:
            if worker.tracer is None:
                event = self._execute(ex)
            else:
                event = self._traced(ex, worker.tracer)
        finally:
            profiler.end(ident)
            self.running.pop(ident, None)
            task_context.set_current(None)
        executes, reports = worker.handle(event)
        return executes, reports, context

    def _traced(self, ex: Execute, tracer: TaskTracer) -> ExecuteSuccess | ExecuteFailure:
        """The run as an OpenTelemetry span (rdist.worker.tracing)."""
        names = ex.spec[3] if isinstance(ex.spec, tuple) and len(ex.spec) > 3 else None
        with tracer.span(ex.key, names[1:] if names else None) as span:
            event = self._execute(ex)
            span.set_attribute(
                "rdist.status", "erred" if isinstance(event, ExecuteFailure) else "memory"
            )
        return event

    def _execute(self, ex: Execute) -> ExecuteSuccess | ExecuteFailure:
        worker = self.worker
        start = time.time()
        try:
            if isinstance(ex.spec, Exception):
                raise ex.spec
            func, args_blob, mode, span = ex.spec
            if span is not None:  # rdist.span(): the report adds the run to its totals
                if len(worker.task_spans) > MAX_SPAN_TAGS:  # runs never reported (cancelled)
                    worker.task_spans.clear()
                worker.task_spans[ex.key] = span
            value = spec.run_spec(func, args_blob, mode, worker.data)
            if isinstance(value, CoroutineType):  # an ``async def`` task: on the worker's loop
                value = worker.actors.run_coroutine(value)
        except Reschedule:  # not a failure: the scheduler places the task again
            now = time.time()
            stimulus = worker.stimulus("reschedule")
            return ExecuteFailure(stimulus, now, ex.key, now - start, reschedule=True)
        except BaseException as exc:  # the task's failure is data, not ours
            now = time.time()
            blob = error_blob(exc, traceback.format_exc(), exc.__traceback__)
            return ExecuteFailure(worker.stimulus("task-erred"), now, ex.key, now - start, blob)
        now = time.time()
        worker.executed += 1
        try:
            outcome, frames = _outcome(ex.key, value, now - start, now)
            worker.data.set(ex.key, value, outcome.nbytes, frames)  # may spill: not under the lock
        except Exception as exc:  # the result cannot be sized, pickled or kept: the task errs
            error: BaseException = exc
            if isinstance(exc, serialize.SerializationError):
                error = TypeError(f"result of task {ex.key!r} cannot be serialized: {exc}")
            blob = error_blob(error, traceback.format_exc())
            return ExecuteFailure(worker.stimulus("task-erred"), now, ex.key, now - start, blob)
        return ExecuteSuccess(worker.stimulus("task-finished"), now, ex.key, now - start, outcome)

    # -- secede / rejoin -----------------------------------------------------------------------
    def seceded(self, context: TaskContext) -> None:
        """``secede()`` in a task: a replacement thread starts (for the stream too, when the
        task runs on the stream thread) and the machine frees the task's slot."""
        worker = self.worker
        context.replaced = True
        worker.stream_reader.hand_over_if_mine()
        self.start_thread("rdist-exec-x")
        executes, reports = worker.handle(
            Secede(worker.stimulus("secede"), time.time(), context.key)
        )
        self.submit(executes)
        worker.reporter.put(reports)

    def rejoin(self, context: TaskContext) -> None:
        """Block until the machine grants the seceded task a slot again."""
        worker = self.worker
        granted = threading.Event()
        with self._lock:
            self._rejoins[context.key] = granted
        try:
            event = RejoinRequest(worker.stimulus("rejoin"), time.time(), context.key)
            executes, reports = worker.handle(event)
            self.submit(executes)
            worker.reporter.put(reports)
            while not granted.wait(1.0) and not worker.stop_event.is_set():
                pass
        finally:
            with self._lock:
                self._rejoins.pop(context.key, None)

    def granted(self, key: str) -> None:
        with self._lock:
            event = self._rejoins.get(key)
        if event is not None:
            event.set()


def _outcome(
    key: str, value: object, duration: float, stop: float = 0.0
) -> tuple[Outcome, list[Any] | None]:
    """The report of a result, and its serialized frames when it is large (kept for its
    first transfer or spill)."""
    estimate = sizeof(value)
    blob = None
    if estimate <= REDIS_RESULT_BYTES:
        blob = serialize.to_blob(value)
        if len(blob) > REDIS_RESULT_BYTES:
            blob = None
    frames = None
    if blob is None:
        # Large results stay in memory, yet must be transferable: fail now (erring the
        # task) rather than at the first fetch. The frames are kept, so this is the only
        # pickling (buffers stay out of band: for arrays they are views, free).
        frames = serialize.dumps(value)
    nbytes = len(blob) if blob is not None else estimate
    return Outcome(nbytes, blob, duration, type(value).__name__, stop), frames


def error_blob(exc: BaseException, tb: str, where: TracebackType | None = None) -> bytes:
    """The serialized ``(exception, traceback text, frames)`` of a failure (a stand-in
    exception when the real one cannot be pickled); the frames let the client rebuild a
    traceback object (rdist.protocol.tracebacks)."""
    frames = tracebacks.frames_of(where)
    try:
        return serialize.to_blob((exc, tb, frames))
    except serialize.SerializationError:
        return serialize.to_blob((RuntimeError(f"{type(exc).__name__}: {exc}"), tb, frames))
