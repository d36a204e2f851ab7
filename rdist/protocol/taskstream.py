"""Task-stream records: which task ran where and when, for the dashboard.

Workers append one ``taskstream`` entry per report batch (never one per task), in the same
pipeline that reports the batch to the scheduler, so the record costs no extra round trip.
The dashboard only reads these: they are msgpack with plain-text error summaries, so
showing a failure never needs unpickling user data in the web process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from rdist.protocol import serialize, tracebacks
from rdist.protocol.wire import (
    DoneRow,
    ErredRow,
    MalformedMessage,
    TaskRun,
    TaskStreamBatch,
    TransferRun,
    unpack,
)
from rdist.protocol.wire.records import TASK_RUN

log = logging.getLogger("rdist.taskstream")

#: Tracebacks are cut to their last characters: the end names the failing line.
TRACEBACK_CHARS = 4_000
MESSAGE_CHARS = 500

__all__ = [
    "TaskRun",
    "TransferRun",
    "decode_batch",
    "decode_transfers",
    "encode_batch",
    "error_summary",
]


def error_summary(blob: bytes) -> tuple[str, str]:
    """``("TypeName: message", traceback)`` of a serialized error (see ``error_blob``).

    Runs in the worker, which made the blob a moment ago and may unpickle its own data;
    the summary it writes is what lets the dashboard show errors without unpickling.
    """
    try:
        failure = tracebacks.split_error(serialize.from_blob(blob))
    except Exception as err:  # an exception that will not round-trip is still an error
        return f"error (unreadable: {type(err).__name__})", ""
    if failure is None:
        return "error (unreadable: not an exception)", ""
    exc, tb, _ = failure
    text = f"{type(exc).__name__}: {exc}"[:MESSAGE_CHARS]
    return text, str(tb or "")[-TRACEBACK_CHARS:]


def encode_batch(
    worker: str,
    thread: str,
    now: float,
    done: Sequence[DoneRow | list[Any]],
    erred: Sequence[ErredRow | list[Any]],
    transfers: Sequence[TransferRun] = (),
    span_of: Mapping[str, str] | None = None,
    stops: Mapping[str, float] | None = None,
) -> bytes | None:
    """One stream payload for a report batch, or None if it cannot be made.

    ``done`` and ``erred`` are the rows of the report (typed, or as plain lists);
    ``transfers`` the fetches from peers since the last entry; ``span_of`` the span id of
    each key run inside an ``rdist.span``; ``stops`` when each run ended (a run without
    one is taken to have ended at ``now``, the report's time: batched runs would overlap).
    The stop time is the report time (a batch is reported as soon as its tasks end).
    ``thread`` is the reporting thread's name, kept only when it is an executor
    (``rdist-exec-N``), which reports its own task when nothing else is queued. The task
    stream is for people: if the records cannot be made, it is skipped and logged, never
    in the way of a report.
    """
    thread = thread if thread.startswith("rdist-exec") else ""
    try:
        finished = [DoneRow._make(d) if isinstance(d, list) else d for d in done]
        failed = [ErredRow._make(e) if isinstance(e, list) else e for e in erred]
        spans, ends = span_of or {}, stops or {}
        runs = [
            TaskRun(
                d.key,
                worker,
                thread,
                ends.get(d.key, now) - d.duration,
                ends.get(d.key, now),
                "memory",
                "",
                "",
                d.nbytes,
                d.type_name,
                spans.get(d.key, ""),
            )
            for d in finished
        ]
        for e in failed:
            text, tb = error_summary(e.error)
            span = spans.get(e.key, "")
            runs.append(
                TaskRun(
                    e.key, worker, thread, now - e.duration, now, "erred", text, tb, 0, "", span
                )
            )
        return TaskStreamBatch(worker, runs, list(transfers)).encode()
    except Exception:  # see the docstring
        log.exception("worker %s: cannot make task-stream records; skipping them", worker)
        return None


def decode_batch(payload: bytes | None) -> list[TaskRun]:
    """The runs of a ``taskstream`` payload; a malformed entry yields its good rows only
    (the dashboard shows what it can: one odd row must not hide a whole report)."""
    if not payload:
        return []
    try:
        return TaskStreamBatch.decode(payload, "taskstream").runs
    except MalformedMessage:
        pass
    try:
        body = unpack(payload, "taskstream")
    except MalformedMessage:
        return []
    rows = body.get("r") if isinstance(body, dict) else None
    return [run for run in map(_run_or_none, rows if isinstance(rows, list) else []) if run]


def _run_or_none(row: Any) -> TaskRun | None:
    try:
        run: TaskRun = TASK_RUN.decode(row, "r")
        return run
    except MalformedMessage:
        return None


def decode_transfers(payload: bytes | None) -> list[TransferRun]:
    """The transfers of a ``taskstream`` payload ([] when it has none or is malformed)."""
    if not payload:
        return []
    try:
        return TaskStreamBatch.decode(payload, "taskstream").transfers
    except MalformedMessage:
        return []
