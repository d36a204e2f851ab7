"""The functions the rewritten tasks run on workers (they must import cheaply: workers
unpickle them by reference)."""

from __future__ import annotations

from typing import Any

from rdist.protocol import serialize
from rdist.shuffle.plan import ExchangePlan
from rdist.shuffle.service import service_of


def split(df: Any, plan: ExchangePlan) -> dict[int, Any]:
    """``df`` cut by output partition (rows keep their order within a piece)."""
    import numpy as np

    parts = df[plan.column].to_numpy()
    if plan.drop_column:
        df = df.drop(columns=plan.column)
    if not len(parts):
        return {}
    order = np.argsort(parts, kind="stable")
    ordered = parts[order]
    starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    bounds = [0, *starts.tolist(), len(ordered)]
    taken = df.iloc[order]
    return {
        int(ordered[a]): taken.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    }


def transfer(df: Any, plan: ExchangePlan, source: int) -> int:
    """Split input partition ``source`` and send every piece to its output's owner."""
    from rdist.worker.context import get_worker

    by_owner: dict[str, dict[int, list[Any]]] = {}
    for part, piece in split(df, plan).items():
        by_owner.setdefault(plan.owner_of(part), {})[part] = serialize.dumps(piece)
    service_of(get_worker()).push(plan.id, source, by_owner)
    return len(df)


def barrier(exchange: str, *rows: int) -> int:
    """Every transfer has delivered (this task depends on them all): unpacks may start."""
    return sum(rows)


def unpack(plan: ExchangePlan, part: int, meta: Any, _barrier: int) -> Any:
    """Output partition ``part`` from the pieces sent to its owner (this worker, normally)."""
    from rdist.worker.context import get_worker

    svc = service_of(get_worker())
    owner = plan.owner_of(part)
    if owner == svc.address:
        pieces = svc.inbox.take(plan.id, part)
    else:  # the scheduler placed us elsewhere (the owner is busy or gone)
        pieces = svc.pull(owner, plan.id, part)
    return assemble([serialize.loads(frames) for _, frames in pieces], meta)


def assemble(frames: list[Any], meta: Any) -> Any:
    if not frames:
        return meta.iloc[:0].copy()
    if len(frames) == 1:
        return frames[0]
    import pandas as pd

    return pd.concat(frames)
