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

A P2P rechunk of dask.array (``array.rechunk.method="p2p"``) is one exchange per group
of chunks dask found independent: ``rechunk_transfer(input, token, i)`` per input chunk,
a ``P2PBarrierTask`` carrying an ``ArrayRechunkSpec`` (the group's old and new chunks),
``rechunk_unpack(token, j, barrier)`` per output chunk (``i``, ``j``: n-dimensional
indices within the group); they become :mod:`rdist.shuffle.arrays`' tasks with a
:class:`~rdist.shuffle.plan.RechunkPlan`. dask's array optimization fuses linear chains
(a transfer with the task making its input, an unpack with the task using it) into
``_execute_subgraph`` tasks; those holding exchange tasks are unfused first, so that every
exchange task is a task of its own (a restart runs the transfers again by their keys).
A group of one input chunk (dask merges small inputs first, so this is common) becomes no
exchange at all: each unpack is replaced by a ``cut`` of that chunk, its transfer and
barrier leave the graph.

Only the node types are looked at (by name: nothing of dask.distributed is imported here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from rdist.shuffle import arrays, merge, rechunk, tasks
from rdist.shuffle.plan import ExchangePlan, RechunkPlan, assign_owners

BARRIER_TYPE = "P2PBarrierTask"
FRAME_SPEC = "DataFrameShuffleSpec"
TRANSFER_FUNC = "_shuffle_transfer"
UNPACK_FUNC = "shuffle_unpack"
MERGE_TRANSFER_FUNC = "assign_index_merge_transfer"
MERGE_UNPACK_FUNC = "merge_unpack"
_T = TypeVar("_T")
ARRAY_SPEC = "ArrayRechunkSpec"
RECHUNK_TRANSFER_FUNC = "rechunk_transfer"
RECHUNK_UNPACK_FUNC = "rechunk_unpack"
#: dask's fused linear chain (``Task.fuse``): ``(inner graph, output key, input keys, *inputs)``
FUSED_FUNC = "_execute_subgraph"
P2P_FUNCS = frozenset(
    {
        TRANSFER_FUNC,
        UNPACK_FUNC,
        MERGE_TRANSFER_FUNC,
        MERGE_UNPACK_FUNC,
        RECHUNK_TRANSFER_FUNC,
        RECHUNK_UNPACK_FUNC,
    }
)


def has_p2p(dsk: dict[Hashable, Any]) -> bool:
    return any(type(node).__name__ == BARRIER_TYPE for node in dsk.values())


def rewrite_p2p(
    dsk: dict[Hashable, Any],
    annotations: dict[str, dict[Hashable, Any]],
    live_workers: Callable[[], list[str]],
    key_name: Callable[[Hashable], str],
) -> dict[Hashable, Any]:
    """``dsk`` with every dataframe P2P shuffle, hash join and array P2P rechunk replaced
    (annotations gain the unpacks' restrictions); a graph without one is returned as it
    is. The live workers are asked for only when an exchange needs owners (a rechunk of
    cuts alone needs none). ``key_name`` gives a key's wire name (the client's; a restart
    names the barrier to the scheduler by it)."""
    barriers: list[Any] = [k for k, node in dsk.items() if type(node).__name__ == BARRIER_TYPE]
    if not barriers:
        return dsk
    from dask._task_spec import Task, TaskRef

    dsk = _unfused(dsk)
    workers = _Once(live_workers)  # asked for when an exchange needs owners (cuts do not)
    out = dict(dsk)
    exchanges: dict[str, tuple[ExchangePlan, Any, Any]] = {}  #: token -> plan, meta, barrier
    rechunks: dict[str, tuple[RechunkPlan, Any]] = {}  #: token -> plan, barrier
    cuts: dict[str, tuple[Any, rechunk.Chunks, rechunk.Chunks]] = {}  #: token -> input, chunks
    targets = _rechunk_targets(dsk)
    for key in barriers:
        if type(dsk[key].spec).__name__ == ARRAY_SPEC:
            cut = _single_input(key, dsk, out)
            if cut is not None:
                cuts[str(dsk[key].spec.id)] = cut
                continue
            rplan = _rechunk_exchange(key, dsk, workers(), out, key_name, targets)
            rechunks[rplan.id] = (rplan, key)
            continue
        plan, meta = _exchange(key, dsk, workers(), out, key_name(key))
        exchanges[plan.id] = (plan, meta, key)
    for ukey, node in dsk.items():
        kind = _func_name(node)
        if kind == UNPACK_FUNC:
            token, part = str(node.args[0]), int(node.args[1])
            plan, meta, barrier = _known(exchanges, token, ukey)
            out[ukey] = Task(ukey, tasks.unpack, plan, part, meta, TaskRef(barrier))
            owner = plan.owners[part]
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
            owner = left.owners[part]
        elif kind == RECHUNK_UNPACK_FUNC:
            token, target = str(node.args[0]), _index(node.args[1])
            if token in cuts:  # a slice of the one input chunk, where that chunk is
                out[ukey] = Task(ukey, arrays.cut, *cuts[token], target)
                continue
            rplan, barrier = _known(rechunks, token, ukey)
            out[ukey] = Task(ukey, arrays.unpack, rplan, target, TaskRef(barrier))
            owner = rplan.owners[rechunk.linear(target, rplan.new)]
        else:
            continue
        annotations.setdefault("workers", {})[ukey] = [owner]
        annotations.setdefault("allow_other_workers", {})[ukey] = True
    return out


class _Once:
    """``live_workers()`` asked once, when first needed."""

    def __init__(self, ask: Callable[[], list[str]]) -> None:
        self._ask = ask
        self._answer: list[str] | None = None

    def __call__(self) -> list[str]:
        if self._answer is None:
            self._answer = self._ask()
        return self._answer


def _unfused(dsk: dict[Hashable, Any]) -> dict[Hashable, Any]:
    """``dsk`` with every fused chain that holds an exchange task taken apart again: its
    inner tasks become tasks of the graph (the chain's end under its own key, which the
    alias dask left for it held). A fused key of its own (dask renames chains) goes: only
    that alias referred to it."""
    out = dsk
    while fused := [k for k, node in out.items() if _holds_p2p(node)]:
        out = dict(out)
        for key in fused:
            inner = out[key].args[0]
            if key not in inner:
                del out[key]
            out.update(inner)
    return out


def _holds_p2p(node: Any) -> bool:
    if _func_name(node) != FUSED_FUNC or not node.args or not isinstance(node.args[0], dict):
        return False
    return any(_func_name(t) in P2P_FUNCS or _holds_p2p(t) for t in node.args[0].values())


def _rechunk_targets(dsk: dict[Hashable, Any]) -> dict[str, set[rechunk.Index]]:
    """Token -> the output chunks (within its group) that have an unpack in the graph."""
    out: dict[str, set[rechunk.Index]] = {}
    for node in dsk.values():
        if _func_name(node) == RECHUNK_UNPACK_FUNC:
            out.setdefault(str(node.args[0]), set()).add(_index(node.args[1]))
    return out


def _single_input(
    key: Any, dsk: dict[Hashable, Any], out: dict[Hashable, Any]
) -> tuple[Any, rechunk.Chunks, rechunk.Chunks] | None:
    """A group of one input chunk needs no exchange: each output chunk is a slice of it
    (dask makes such groups when it merges the inputs first, e.g. 1,000² chunks to rows
    of 100). Its transfer and barrier leave ``out``; the input's reference and the chunks
    are returned (None for a group of several inputs)."""
    deps = list(dsk[key].dependencies)
    if len(deps) != 1 or _func_name(dsk[deps[0]]) != RECHUNK_TRANSFER_FUNC:
        return None
    transfer, spec = deps[0], dsk[key].spec
    del out[key], out[transfer]
    return dsk[transfer].args[0], _chunks(spec.old), _chunks(spec.new)


def _chunks(value: Any) -> rechunk.Chunks:
    return tuple(tuple(int(c) for c in axis) for axis in value)


def _rechunk_exchange(
    key: Any,
    dsk: dict[Hashable, Any],
    workers: list[str],
    out: dict[Hashable, Any],
    key_name: Callable[[Hashable], str],
    targets: dict[str, set[rechunk.Index]],
) -> RechunkPlan:
    """Rewrite one rechunk group's transfers and barrier (into ``out``): its plan."""
    from dask._task_spec import Task, TaskRef

    spec = dsk[key].spec
    old, new = _chunks(spec.old), _chunks(spec.new)
    transfers = sorted(dsk[key].dependencies, key=repr)
    sources = {}
    for t in transfers:
        if _func_name(dsk[t]) != RECHUNK_TRANSFER_FUNC:
            raise NotImplementedError(
                f"{t!r}: a P2P rechunk transfer rdist does not know ({_func_name(dsk[t])}); "
                "use dask.config.set({'array.rechunk.method': 'tasks'}) for this rechunk"
            )
        sources[t] = _index(dsk[t].args[2])
    plan = RechunkPlan(
        str(spec.id),
        old,
        new,
        assign_owners(math.prod(rechunk.grid(new)), workers),
        tuple(key_name(t) for t in transfers),
        key_name(key),
        frozenset(rechunk.linear(j, new) for j in targets.get(str(spec.id), ())),
    )
    for t in transfers:
        out[t] = Task(t, arrays.transfer, dsk[t].args[0], plan, sources[t])
    out[key] = Task(key, tasks.barrier, plan, *(TaskRef(t) for t in transfers))
    return plan


def _index(value: Any) -> rechunk.Index:
    return tuple(int(i) for i in value)


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
            f"{key!r}: rdist runs dataframe P2P shuffles and array P2P rechunks only, not "
            f"{type(spec).__name__}; build this collection with the task-based method "
            "instead (dask.config.set({'dataframe.shuffle.method': 'tasks'}))"
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


def _known(exchanges: dict[str, _T], token: str, unpack: Any) -> _T:
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
