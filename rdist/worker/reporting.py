"""Telling the scheduler (and the waiting clients) what happened: one pipeline per batch.

The state machine's :class:`~rdist.worker.events.SendReport` items of a batch become one
``task-done`` for the scheduler, one ``notify`` per client that wants a key directly, the
small results for the ``results`` hash and one task-stream entry for the dashboard -- all
queued on one pipeline: that of the stream thread's next read, or the reporter's own.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rdist.protocol import taskstream
from rdist.protocol.wire import (
    DoneRow,
    ErredRow,
    KeyInMemory,
    MissingRow,
    Notify,
    StolenRow,
    TaskDone,
    TransferRun,
)
from rdist.store import RedisStore
from rdist.store.connection import ConnectionErrors
from rdist.store.health import Backoff
from rdist.worker.events import (
    ReportError,
    ReportInMemory,
    ReportMissing,
    ReportRescheduled,
    ReportSeceded,
    ReportStolen,
    ReportSuccess,
    SendReport,
)

if TYPE_CHECKING:
    from rdist.worker.server import Worker

log = logging.getLogger("rdist.worker")

#: Results up to this size travel inside the completion and client notification.
INLINE_BYTES = 16 * 1024
#: Attempts to send a report while Redis is unavailable (with a growing pause).
REPORT_ATTEMPTS = 30


class Report:
    """One batch of report items, turned into the wire records that carry them."""

    def __init__(self, worker: Worker) -> None:
        self.address = worker.address
        self.done: list[DoneRow] = []
        self.erred: list[ErredRow] = []
        self.missing: list[MissingRow] = []
        self.seceded: list[str] = []
        self.stolen: list[StolenRow] = []
        self.rescheduled: list[str] = []
        self.results: dict[str, bytes] = {}
        self.notify: dict[str, list[KeyInMemory]] = {}  #: client -> items told directly
        #: key -> when its run ended, for the task stream (else the report's time is used)
        self.stops: dict[str, float] = {}
        self._worker = worker

    def add(self, item: SendReport) -> None:
        if isinstance(item, ReportSuccess):  # the common case first
            self._success(item)
        elif isinstance(item, ReportInMemory):
            self._in_memory(item)
        elif isinstance(item, ReportError):
            self.results[item.key] = item.error
            self.erred.append(ErredRow(item.key, item.error, item.duration))
        elif isinstance(item, ReportMissing):
            self.missing.append(MissingRow(item.key, item.deps, item.tried))
        elif isinstance(item, ReportSeceded):
            self.seceded.append(item.key)
        elif isinstance(item, ReportStolen):
            self.stolen.append(StolenRow(item.key, item.ok))
        elif isinstance(item, ReportRescheduled):
            self.rescheduled.append(item.key)

    def _success(self, item: ReportSuccess) -> None:
        key, outcome = item.key, item.row
        blob = outcome.blob
        in_redis = blob is not None
        if in_redis:
            self.results[key] = blob
        inline = blob if in_redis and len(blob) <= INLINE_BYTES else None
        if outcome.stop:
            self.stops[key] = outcome.stop
        self.done.append(
            DoneRow(key, outcome.nbytes, in_redis, inline, outcome.duration, outcome.type_name)
        )
        if item.clients:  # (what _tell does, inline: once per task)
            told = KeyInMemory(
                key, outcome.nbytes, in_redis, [self.address], outcome.type_name, inline
            )
            notify = self.notify
            for client in item.clients:
                items = notify.get(client)
                if items is None:
                    notify[client] = [told]
                else:
                    items.append(told)

    def _in_memory(self, item: ReportInMemory) -> None:
        data = self._worker.data
        key = item.key
        nbytes, type_name = data.nbytes.get(key, 0), type(data.get(key)).__name__
        self.done.append(DoneRow(key, nbytes, False, None, 0.0, type_name))
        if item.clients:
            self._tell(item.clients, KeyInMemory(key, nbytes, False, [self.address], type_name))

    def _tell(self, clients: list[str], item: KeyInMemory) -> None:
        """Clients waiting on a key hear of it from us directly: one hop less."""
        for client in clients:
            self.notify.setdefault(client, []).append(item)

    def _spans(self, now: float, pipe: Any) -> dict[str, str]:
        """The span ids of this report's runs (``rdist.span``); their totals are added to
        the spans' in Redis on ``pipe`` (a few commands per span, none without spans)."""
        tagged = self._worker.task_spans
        span_of: dict[str, str] = {}
        totals: dict[str, list[Any]] = {}
        rows = [(d.key, False, d.duration, d.nbytes) for d in self.done]
        rows += [(e.key, True, e.duration, 0) for e in self.erred]
        for key, failed, duration, nbytes in rows:
            span = tagged.pop(key, None)
            if span is None:
                continue
            span_of[key] = span[0]
            entry = totals.setdefault(span[0], [span[1:], 0, 0, 0.0, 0])
            entry[1] += 1
            entry[2] += failed
            entry[3] += duration
            entry[4] += nbytes
        spans = self._worker.store.spans
        for ident, (names, count, erred, duration, nbytes) in totals.items():
            spans.add(ident, names, (count, erred, duration, nbytes), now, pipe)
        if totals:
            spans.trim(pipe)
        return span_of

    def queue_on(self, pipe: Any, replicated: list[str]) -> bool:
        """Queue the writes on ``pipe``; False when there is nothing to say."""
        if not (
            self.done
            or self.erred
            or replicated
            or self.missing
            or self.seceded
            or self.stolen
            or self.rescheduled
        ):
            return False
        store = self._worker.store
        # the results first: a client told of a key may read it at once
        store.results.put_many(self.results, pipe)
        # the task stream before the clients, too: a client's get_task_stream() that
        # follows its futures' completion sees their runs
        if self.done or self.erred:  # one entry per batch: the dashboard's task stream
            thread, now = threading.current_thread().name, time.time()
            transfers = _drain(self._worker.transfers)
            span_of = self._spans(now, pipe) if self._worker.task_spans else {}
            runs = taskstream.encode_batch(
                self.address, thread, now, self.done, self.erred, transfers, span_of, self.stops
            )
            if runs is not None:
                count = len(self.done) + len(self.erred) + len(transfers)
                store.streams.task_runs(runs, pipe, count)
        # clients before the scheduler: they wait on this; the scheduler copes with a
        # client's message about a key (release, dependents) arriving before its completion
        for client, items in self.notify.items():
            store.streams.to_client(client, Notify(list(items)), pipe)
        message = TaskDone(
            self.address,
            self.done,
            self.erred,
            replicated,
            self.missing,
            self.seceded,
            self.stolen,
            self.rescheduled,
        )
        store.streams.to_scheduler(message, pipe)
        return True


def _drain(rows: deque[TransferRun]) -> list[TransferRun]:
    """Everything in ``rows`` now (other threads append meanwhile: popleft is atomic)."""
    out = []
    for _ in range(len(rows)):
        try:
            out.append(rows.popleft())
        except IndexError:
            break
    return out


class Reporter:
    """Batches report items of the executor and fetch threads into one pipeline each."""

    def __init__(self, worker: Worker, store: RedisStore) -> None:
        self.worker = worker
        self.store = store  #: its own connection: the stream thread's blocks on reads
        #: (a SimpleQueue: its put and get are single C calls, and every task's report
        #: items pass here when the executor runs tasks back to back)
        self._queue: queue.SimpleQueue[list[SendReport] | None] = queue.SimpleQueue()

    def put(self, items: list[SendReport]) -> None:
        if items:
            self._queue.put(items)

    def idle(self) -> bool:
        return self._queue.empty()

    def stop(self) -> None:
        self._queue.put(None)

    def run(self) -> None:
        """Drain the queue into one report per pass, until :meth:`stop`."""
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = list(first)
            while True:
                try:
                    items = self._queue.get_nowait()
                except queue.Empty:
                    break
                if items is None:
                    self._queue.put(None)
                    break
                batch += items
            self.report(batch)

    def report(self, items: Iterable[SendReport], into: Any = None) -> None:
        """Send one report of ``items`` (and the replicas gathered since the last one);
        queued on ``into`` when given (the caller sends it with its next read)."""
        report = Report(self.worker)
        for item in items:
            report.add(item)
        replicated = self.worker.take_replicas()
        if into is not None:
            report.queue_on(into, replicated)
            return
        backoff = Backoff(f"worker {self.worker.address}: reporting", self.store.url, log)
        for _ in range(REPORT_ATTEMPTS):
            try:
                pipe = self.store.raw_pipeline()
                if report.queue_on(pipe, replicated):
                    pipe.execute()
                backoff.succeeded()
                return
            except ConnectionErrors as exc:
                backoff.wait(exc)  # a permanent error raises
