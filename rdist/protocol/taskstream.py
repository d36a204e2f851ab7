"""Task-stream records: which task ran where and when, for the dashboard.

Workers append one ``taskstream`` entry per report batch (never one per task), in the same
pipeline that reports the batch to the scheduler, so the record costs no extra round trip.
The dashboard only reads these: they are msgpack with plain-text error summaries, so
showing a failure never needs unpickling user data in the web process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rdist.protocol import messages, serialize

log = logging.getLogger("rdist.taskstream")

#: The stream is capped (MAXLEN ~): it is a recent history, not an archive.
TASKSTREAM_MAXLEN = 5_000
#: Tracebacks are cut to their last characters: the end names the failing line.
TRACEBACK_CHARS = 4_000
MESSAGE_CHARS = 500


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One execution of one task on one worker."""

    key: str
    worker: str
    thread: str  #: name of the reporting thread, "" when the report was batched
    start: float  #: epoch seconds
    stop: float
    status: str  #: "memory" or "erred"
    error: str = ""  #: "TypeName: message" for erred tasks
    traceback: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "worker": self.worker,
            "thread": self.thread,
            "start": self.start,
            "stop": self.stop,
            "status": self.status,
            "error": self.error,
            "traceback": self.traceback,
        }


def error_summary(blob: bytes) -> tuple[str, str]:
    """``("TypeName: message", traceback)`` of a serialized ``(exception, traceback)``.

    Runs in the worker, which made the blob a moment ago and may unpickle its own data;
    the summary it writes is what lets the dashboard show errors without unpickling.
    """
    try:
        exc, tb = serialize.from_blob(blob)
    except Exception as err:  # an exception that will not round-trip is still an error
        return f"error (unreadable: {type(err).__name__})", ""
    text = f"{type(exc).__name__}: {exc}"[:MESSAGE_CHARS]
    return text, str(tb or "")[-TRACEBACK_CHARS:]


def encode_batch(
    worker: str, thread: str, now: float, done: list[list[Any]], erred: list[list[Any]]
) -> bytes | None:
    """One stream payload for a report batch, or None if it cannot be made.

    ``done`` items start ``[key, nbytes, in_redis, inline, duration, ...]`` and ``erred``
    items ``[key, blob, duration]``, as the worker reports them to the scheduler. The stop
    time is the report time (a batch is reported as soon as its tasks end). ``thread`` is
    the reporting thread's name, kept only when it is an executor (``rdist-exec-N``), which
    reports its own task when nothing else is queued. The task stream is for people: if
    the records ever change shape, it is skipped and logged, never in the way of a report.
    """
    thread = thread if thread.startswith("rdist-exec") else ""
    try:
        runs: list[list[Any]] = []
        for item in done:
            key, duration = item[0], float(item[4])
            runs.append([key, worker, thread, now - duration, now, "memory", "", ""])
        for key, blob, duration in erred:
            text, tb = error_summary(blob)
            runs.append([key, worker, thread, now - float(duration), now, "erred", text, tb])
        return messages.pack({"w": worker, "r": runs})
    except Exception:  # noqa: BLE001 -- see the docstring
        log.exception("worker %s: cannot make task-stream records; skipping them", worker)
        return None


def decode_batch(payload: bytes | None) -> list[TaskRun]:
    """Entries of a ``taskstream`` payload; malformed ones are skipped (never raise)."""
    if not payload:
        return []
    try:
        body = messages.unpack(payload)
        rows = body.get("r", []) if isinstance(body, dict) else []
        return [_run(row) for row in rows if isinstance(row, list) and len(row) >= 6]
    except Exception:
        return []


def _run(row: list[Any]) -> TaskRun:
    key, worker, thread, start, stop, status = row[:6]
    error = row[6] if len(row) > 6 else ""
    tb = row[7] if len(row) > 7 else ""
    return TaskRun(
        str(key),
        str(worker),
        str(thread or ""),
        float(start),
        float(stop),
        str(status),
        str(error or ""),
        str(tb or ""),
    )
