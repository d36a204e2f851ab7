"""At submission: dask's P2P shuffle tasks become rdist's exchange tasks.

dask lowers ``shuffle``/``set_index``/``sort_values`` with ``shuffle_method="p2p"`` into
``(shuffle-transfer-<token>, i)`` tasks calling ``_shuffle_transfer(input, token, i)``, one
``P2PBarrierTask`` carrying a ``DataFrameShuffleSpec`` (the partition column, the output
count, the meta) and depending on every transfer, and ``shuffle_unpack(token, j, barrier)``
tasks. Those call dask.distributed's worker plugin, which rdist has not; here they are
replaced, key for key and edge for edge, by :mod:`rdist.shuffle.tasks`, with an
:class:`~rdist.shuffle.plan.ExchangePlan` naming each output partition's owner among the
workers alive now. Each unpack gets its owner as a (loose) worker restriction: it runs
where its pieces are sent, or elsewhere when that worker is gone.

Only the node types are looked at (by name: nothing of dask.distributed is imported here).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from rdist.client.keynames import check_key
from rdist.shuffle import tasks
from rdist.shuffle.plan import ExchangePlan, assign_owners

BARRIER_TYPE = "P2PBarrierTask"
FRAME_SPEC = "DataFrameShuffleSpec"
TRANSFER_FUNC = "_shuffle_transfer"
UNPACK_FUNC = "shuffle_unpack"


def key_name(key: Hashable) -> str:
    return check_key(key, "graph key")


def has_p2p(dsk: dict[Hashable, Any]) -> bool:
    return any(type(node).__name__ == BARRIER_TYPE for node in dsk.values())


def rewrite_p2p(
    dsk: dict[Hashable, Any],
    annotations: dict[str, dict[Hashable, Any]],
    live_workers: Callable[[], list[str]],
) -> dict[Hashable, Any]:
    """``dsk`` with every dataframe P2P shuffle replaced (annotations gain the unpacks'
    restrictions); a graph without one is returned as it is, and no worker is asked for."""
    barriers: list[Any] = [k for k, node in dsk.items() if type(node).__name__ == BARRIER_TYPE]
    if not barriers:
        return dsk
    from dask._task_spec import Task, TaskRef

    workers = live_workers()
    out = dict(dsk)
    unpacks = _unpacks_by_token(dsk)
    for key in barriers:
        node = dsk[key]
        spec = node.spec
        if type(spec).__name__ != FRAME_SPEC:
            raise NotImplementedError(
                f"{key!r}: rdist runs dataframe P2P shuffles only, not {type(spec).__name__} "
                "(use method='tasks' for this operation)"
            )
        token = str(spec.id)
        transfers = sorted(node.dependencies, key=_index_of)
        name = _transfer_name(key, transfers)
        plan = ExchangePlan(
            token,
            spec.column,
            assign_owners(spec.npartitions, workers),
            name,
            len(transfers),
            key_name(key),
            bool(spec.drop_column),
        )
        for t in transfers:
            old = dsk[t]
            if _func_name(old) != TRANSFER_FUNC:
                raise NotImplementedError(
                    f"{t!r}: a P2P transfer rdist does not know ({_func_name(old)}); "
                    "use shuffle_method='tasks' for this operation"
                )
            source_ref, _token, source = old.args
            out[t] = Task(t, tasks.transfer, source_ref, plan, int(source))
        out[key] = Task(key, tasks.barrier, plan, *(TaskRef(t) for t in transfers))
        meta = spec.meta.drop(columns=spec.column) if spec.drop_column else spec.meta
        for ukey, part in unpacks.get(token, []):
            out[ukey] = Task(ukey, tasks.unpack, plan, part, meta, TaskRef(key))
            annotations.setdefault("workers", {})[ukey] = [plan.owners[part]]
            annotations.setdefault("allow_other_workers", {})[ukey] = True
    return out


def _unpacks_by_token(dsk: dict[Hashable, Any]) -> dict[str, list[tuple[Hashable, int]]]:
    out: dict[str, list[tuple[Hashable, int]]] = {}
    for key, node in dsk.items():
        if _func_name(node) == UNPACK_FUNC:
            token, part = node.args[0], node.args[1]
            out.setdefault(str(token), []).append((key, int(part)))
    return out


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
