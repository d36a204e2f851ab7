"""What the dashboard asks Redis, as plain functions of a store returning JSON-ready dicts.

Read-only, and bounded however big the cluster is: task records are read with HSCAN in
chunks (never HGETALL on ``tasks``), streams with COUNT limits. Nothing here unpickles:
task and worker records are msgpack, errors come from the task stream's plain text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from rdist.protocol import taskstream, wire
from rdist.protocol.taskstream import TaskRun, decode_batch
from rdist.store import RedisStore
from rdist.store.keys import PAYLOAD_FIELD

#: Upper bounds that keep every request cheap on a million-task cluster.
MAX_PAGE = 500
SCAN_CHUNK = 1_000
MAX_SCANNED_PER_PAGE = 50_000
MAX_STREAM_ENTRIES = 2_000
MAX_DEPENDENCIES_SHOWN = 200
MAX_RUNS_SHOWN = 5_000

#: Task states in the order the progress bars show them.
STATES = ("released", "waiting", "queued", "no-worker", "processing", "memory", "erred")

_HEXISH = re.compile(r"^[0-9a-f]{8,}$|^\d+$")


def key_group(key: str) -> str:
    """The task group of a key, as Dask's ``key_split``: ``"square-3f2a..."`` -> ``"square"``.

    Tuple-like keys ``"('x', 1)"`` give ``"x"``; hash-like and numeric parts are dropped.
    """
    text = key.strip()
    if text.startswith("(") and "," in text:
        text = text[1:].split(",", 1)[0].strip(" '\"")
    words = []
    for word in text.split("-"):
        if _HEXISH.match(word):
            break
        words.append(word)
    return "-".join(words) or text[:20] or "?"


def jsonable(value: Any) -> Any:
    """msgpack values made JSON-safe: bytes become text (decoded, or hex when binary)."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    return value


# -- workers ---------------------------------------------------------------------------------
def workers(store: RedisStore, now: float | None = None) -> list[dict[str, Any]]:
    """Every registered worker with its latest metrics (the hash has one entry per worker)."""
    now = time.time() if now is None else now
    out = []
    for address, record in store.workers.all().items():  # corrupt records are skipped
        info: dict[str, Any] = jsonable(record.to_wire())
        info["address"] = address
        info["name"] = record.name or address
        info["age"] = round(now - record.last_seen, 3) if record.last_seen else None
        out.append(info)
    out.sort(key=lambda w: str(w.get("name", "")))
    return out


def worker_summary(infos: list[dict[str, Any]]) -> dict[str, Any]:
    def total(field: str) -> float:
        return sum(float(w.get(field) or 0) for w in infos)

    return {
        "count": len(infos),
        "threads": int(total("nthreads")),
        "memory": int(total("memory")),
        "memory_limit": int(total("memory_limit")),
        "cpu": round(total("cpu"), 1),
        "executing": int(total("executing")),
        "stored": int(total("stored")),
        "stored_bytes": int(total("stored_bytes")),
        "executed": int(total("executed")),
    }


# -- tasks -----------------------------------------------------------------------------------
def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _task_row(key: str, record: wire.TaskRecord) -> dict[str, Any]:
    holders = record.who_has
    return {
        "key": key,
        "state": record.state,
        "group": key_group(key),
        "worker": record.processing_on or (holders[0] if holders else None),
        "nbytes": record.nbytes,
        "type": record.type_name,
        "dependencies": len(record.deps),
    }


def tasks_page(
    store: RedisStore,
    cursor: int = 0,
    limit: int = 50,
    state: str | None = None,
    query: str | None = None,
) -> dict[str, Any]:
    """One page of tasks by HSCAN cursor; ``cursor == 0`` in the answer means the end.

    Filtering happens while scanning, and one request scans at most ``MAX_SCANNED_PER_PAGE``
    records, so a rare state on a huge cluster returns a short page with a cursor to go on.
    """
    limit = max(1, min(limit, MAX_PAGE))
    filtered = bool(state or query)
    match = f"*{_glob_escape(query)}*" if query else None
    rows: list[dict[str, Any]] = []
    scanned = 0
    while True:
        # A page may hold a few more rows than asked: HSCAN hands out whole chunks, and
        # cutting one would lose the rest (the cursor is already past them).
        cursor, chunk = store.tasks.scan(
            cursor, count=SCAN_CHUNK if filtered else limit, match=match
        )
        for task_key, record in chunk.items():
            if state and record.state != state:
                continue
            rows.append(_task_row(task_key, record))
        scanned += SCAN_CHUNK if filtered else limit
        if cursor == 0 or len(rows) >= limit or scanned >= MAX_SCANNED_PER_PAGE:
            break
    return {"tasks": rows, "cursor": int(cursor), "total": store.tasks.count()}


def as_text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def task_detail(store: RedisStore, key: str) -> dict[str, Any] | None:
    """Everything the dashboard knows about one key, or None when the scheduler forgot it."""
    record = store.tasks.get(key)
    runs = task_runs(store, key)
    if record is None and not runs:
        return None
    deps = record.deps if record is not None else []
    shown = deps[:MAX_DEPENDENCIES_SHOWN]
    dep_records = store.tasks.get_many(shown)
    erred = next((r for r in runs if r.status == "erred"), None)
    return {
        "key": key,
        "group": key_group(key),
        "state": record.state if record is not None else "forgotten",
        "priority": list(record.priority) if record is not None else None,
        "worker": record.processing_on if record is not None else None,
        "who_has": record.who_has if record is not None else [],
        "who_wants": record.who_wants if record is not None else [],
        "nbytes": record.nbytes if record is not None else 0,
        "in_redis": record.in_redis if record is not None else False,
        "type": record.type_name if record is not None else "",
        "dependencies": [
            {"key": d, "state": r.state if (r := dep_records.get(d)) else "forgotten"}
            for d in shown
        ],
        "more_dependencies": max(0, len(deps) - len(shown)),
        "runs": [r.to_json() for r in runs],
        "error": erred.error if erred else None,
        "traceback": erred.traceback if erred else None,
    }


def task_runs(store: RedisStore, key: str, max_entries: int = MAX_STREAM_ENTRIES) -> list[TaskRun]:
    """Executions of ``key`` in the recent task stream, newest first (a bounded scan)."""
    found: list[TaskRun] = []
    for _, runs in _stream_back(store, store.keys.taskstream, max_entries):
        found.extend(r for r in runs if r.key == key)
    return sorted(found, key=lambda r: -r.stop)[:20]


def _stream_back(
    store: RedisStore, stream: str, max_entries: int, since_ms: int = 0
) -> Iterable[tuple[str, list[TaskRun]]]:
    """Task-stream entries' runs newest first, stopping at ``since_ms`` or the cap."""
    for entry_id, payload in _entries_back(store, stream, max_entries, since_ms):
        yield entry_id, decode_batch(payload)


def transfers_of(payload: bytes | None) -> list[dict[str, Any]]:
    """The peer fetches a task-stream entry records, as JSON (none where it records none)."""
    if _decode_transfers is None:
        return []
    return [t.to_json() for t in _decode_transfers(payload)]


#: The task stream's transfers come with the diagnostics work (``decode_transfers`` of
#: ``rdist.protocol.taskstream``); a build without it has runs only.
_decode_transfers = getattr(taskstream, "decode_transfers", None)


def _entries_back(
    store: RedisStore, stream: str, max_entries: int, since_ms: int = 0
) -> Iterable[tuple[str, bytes | None]]:
    """Stream entries (id, payload) newest first, in chunks, stopping at ``since_ms`` or
    the cap."""
    upper: str = "+"
    seen = 0
    while seen < max_entries:
        chunk = store.streams.before(
            stream, upper, min(500, max_entries - seen), lower=str(since_ms) if since_ms else "-"
        )
        if not chunk:
            return
        for entry_id, fields in chunk:
            yield as_text(entry_id), fields.get(PAYLOAD_FIELD)
        seen += len(chunk)
        upper = _before(as_text(chunk[-1][0]))
        if upper == "":
            return


def _before(entry_id: str) -> str:
    """The largest stream id below ``entry_id`` (an inclusive bound that excludes it)."""
    ms, _, seq = entry_id.partition("-")
    if int(seq or 0) > 0:
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-18446744073709551615" if int(ms) > 0 else ""


def recent_runs(
    store: RedisStore, window: float = 60.0, now: float | None = None
) -> list[dict[str, Any]]:
    """Task executions that ended in the last ``window`` seconds, oldest first (bounded)."""
    return recent_activity(store, window, now)[0]


def recent_activity(
    store: RedisStore, window: float = 60.0, now: float | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The runs and the transfers of the last ``window`` seconds, oldest first (bounded)."""
    now = time.time() if now is None else now
    since_ms = int((now - window) * 1000)
    runs: list[TaskRun] = []
    transfers: list[dict[str, Any]] = []
    for _, payload in _entries_back(store, store.keys.taskstream, MAX_STREAM_ENTRIES, since_ms):
        runs.extend(decode_batch(payload))
        transfers.extend(transfers_of(payload))
        if len(runs) >= MAX_RUNS_SHOWN:
            break
    runs.sort(key=lambda r: r.stop)
    transfers.sort(key=lambda t: float(t["stop"]))
    return [r.to_json() for r in runs[-MAX_RUNS_SHOWN:]], transfers[-MAX_RUNS_SHOWN:]


def task_rate(store: RedisStore, window: float = 10.0, now: float | None = None) -> float:
    """Tasks finished per second over the last ``window`` seconds, from the task stream."""
    now = time.time() if now is None else now
    since_ms = int((now - window) * 1000)
    count = sum(
        len(batch)
        for _, batch in _stream_back(store, store.keys.taskstream, MAX_STREAM_ENTRIES, since_ms)
    )
    return round(count / window, 2)


# -- events ------------------------------------------------------------------------------------
def decode_event(entry_id: str, payload: bytes | None) -> dict[str, Any]:
    """One ``events`` entry as JSON; one that does not decode shows as ``unknown``."""
    try:
        event = wire.ClusterEvent.decode(payload)
        op, info = event.kind, jsonable(event.info)
    except wire.MalformedMessage:
        op, info = "unknown", {}
    ms = int(entry_id.partition("-")[0] or 0)
    return {"id": entry_id, "time": ms / 1000, "op": op, "info": info}


def events_page(store: RedisStore, before: str | None = None, limit: int = 100) -> dict[str, Any]:
    """Cluster events newest first; ``before`` (an entry id) pages back in time."""
    limit = max(1, min(limit, MAX_PAGE))
    upper = _before(before) if before else "+"
    if upper == "":
        return {"events": [], "next": None}
    chunk = store.streams.before(store.keys.events, upper, limit)
    events = [decode_event(as_text(i), f.get(PAYLOAD_FIELD)) for i, f in chunk]
    return {"events": events, "next": events[-1]["id"] if len(events) == limit else None}
