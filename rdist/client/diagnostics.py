"""What ``client.get_task_stream`` and ``client.profile`` read: the task stream and the
profiler's batches, from Redis, in dask's shapes.

- A task-stream record is dask's: ``{"key", "worker", "thread", "startstops": [{"action":
  "compute", "start", "stop"}], "status": "OK" | "error", "nbytes", "type"}`` (an erred one
  also has ``exception`` text and ``traceback``). A fetch from a peer is a record of its
  own, of the fetched key on the worker that fetched it, with one ``{"action": "transfer",
  "start", "stop", "source"}`` (dask puts that startstop into the record of the task that
  needed the input; rdist's workers record fetches per key, not per dependent).
- A profile is dask's profile dict (``rdist.protocol.profile.to_dask``).

``client.profile(filename=...)`` writes an HTML flame graph; the page is made by the
diagnostics package, above the client in rdist's layers, so that module is named here at
import time (:func:`register_renderer`) rather than imported, as the cluster is
(``rdist.client.local_cluster``).
"""

from __future__ import annotations

import datetime
import importlib
import re
import time
from typing import TYPE_CHECKING, Any

from rdist.protocol import profile as trees
from rdist.protocol.taskstream import decode_batch, decode_transfers
from rdist.protocol.wire import TaskRun, TransferRun

if TYPE_CHECKING:
    from rdist.store import RedisStore

__all__ = [
    "profile",
    "register_renderer",
    "task_records",
    "task_stream",
    "time_bound",
]

#: Entries of the task stream read at most for one answer (it is capped anyway).
MAX_ENTRIES = 20_000
#: A window is read this much wider by entry id: entries are stamped by Redis's clock,
#: runs by the workers'.
CLOCK_SLACK = 5.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ms|s|m|min|h)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_renderer: str | None = None


def register_renderer(module: str) -> None:
    """Name the module whose ``write_profile(path, profile_dict, title)`` makes the page."""
    global _renderer
    _renderer = module


def time_bound(value: Any, now: float | None = None) -> float | None:
    """A window bound as epoch seconds, from what dask accepts: None, epoch seconds, a
    ``datetime``, a ``timedelta`` or a duration string (``"10s"``, ``"500ms"``: that long
    ago)."""
    if value is None:
        return None
    now = time.time() if now is None else now
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, datetime.timedelta):
        return now - value.total_seconds()
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"not a time or duration: {value!r} (e.g. '10s', '500ms')")
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"a time bound is seconds, a datetime, a timedelta or '10s', not {value!r}")


def task_stream(
    store: RedisStore, start: float | None, stop: float | None
) -> tuple[list[TaskRun], list[TransferRun]]:
    """The runs and transfers that ended in ``[start, stop]``, oldest first."""
    lower = "-" if start is None else str(max(0, int((start - CLOCK_SLACK) * 1000)))
    upper = "+" if stop is None else str(int((stop + CLOCK_SLACK) * 1000))
    entries = store.streams.before(store.keys.taskstream, upper, MAX_ENTRIES, lower)
    runs: list[TaskRun] = []
    moves: list[TransferRun] = []
    for _, fields in reversed(entries):
        payload = fields.get(b"m")
        runs += (r for r in decode_batch(payload) if _within(r.stop, start, stop))
        moves += (t for t in decode_transfers(payload) if _within(t.stop, start, stop))
    runs.sort(key=lambda r: r.start)
    moves.sort(key=lambda t: t.start)
    return runs, moves


def _within(moment: float, start: float | None, stop: float | None) -> bool:
    return (start is None or moment >= start) and (stop is None or moment <= stop)


def task_records(
    runs: list[TaskRun], moves: list[TransferRun], count: int | None = None
) -> list[dict[str, Any]]:
    """dask's records (see the module docstring), by start time; the last ``count`` only
    when given (dask's "the most recent")."""
    records = [_run_record(r) for r in runs] + [_transfer_record(t) for t in moves]
    records.sort(key=lambda r: r["startstops"][0]["start"])
    return records[-count:] if count else records


def _run_record(run: TaskRun) -> dict[str, Any]:
    record: dict[str, Any] = {
        "key": run.key,
        "worker": run.worker,
        "thread": run.thread or None,
        "startstops": [{"action": "compute", "start": run.start, "stop": run.stop}],
        "status": "OK" if run.status == "memory" else "error",
        "nbytes": run.nbytes,
        "type": run.type_name,
    }
    if run.status != "memory":
        record["exception"] = run.error
        record["traceback"] = run.traceback
    return record


def _transfer_record(move: TransferRun) -> dict[str, Any]:
    return {
        "key": move.key,
        "worker": move.worker,
        "thread": None,
        "startstops": [
            {"action": "transfer", "start": move.start, "stop": move.stop, "source": move.source}
        ],
        "status": "OK",
        "nbytes": move.nbytes,
        "type": "",
    }


def profile(
    store: RedisStore,
    key: str | None = None,
    start: float | None = None,
    stop: float | None = None,
    workers: list[str] | None = None,
) -> dict[str, Any]:
    """dask's profile dict of the samples in ``[start, stop]`` (of task group ``key`` only
    when given; of ``workers`` only when given)."""
    batches = store.profiles.between(start, stop)
    if workers is not None:
        wanted = set(workers)
        batches = [b for b in batches if b.worker in wanted]
    groups = trees.merge_groups((b.groups for b in batches), key)
    return trees.to_dask(trees.merge(groups.values()))


def write_profile(path: str, state: dict[str, Any], title: str) -> None:
    _render().write_profile(path, state, title)


def write_task_stream(path: str, records: list[dict[str, Any]]) -> None:
    _render().write_task_stream(path, records)


def _render() -> Any:
    if _renderer is None:
        raise RuntimeError("no HTML renderer registered (rdist registers it on import)")
    return importlib.import_module(_renderer)
