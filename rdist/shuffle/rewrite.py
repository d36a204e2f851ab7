"""At submission: dask's P2P shuffle tasks become rdist's exchange tasks.

dask lowers ``shuffle``/``set_index``/``sort_values`` with ``shuffle_method="p2p"`` into
``(shuffle-transfer-<token>, i)`` tasks calling ``_shuffle_transfer(input, token, i)``, one
``P2PBarrierTask`` carrying a ``DataFrameShuffleSpec`` (the partition column, the output
count, the meta) and depending on every transfer, and ``shuffle_unpack(token, j, barrier)``
tasks. Those call dask.distributed's worker plugin, which rdist has not; here they are
replaced, key for key and edge for edge, by :mod:`rdist.shuffle.tasks`, with an
:class:`~rdist.shuffle.plan.ExchangePlan` naming each output partition's owner among the
workers alive now. Each unpack gets its owner as a (loose) worker restriction: it runs
where its pieces are sent, or elsewhere when that worker is gone. A P2P ``merge`` is two
such exchanges (one per side, transfers named ``assign_index_merge_transfer``) and
``merge_unpack`` tasks joining their partitions (:mod:`rdist.shuffle.merge`).

Only the node types are looked at (by name: nothing of dask.distributed is imported here).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from rdist.shuffle import merge, tasks
from rdist.shuffle.plan import ExchangePlan, assign_owners

BARRIER_TYPE = "P2PBarrierTask"
FRAME_SPEC = "DataFrameShuffleSpec"
TRANSFER_FUNC = "_shuffle_transfer"
UNPACK_FUNC = "shuffle_unpack"
MERGE_TRANSFER_FUNC = "assign_index_merge_transfer"
MERGE_UNPACK_FUNC = "merge_unpack"


def has_p2p(dsk: dict[Hashable, Any]) -> bool:
    return any(type(node).__name__ == BARRIER_TYPE for node in dsk.values())


def rewrite_p2p(
    dsk: dict[Hashable, Any],
    annotations: dict[str, dict[Hashable, Any]],
    live_workers: Callable[[], list[str]],
    key_name: Callable[[Hashable], str],
) -> dict[Hashable, Any]:
    """``dsk`` with every dataframe P2P shuffle and hash join replaced (annotations gain
    the unpacks' restrictions); a graph without one is returned as it is, and no worker is
    asked for. ``key_name`` gives a key's wire name (the client's; a restart names the
    barrier to the scheduler by it)."""
    barriers: list[Any] = [k for k, node in dsk.items() if type(node).__name__ == BARRIER_TYPE]
    if not barriers:
        return dsk
    from dask._task_spec import Task, TaskRef

    workers = live_workers()
    out = dict(dsk)
    exchanges: dict[str, tuple[ExchangePlan, Any, Any]] = {}  #: token -> plan, meta, barrier
    for key in barriers:
        plan, meta = _exchange(key, dsk, workers, out, key_name(key))
        exchanges[plan.id] = (plan, meta, key)
    for ukey, node in dsk.items():
        kind = _func_name(node)
        if kind == UNPACK_FUNC:
            token, part = str(node.args[0]), int(node.args[1])
            plan, meta, barrier = _known(exchanges, token, ukey)
            out[ukey] = Task(ukey, tasks.unpack, plan, part, meta, TaskRef(barrier))
        elif kind == MERGE_UNPACK_FUNC:
            left_token, right_token, part, _bl, _br, *join = node.args
            left, left_meta, left_barrier = _known(exchanges, str(left_token), ukey)
            right, right_meta, right_barrier = _known(exchanges, str(right_token), ukey)
            part = int(part)
            out[ukey] = Task(
                ukey,
                merge.merge_unpack,
                left,
                right,
                part,
                (left_meta, right_meta),
                merge.JoinSpec(*join),
                TaskRef(left_barrier),
                TaskRef(right_barrier),
            )
            plan = left
        else:
            continue
        annotations.setdefault("workers", {})[ukey] = [plan.owners[part]]
        annotations.setdefault("allow_other_workers", {})[ukey] = True
    return out


def _exchange(
    key: Any,
    dsk: dict[Hashable, Any],
    workers: list[str],
    out: dict[Hashable, Any],
    barrier_name: str,
) -> tuple[ExchangePlan, Any]:
    """Rewrite one exchange's transfers and barrier (into ``out``): its plan and the meta of
    its output partitions."""
    from dask._task_spec import Task, TaskRef

    node = dsk[key]
    spec = node.spec
    if type(spec).__name__ != FRAME_SPEC:
        raise NotImplementedError(
            f"{key!r}: rdist runs dataframe P2P shuffles only, not {type(spec).__name__}; "
            "build this collection with the task-based method instead (e.g. "
            "dask.config.set({'array.rechunk.method': 'tasks'}) for a rechunk)"
        )
    transfers = sorted(node.dependencies, key=_index_of)
    plan = ExchangePlan(
        str(spec.id),
        spec.column,
        assign_owners(spec.npartitions, workers),
        _transfer_name(key, transfers),
        len(transfers),
        barrier_name,
        bool(spec.drop_column),
    )
    for t in transfers:
        out[t] = _transfer(t, dsk[t], plan)
    out[key] = Task(key, tasks.barrier, plan, *(TaskRef(t) for t in transfers))
    meta = spec.meta.drop(columns=spec.column) if spec.drop_column else spec.meta
    return plan, meta


def _transfer(key: Any, old: Any, plan: ExchangePlan) -> Any:
    from dask._task_spec import Task

    kind = _func_name(old)
    if kind == TRANSFER_FUNC:  # (input, token, i)
        source_ref, _token, source = old.args
        return Task(key, tasks.transfer, source_ref, plan, int(source))
    if kind == MERGE_TRANSFER_FUNC:  # (input, on, hash column, npartitions, token, i, index)
        source_ref, on, _column, npartitions, _token, source, index_merge = old.args
        spec = merge.HashSpec(on, int(npartitions), bool(index_merge))
        return Task(key, merge.hash_transfer, source_ref, plan, spec, int(source))
    raise NotImplementedError(
        f"{key!r}: a P2P transfer rdist does not know ({kind}); "
        "use shuffle_method='tasks' for this operation"
    )


def _known(
    exchanges: dict[str, tuple[ExchangePlan, Any, Any]], token: str, unpack: Any
) -> tuple[ExchangePlan, Any, Any]:
    found = exchanges.get(token)
    if found is None:
        raise NotImplementedError(f"{unpack!r}: unpacks a P2P exchange that is not in the graph")
    return found


def _transfer_name(barrier: Hashable, transfers: list[Any]) -> str:
    """The common name of the transfers ``(name, 0) .. (name, n-1)`` (as dask makes them)."""
    names = {t[0] for t in transfers if isinstance(t, tuple) and len(t) == 2}
    if len(names) != 1 or [t[1] for t in transfers] != list(range(len(transfers))):
        raise NotImplementedError(
            f"{barrier!r}: its transfers are not (name, 0..n-1) tasks; "
            "use shuffle_method='tasks' for this operation"
        )
    return str(names.pop())


def _func_name(node: Any) -> str:
    func = getattr(node, "func", None)
    return str(getattr(func, "__name__", "")) if func is not None else ""


def _index_of(key: Any) -> Any:
    return key[1] if isinstance(key, tuple) and len(key) > 1 else 0
