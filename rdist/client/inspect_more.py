"""The smaller introspection calls of the Client, with dask's names and semantics.

- ``Future.type``: the result's type once finished;
- ``client.processing(workers)``: worker -> keys assigned to it now;
- ``client.nbytes(keys, summary)``: bytes of each result in memory (or per task group);
- ``client.normalize_collection(collection)``: a collection whose graph uses this
  client's futures where it has them;
- ``client.recreate_error_locally(future)``: run the task that failed again here, with
  its inputs, so that the error (and a debugger) is in the caller's process.

Every answer comes from the scheduler's records in Redis (after a barrier where the
records must include what this client sent), never from a scheduler round trip.
"""

from __future__ import annotations

import builtins
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from rdist import adaptive
from rdist.client import graph, keynames
from rdist.client.introspection import task_records
from rdist.client.options import worker_list
from rdist.protocol import serialize, spec, wire

if TYPE_CHECKING:
    from rdist.client.client import Client
    from rdist.client.future import Future


def result_type(future: Future) -> type | None:
    """The type of ``future``'s result once it finished (None before, or if it erred).

    Workers report the type's name: builtins resolve from it alone; any other type is read
    from the result itself (fetched once, as ``result()`` would)."""
    where = future._state.where()
    if future._state.status != "finished" or where is None:
        return None
    found = getattr(builtins, where.type_name, None) if where.type_name else None
    if isinstance(found, type):
        return found
    return type(future.result())


def processing(client: Client, workers: Any = None) -> dict[str, list[Any]]:
    """Worker address -> the keys processing there (every present worker, maybe empty)."""
    present = client._introspection.workers()
    wanted = worker_list(workers)
    chosen = [a for a, w in present.items() if not wanted or a in wanted or w.name in wanted]
    out: dict[str, list[Any]] = {a: [] for a in sorted(chosen)}
    ledger = client.ledger
    for key, record in task_records(client.store, None).items():
        if record.state == "processing" and record.processing_on in out:
            state = ledger.holds(key)
            if state is not None and state.done():
                continue  # the worker told us first: the scheduler's record catches up
            out[record.processing_on].append(keynames.user_key(key))
    return out


def nbytes(client: Client, keys: Any = None, summary: bool = False) -> dict[Any, int]:
    """Bytes of each result in memory (of ``keys``: keys or futures; default all);
    ``summary=True`` sums them per task group, as dask's."""
    names = None if keys is None else [_name_of(k) for k in _as_list(keys)]
    client._data.barrier()
    records = task_records(client.store, names)
    sizes = {k: r.nbytes for k, r in records.items() if r.state == "memory"}
    if summary:
        groups: dict[Any, int] = {}
        for key, size in sizes.items():
            group = adaptive.group_name(key)
            groups[group] = groups.get(group, 0) + size
        return groups
    return {keynames.user_key(k): size for k, size in sizes.items()}


def normalize_collection(client: Client, collection: Any) -> Any:
    """A copy of ``collection`` whose graph takes this client's futures for the keys it
    holds a future of (they are computed already, or will be), as dask's."""
    from rdist.client.collections import materialize
    from rdist.client.future import Future

    dsk, _ = materialize(collection)
    held = set(client.ledger.keys())
    replaced: dict[Hashable, Any] = {}
    for key in dsk:
        name = graph.key_name(key)
        if name in held:
            replaced[key] = Future._named(name, client, client.ledger.register(name))
    if not replaced:
        return collection
    return _with_graph(collection, {**dict(dsk), **replaced})


def _with_graph(collection: Any, dsk: dict[Hashable, Any]) -> Any:
    """``collection`` rebuilt on graph ``dsk`` (dask's postpersist protocol)."""
    rebuild, args = collection.__dask_postpersist__()
    return rebuild(dsk, *args)


def recreate_error_locally(client: Client, future: Future) -> None:
    """Run the task blamed for ``future``'s failure (itself or the dependency that failed
    first) here, on its inputs' values: its exception is raised in this process, where a
    debugger can step in, as dask's. ValueError if the future did not fail."""
    from rdist.client.future import Future, wait

    wait([future])
    outcome = future._state.outcome
    if future.status != "error" or not isinstance(outcome, wire.KeyErred):
        raise ValueError(f"future {future.key!r} did not fail: nothing to recreate")
    blamed = outcome.blame or future._name
    record = client.store.tasks.get(blamed)
    (raw,) = client.store.specs.get_many([blamed])
    if raw is None or record is None:
        raise ValueError(
            f"task {blamed!r} (blamed for {future.key!r}) is no longer known to the "
            "scheduler: keep a future of it to recreate its error"
        )
    func_hash, args_blob, mode = spec.unpack_spec(raw)
    func = None
    if func_hash:
        (pickled,) = client.store.specs.get_functions([func_hash])
        if pickled is None:
            raise ValueError(f"the function of task {blamed!r} is no longer stored")
        func = serialize.loads([pickled])
    inputs = [Future._named(dep, client, client.ledger.register(dep)) for dep in record.deps]
    values = dict(zip(record.deps, client.gather(inputs))) if inputs else {}
    spec.run_spec(func, args_blob, mode, values)


def _as_list(keys: Any) -> list[Any]:
    from rdist.client.future import Future

    if isinstance(keys, (Future, str)) or not isinstance(keys, (list, tuple, set)):
        return [keys]
    return list(keys)


def _name_of(key: Any) -> str:
    name = getattr(key, "_name", None)
    return name if isinstance(name, str) else graph.key_name(key)
