"""Hash joins (``merge`` with ``shuffle_method="p2p"``) through the exchange.

dask lowers such a merge to two exchanges, one per side, whose transfers first add a
column of hash partitions computed from the join keys, and one ``merge_unpack`` per output
partition joining the two sides' partitions. Here each side's transfer computes that
column (:func:`hash_transfer`) and hands the frame to :func:`rdist.shuffle.tasks.transfer`;
:func:`merge_unpack` assembles both partitions and joins them with dask's own
``merge_chunk``. Both sides hash the same way (this module), and their owners are the
same function of the output partition, so both halves of a join meet on one worker.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from rdist.shuffle import tasks
from rdist.shuffle.plan import ExchangePlan


@dataclass(frozen=True, slots=True)
class HashSpec:
    """How one side computes its rows' output partitions."""

    on: Any  #: join columns or index level names (as dask passes them)
    npartitions: int
    index_merge: bool  #: join on the index itself


def hash_transfer(df: Any, plan: ExchangePlan, spec: HashSpec, source: int) -> tuple[int, int]:
    parts = hash_partitions(df, spec)
    return tasks.transfer(df.assign(**{plan.column: parts}), plan, source)


def hash_partitions(df: Any, spec: HashSpec) -> Any:
    """The output partition of every row: a hash of its join keys, numbers as float64 (so
    that an int key of one side meets the same float key of the other)."""
    pd: Any = importlib.import_module("pandas")
    shuffle: Any = importlib.import_module("dask.dataframe.shuffle")
    if spec.index_merge:
        keys = pd.DataFrame({"_index": df.index}, index=df.index)
    else:
        keys = _keys_of(df, spec.on, pd)
    numeric = {c: "float64" for c, t in keys.dtypes.items() if _numeric(t, pd)}
    if numeric:
        keys = keys.astype(numeric, errors="ignore")
    return shuffle.partitioning_index(keys, spec.npartitions)


def _keys_of(df: Any, on: Any, pd: Any) -> Any:
    names = list(on) if isinstance(on, (list, tuple)) else [on]
    columns = [n for n in names if n in df.columns]
    keys = df[columns]
    if len(columns) < len(names):  # an index name is among them
        keys = keys.assign(_index=df.index)
    return keys


def _numeric(dtype: Any, pd: Any) -> bool:
    types = pd.api.types
    if isinstance(dtype, pd.CategoricalDtype):
        return bool(types.is_numeric_dtype(dtype.categories))
    return bool(types.is_numeric_dtype(dtype))


@dataclass(frozen=True, slots=True)
class JoinSpec:
    """What ``merge_chunk`` needs besides the two partitions."""

    how: str
    left_on: Any
    right_on: Any
    result_meta: Any
    suffixes: Any
    left_index: bool
    right_index: bool
    indicator: bool


def merge_unpack(
    left: ExchangePlan,
    right: ExchangePlan,
    part: int,
    metas: tuple[Any, Any],
    join: JoinSpec,
    left_run: int,
    right_run: int,
) -> Any:
    lhs = tasks.unpack(left, part, metas[0], left_run)
    rhs = tasks.unpack(right, part, metas[1], right_run)
    multi: Any = importlib.import_module("dask.dataframe.multi")
    return multi.merge_chunk(
        lhs,
        rhs,
        how=join.how,
        result_meta=join.result_meta,
        left_on=join.left_on,
        right_on=join.right_on,
        suffixes=join.suffixes,
        left_index=join.left_index,
        right_index=join.right_index,
        indicator=join.indicator,
    )
