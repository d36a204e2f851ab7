"""What the worker, graph, clients and dead-letter pages ask Redis, bounded like ``queries``.

A worker's tasks and data come from a bounded HSCAN of ``tasks`` (a huge cluster gives
a partial list and says so); the graph page loads a graph only when the whole hash fits
``MAX_GRAPH_TASKS`` (it never reads more); dead letters page back through their stream.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from rdist.protocol import wire
from rdist.store import RedisStore
from rdist.store.streams import DEADLETTER_RAW_BYTES
from rdist.web.census import TaskCensus
from rdist.web.queries import (
    MAX_PAGE,
    SCAN_CHUNK,
    STATES,
    _before,
    as_text,
    jsonable,
    key_group,
    recent_runs,
)

#: The graph page draws up to this many tasks; above, it says so and loads nothing.
MAX_GRAPH_TASKS = 10_000
#: Records a worker page scans for the tasks and data of its worker.
MAX_WORKER_SCAN = 20_000
MAX_WORKER_ROWS = 200
#: Tasks walked for each client's graphs, and the clients walked per request.
MAX_CLIENT_GRAPH = 5_000
MAX_CLIENTS_WALKED = 20


# -- one worker ------------------------------------------------------------------------------
def worker_detail(store: RedisStore, address: str, now: float | None = None) -> dict[str, Any]:
    """A worker's record, the tasks assigned to it, the data it holds, its recent runs."""
    now = time.time() if now is None else now
    record = store.workers.get_many([address]).get(address)
    processing: list[dict[str, Any]] = []
    data: list[dict[str, Any]] = []
    cursor, scanned = 0, 0
    while True:
        cursor, chunk = store.tasks.scan(cursor, count=SCAN_CHUNK)
        scanned += SCAN_CHUNK
        for key, task in chunk.items():
            if task.processing_on == address and len(processing) < MAX_WORKER_ROWS:
                processing.append({"key": key, "group": key_group(key), "state": task.state})
            if address in task.who_has and len(data) < MAX_WORKER_ROWS:
                data.append({"key": key, "group": key_group(key), "nbytes": task.nbytes})
        if cursor == 0 or scanned >= MAX_WORKER_SCAN:
            break
    runs = [r for r in recent_runs(store, 300, now) if r["worker"] == address][-MAX_WORKER_ROWS:]
    info = None
    if record is not None:
        info = jsonable(record.to_wire())
        info["age"] = round(now - record.last_seen, 3) if record.last_seen else None
    return {
        "address": address,
        "info": info,
        "processing": processing,
        "data": sorted(data, key=lambda d: -int(d["nbytes"] or 0)),
        "runs": runs,
        "complete": cursor == 0,  #: False: a big cluster, only part of ``tasks`` was read
    }


#: Log lines shown on a worker's page (its own and its nanny's buffer).
MAX_LOG_LINES = 300


def worker_logs(store: RedisStore, address: str) -> dict[str, Any]:
    """The last lines of the worker's and its nanny's log buffers (``logs:<role>:<id>``),
    oldest first. The buffers come with the logging work (``store.logs``); a build
    without it says so (``available: False``)."""
    logs = getattr(store, "logs", None)
    if logs is None:
        return {"available": False, "lines": []}
    lines = []
    for role in ("worker", "nanny"):
        for line in logs.tails(role, [address], MAX_LOG_LINES).get(address, []):
            lines.append(
                {
                    "role": role,
                    "time": line.time,
                    "level": line.level,
                    "name": line.name,
                    "message": line.message,
                }
            )
    lines.sort(key=lambda line: float(line["time"]))
    return {"available": True, "lines": lines[-MAX_LOG_LINES:]}


def request_stacks(store: RedisStore, address: str) -> str:
    """Ask a worker for its running tasks' call stacks; the id to read the answer with."""
    request_id = f"dash-{uuid.uuid4().hex}"
    store.streams.to_worker(address, wire.StackRequest(request_id))
    return request_id


def read_stacks(store: RedisStore, request_id: str) -> dict[str, Any] | None:
    """The worker's answer, or None while it has not come."""
    payload = store.streams.get_stacks(request_id)
    if payload is None:
        return None
    try:
        answer = wire.CallStacks.decode(payload)
    except wire.MalformedMessage as exc:
        return {"error": str(exc), "stacks": []}
    return {
        "worker": answer.worker,
        "time": answer.time,
        "stacks": [s._asdict() for s in answer.stacks],
    }


# -- the profile (flame graph) ---------------------------------------------------------------
#: Nodes of a call tree sent to the browser (the smallest are cut first).
MAX_PROFILE_NODES = 5_000


def profile(
    store: RedisStore,
    group: str | None = None,
    worker: str | None = None,
    window: float = 600.0,
    now: float | None = None,
) -> dict[str, Any]:
    """The sampling profiler's merged call tree of the last ``window`` seconds (of one task
    group, one worker, when given). The profiler and its stream come with the diagnostics
    work (``store.profiles``, ``rdist.protocol.profile``); a build without them says so."""
    profiles = getattr(store, "profiles", None)
    try:
        from rdist.protocol import profile as trees  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        trees = None
    if profiles is None or trees is None:
        return {"available": False, "groups": [], "workers": [], "tree": None}
    now = time.time() if now is None else now
    batches = profiles.between(now - window, now)
    workers = sorted({b.worker for b in batches})
    if worker:
        batches = [b for b in batches if b.worker == worker]
    names = sorted({g for b in batches for g in b.groups})
    merged = trees.merge_groups((b.groups for b in batches), group or None)
    tree = trees.merge(merged.values())
    return {
        "available": True,
        "groups": names,
        "workers": workers,
        "samples": int(tree[3]),
        "tree": _pruned(tree, MAX_PROFILE_NODES),
    }


def _pruned(tree: list[Any], budget: int) -> list[Any]:
    """The tree with at most about ``budget`` nodes, dropping the least sampled branches
    (a flame graph cannot show them anyway)."""
    floor = 0
    counts = sorted((n[3] for n in _nodes(tree)), reverse=True)
    if len(counts) > budget:
        floor = counts[budget]

    def keep(node: list[Any]) -> list[Any]:
        children = [keep(c) for c in node[4] if c[3] > floor]
        return [node[0], node[1], node[2], node[3], children]

    return keep(tree)


def _nodes(tree: list[Any]) -> list[list[Any]]:
    out, pending = [], [tree]
    while pending:
        node = pending.pop()
        out.append(node)
        pending.extend(node[4])
    return out


# -- the task graph ----------------------------------------------------------------------------
def graph(store: RedisStore, limit: int = MAX_GRAPH_TASKS) -> dict[str, Any]:
    """Every task with its state and dependencies, when there are at most ``limit``."""
    total = store.tasks.count()
    if total > limit:
        return {"too_many": True, "total": total, "limit": limit, "nodes": [], "edges": []}
    records: dict[str, wire.TaskRecord] = {}
    cursor = 0
    while True:  # the count was checked: this reads about ``limit`` records at most
        cursor, chunk = store.tasks.scan(cursor, count=SCAN_CHUNK)
        records.update(chunk)
        if cursor == 0 or len(records) > 2 * limit:  # the hash grew meanwhile: stop anyway
            break
    index = {key: i for i, key in enumerate(records)}
    nodes = [[key, key_group(key), r.state] for key, r in records.items()]
    edges = [[index[d], index[key]] for key, r in records.items() for d in r.deps if d in index]
    return {"too_many": False, "total": len(nodes), "limit": limit, "nodes": nodes, "edges": edges}


# -- clients -----------------------------------------------------------------------------------
def client_graph(store: RedisStore, roots: list[str], limit: int) -> tuple[list[Any], bool]:
    """The task groups of the graph below ``roots`` (the keys a client wants, and what they
    need), with counts by state: a walk down the dependencies, one HMGET per level, at
    most ``limit`` records. Returns the groups and whether the walk reached every task."""
    seen: set[str] = set()
    groups: dict[str, dict[str, int]] = {}
    level = list(dict.fromkeys(roots))
    while level and len(seen) < limit:
        level = level[: limit - len(seen)]
        seen.update(level)
        records = store.tasks.get_many(level)
        following: list[str] = []
        for key, record in records.items():
            counts = groups.setdefault(key_group(key), {})
            counts[record.state] = counts.get(record.state, 0) + 1
            following.extend(d for d in record.deps if d not in seen)
        level = list(dict.fromkeys(following))
    ordered = sorted(groups.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    rows = [
        {"name": name, "total": sum(c.values()), **{s: c.get(s, 0) for s in STATES}}
        for name, c in ordered
    ]
    return rows, not level


def clients(
    store: RedisStore,
    census: TaskCensus,
    max_age: float = 1.0,
    limit: int = MAX_CLIENT_GRAPH,
    max_clients: int = MAX_CLIENTS_WALKED,
) -> dict[str, Any]:
    """Each client (name, last heartbeat) with the graphs of the keys it wants: their task
    groups and progress. Bounded: ``limit`` tasks walked for each of the first
    ``max_clients`` clients; the others show how many tasks they want."""
    now = time.time()
    wanted = census.clients(store, max_age)
    known = store.clients.all()
    out = []
    for n, client_id in enumerate(sorted(set(known) | set(wanted["wanted"]))):
        record = known.get(client_id)
        groups: list[Any] = []
        whole = True
        if n < max_clients and wanted["keys"].get(client_id):
            groups, whole = client_graph(store, wanted["keys"][client_id], limit)
        out.append(
            {
                "id": client_id,
                "name": record.name if record is not None else "",
                "age": round(now - record.last_seen, 3) if record is not None else None,
                "connected": record is not None,
                "wanted": wanted["wanted"].get(client_id, 0),
                "tasks": sum(g["total"] for g in groups),
                "whole": whole
                and len(wanted["keys"].get(client_id, [])) == wanted["wanted"].get(client_id, 0),
                "groups": groups,
            }
        )
    return {"clients": out, "complete": wanted["complete"]}


# -- dead letters ------------------------------------------------------------------------------
def _letter(entry_id: str, fields: dict[Any, Any]) -> dict[str, Any]:
    text = {as_text(k): v for k, v in fields.items()}
    raw = text.get("raw", b"")
    raw = raw if isinstance(raw, bytes) else str(raw).encode()
    return {
        "id": entry_id,
        "time": int(entry_id.partition("-")[0] or 0) / 1000,
        "stream": as_text(text.get("stream", b"")),
        "entry": as_text(text.get("id", b"")),
        "reason": as_text(text.get("reason", b"")),
        "error": as_text(text.get("error", b"")),
        "deliveries": as_text(text.get("deliveries", b"1")),
        "size": len(raw),
        "preview": raw[:160].decode("utf-8", errors="replace"),
    }


def dead_letters_page(
    store: RedisStore, before: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """Dead letters newest first; ``before`` (an entry id) pages back."""
    limit = max(1, min(limit, MAX_PAGE))
    upper = _before(before) if before else "+"
    if upper == "":
        return {"letters": [], "next": None, "total": store.streams.length(store.keys.deadletter)}
    chunk = store.streams.before(store.keys.deadletter, upper, limit)
    letters = [_letter(as_text(i), f) for i, f in chunk]
    return {
        "letters": letters,
        "next": letters[-1]["id"] if len(letters) == limit else None,
        "total": store.streams.length(store.keys.deadletter),
    }


class RequeueRefused(ValueError):
    """A dead letter that cannot go back: gone, cut short, or from a stream we do not feed."""


def requeue(store: RedisStore, letter_id: str) -> dict[str, Any]:
    """Put a dead letter back on the stream it came from (then it is no longer a letter)."""
    fields = store.streams.dead_letter_entry(letter_id)
    if fields is None:
        raise RequeueRefused(f"no dead letter {letter_id!r}: requeued already, or trimmed")
    text = {as_text(k): v for k, v in fields.items()}
    stream = as_text(text.get("stream", b""))
    raw = text.get("raw", b"")
    keys = store.keys
    ours = (keys.worker_stream(""), keys.client_stream(""))
    if not (stream == keys.sched or stream.startswith(ours)):
        raise RequeueRefused(f"entries of {stream!r} cannot be requeued from the dashboard")
    worker_prefix = keys.worker_stream("")
    if stream.startswith(worker_prefix) and not store.workers.exists(stream[len(worker_prefix) :]):
        raise RequeueRefused(f"the worker of {stream!r} is gone: nobody would read the entry")
    if not isinstance(raw, bytes) or not raw:
        raise RequeueRefused("the letter kept no payload to requeue")
    if len(raw) >= DEADLETTER_RAW_BYTES:
        raise RequeueRefused(
            f"the entry was cut to {DEADLETTER_RAW_BYTES} bytes when set aside: "
            "requeueing the rest of it is impossible"
        )
    new_id = store.streams.requeue(letter_id, stream, raw)
    return {"requeued": letter_id, "stream": stream, "id": new_id}
