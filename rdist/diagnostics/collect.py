"""What a performance report shows, read from Redis for one time window.

Everything comes from the streams the cluster writes anyway -- the task stream (runs and
transfers), the heartbeats (memory, CPU), the events, the profiler's batches -- so making
a report costs the cluster nothing while it runs, and a report can be made by any client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rdist.client import diagnostics as diag
from rdist.protocol.groups import key_split
from rdist.protocol.wire import ClusterEvent, Heartbeat, MalformedMessage, TaskRun, TransferRun
from rdist.store import RedisStore
from rdist.store.keys import PAYLOAD_FIELD

#: Heartbeats and events are read this much beyond the window (a short run still shows one
#: heartbeat of each worker).
MARGIN = 2.0
#: At most this many entries of a capped stream are read.
MAX_ENTRIES = 20_000
#: How long a report waits for the profiler's last batch (workers send it once idle).
PROFILE_SETTLE = 1.5


@dataclass
class Window:
    """The raw material of one report."""

    start: float
    stop: float
    runs: list[TaskRun] = field(default_factory=list)
    transfers: list[TransferRun] = field(default_factory=list)


def group_totals(runs: Iterable[TaskRun], name_of: Any = None) -> list[dict[str, Any]]:
    """Per task group (or whatever ``name_of(run)`` names): count, erred, total duration
    and bytes, the longest total first."""
    name_of = name_of or (lambda run: key_split(run.key))
    totals: dict[str, dict[str, Any]] = {}
    for run in runs:
        name = name_of(run)
        if name is None:
            continue
        row = totals.setdefault(name, {"count": 0, "erred": 0, "duration": 0.0, "nbytes": 0})
        row["count"] += 1
        row["erred"] += run.status != "memory"
        row["duration"] += max(0.0, run.stop - run.start)
        row["nbytes"] += run.nbytes
    return sorted(
        ({"group": name, **row} for name, row in totals.items()), key=lambda r: -r["duration"]
    )


def span_totals(store: RedisStore, runs: list[TaskRun]) -> list[dict[str, Any]]:
    """Per span of the runs (``rdist.span``; names joined with " / "), the same totals as
    :func:`group_totals`; an enclosing span counts the runs of the spans inside it."""
    ids = sorted({r.span for r in runs if r.span})
    names = {i: t.names for i, t in store.spans.get_many(ids).items()}
    rows: list[dict[str, Any]] = []
    depth = max((len(n) for n in names.values()), default=0)
    for level in range(1, depth + 1):

        def name_of(run: TaskRun, level: int = level) -> str | None:
            tags = names.get(run.span)
            return " / ".join(tags[:level]) if tags and len(tags) >= level else None

        rows += group_totals(runs, name_of)
    rows.sort(key=lambda r: r["group"])
    return [{"span": r.pop("group"), **r} for r in rows]


def worker_series(store: RedisStore, start: float, stop: float) -> tuple[dict[str, Any], ...]:
    """``(memory, cpu)``: per worker, ``[[time, value], ...]`` from the heartbeats."""
    memory: dict[str, list[list[float]]] = {}
    cpu: dict[str, list[list[float]]] = {}
    for _, fields in reversed(_entries(store, store.keys.heartbeats, start, stop)):
        try:
            beat = Heartbeat.decode(fields.get(PAYLOAD_FIELD), "heartbeats")
        except MalformedMessage:
            continue
        if start - MARGIN <= beat.last_seen <= stop + MARGIN:
            memory.setdefault(beat.worker, []).append([beat.last_seen, beat.memory])
            cpu.setdefault(beat.worker, []).append([beat.last_seen, beat.cpu])
    for address, record in store.workers.all().items():  # how each stands now: a run
        if record.last_seen >= start - MARGIN:  # shorter than a heartbeat still shows them
            memory.setdefault(address, []).append([record.last_seen, record.memory])
            cpu.setdefault(address, []).append([record.last_seen, record.cpu])
    for series in (*memory.values(), *cpu.values()):
        series.sort()
    return memory, cpu


def cluster_events(store: RedisStore, start: float, stop: float) -> list[dict[str, Any]]:
    out = []
    for entry_id, fields in reversed(_entries(store, store.keys.events, start, stop)):
        try:
            event = ClusterEvent.decode(fields.get(PAYLOAD_FIELD))
        except MalformedMessage:
            continue
        moment = int(entry_id.split(b"-")[0]) / 1000
        info = json.dumps(event.info, default=str, sort_keys=True)[:300]
        out.append({"time": moment, "kind": event.kind, "info": info})
    return out


def _entries(store: RedisStore, stream: str, start: float, stop: float) -> list[Any]:
    lower = str(max(0, int((start - MARGIN) * 1000)))
    upper = str(int((stop + MARGIN) * 1000))
    return store.streams.before(stream, upper, MAX_ENTRIES, lower)


def settled_profile(store: RedisStore, window: Window) -> dict[str, Any]:
    """The profile of the window, once the workers' last batches are in (a worker sends
    its samples as soon as it goes idle; a report made right after its computation would
    otherwise miss the end of it)."""
    last_run = max((r.stop for r in window.runs), default=0.0)
    deadline = time.monotonic() + PROFILE_SETTLE
    while True:
        batches = store.profiles.between(window.start, window.stop + MARGIN)
        if (
            not window.runs
            or any(b.stop >= last_run - 0.05 for b in batches)
            or time.monotonic() >= deadline
        ):
            break
        time.sleep(0.1)  # bounded (PROFILE_SETTLE): the batch is on its way
    return diag.profile(store, None, window.start, window.stop + MARGIN)


def report_data(store: RedisStore, window: Window) -> dict[str, Any]:
    """The report's sections (see ``rdist.diagnostics.html.SECTIONS``)."""
    records = diag.task_records(window.runs, window.transfers)
    memory, cpu = worker_series(store, window.start, window.stop)
    events = cluster_events(store, window.start, window.stop)
    state = settled_profile(store, window)
    erred = sum(r.status != "memory" for r in window.runs)
    moved = sum(t.nbytes for t in window.transfers)
    return {
        "summary": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(window.start)),
            "duration": f"{window.stop - window.start:.2f} s",
            "tasks": len(window.runs),
            "erred": erred,
            "compute time": f"{sum(r.stop - r.start for r in window.runs):.2f} s",
            "transfers": len(window.transfers),
            "transferred": f"{moved / 2**20:.1f} MiB",
            "workers": len({r.worker for r in window.runs} | set(memory)),
            "profile samples": state.get("count", 0),
        },
        "task_stream": records,
        "groups": group_totals(window.runs),
        "spans": span_totals(store, window.runs),
        "transfers": [t.to_json() for t in window.transfers],
        "memory": memory,
        "cpu": cpu,
        "profile": state,
        "events": events,
    }
