"""``client.dump_cluster_state``: the cluster's state in one file, for a bug report.

The scheduler's side comes from Redis, which holds it (task records, workers, clients, the
leader and its versions, the scheduler's log); each worker's side comes from the worker
itself through ``client.run`` (its state machine's tasks, ready and executing keys, the
keys of its data, its log buffer). The file is gzipped msgpack (``.msgpack.gz``) or YAML
(``.yaml``, with PyYAML), as dask's: reading it back gives plain dicts and lists.
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from rdist.store import RedisStore

__all__ = ["FORMATS", "cluster_state", "plain", "worker_state", "write"]

FORMATS = {"msgpack": ".msgpack.gz", "yaml": ".yaml"}


def plain(value: Any) -> Any:
    """``value`` as data msgpack and YAML's safe dumper both take: maps with str keys,
    lists, str, numbers, bools, None, bytes; records become maps, anything else its repr."""
    if isinstance(value, enum.Enum):  # (first: a str-valued Enum is a str too)
        return plain(value.value)
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        items = [plain(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return repr(value)


def scheduler_state(store: RedisStore) -> dict[str, Any]:
    """What Redis holds of the scheduler's state (never the cluster secret)."""
    from rdist.client.logs import scheduler_logs

    tasks: dict[str, Any] = {}
    for key, record in store.tasks.all():
        tasks[key] = plain(record) if not isinstance(record, Exception) else repr(record)
    return {
        "cluster": store.keys.cluster,
        "leader": store.leader(),
        "versions": store.meta.scheduler_versions(),
        "tasks": tasks,
        "workers": {a: plain(r) for a, r in store.workers.all().items()},
        "clients": {c: plain(r) for c, r in store.clients.all().items()},
        "log": [list(line) for line in scheduler_logs(store)],
    }


def worker_state(dask_worker: Any) -> dict[str, Any]:
    """Run on a worker (``client.run``, which passes the worker as ``dask_worker``): its
    state machine and data, and its log."""
    worker = dask_worker
    with worker.lock:
        state = worker.state
        tasks = {
            key: {
                "state": ts.state.value,
                "priority": plain(ts.priority),
                # (None while empty: see rdist.worker.state.WTask)
                "dependencies": sorted(ts.dependencies or ()),
                "waiting_for_data": sorted(ts.waiting_for_data or ()),
                "dependents": sorted(ts.dependents or ()),
                "resources": plain(ts.resources),
            }
            for key, ts in state.tasks.items()
        }
        ready = [ts.key for _, _, ts in sorted(state._ready) if ts.state.value == "ready"]
        executing = sorted(k for k, ts in state.tasks.items() if ts.state.value == "executing")
        story = [plain(entry) for entry in state.log]
    return {
        "address": worker.address,
        "name": worker.name,
        "pid": os.getpid(),
        "nthreads": worker.nthreads,
        "status": worker.status,
        "memory_limit": worker.memory_limit,
        "tasks": tasks,
        "ready": ready,
        "executing": executing,
        "data": sorted(str(k) for k in list(worker.data.keys())),
        "transition_log": story,
        "log": [list(line) for line in worker.logs.buffer.lines()],
    }


def cluster_state(
    store: RedisStore, run_on_workers: Callable[[Callable[..., Any]], dict[str, Any]]
) -> dict[str, Any]:
    """``{"scheduler": ..., "workers": {address: ...}, "versions": ..., "time": ...}``; a
    worker whose answer is an exception is shown as that exception's repr."""
    from rdist import versions

    answers = run_on_workers(worker_state)
    return {
        "time": time.time(),
        "versions": {"client": plain(versions.get_versions())},
        "scheduler": scheduler_state(store),
        "workers": {
            a: (s if isinstance(s, dict) else {"error": repr(s)}) for a, s in answers.items()
        },
    }


def write(state: dict[str, Any], filename: str, format: str, exclude: Iterable[str] = ()) -> str:
    """The file for ``state`` (its suffix added unless there), without the top-level
    sections and per-task fields named in ``exclude``; returns its path."""
    suffix = FORMATS.get(format)
    if suffix is None:
        raise ValueError(f"dump_cluster_state(format={format!r}): one of {sorted(FORMATS)}")
    state = _without(state, set(exclude))
    path = filename if filename.endswith(suffix) else filename + suffix
    if format == "yaml":
        try:
            import yaml
        except ImportError:
            raise ImportError(
                "dump_cluster_state(format='yaml') needs PyYAML (pip install pyyaml); "
                "format='msgpack' needs nothing more"
            ) from None
        with open(path, "w") as out:
            yaml.safe_dump(state, out, sort_keys=False)
    else:
        with gzip.open(path, "wb") as out:
            out.write(msgpack.packb(state, use_bin_type=True))
    return path


def _without(state: dict[str, Any], exclude: set[str]) -> dict[str, Any]:
    if not exclude:
        return state
    out = {k: v for k, v in state.items() if k not in exclude}
    scheduler = dict(out.get("scheduler", {}))
    scheduler.update(
        tasks={
            k: {f: v for f, v in t.items() if f not in exclude} if isinstance(t, dict) else t
            for k, t in scheduler.get("tasks", {}).items()
        }
    )
    out["scheduler"] = {k: v for k, v in scheduler.items() if k not in exclude}
    return out
