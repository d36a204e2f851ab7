"""The tasks of an array rechunk through the exchange (``array.rechunk.method="p2p"``).

dask lowers a P2P rechunk into groups of chunks that can be rechunked on their own; each
group is one exchange (:class:`~rdist.shuffle.plan.RechunkPlan`) with a transfer per input
chunk, a barrier, and an unpack per output chunk. A transfer cuts its input chunk once
(:func:`rdist.shuffle.rechunk.split`) and sends each piece to the owner of its output
chunk, batched per owner, exactly as a dataframe transfer does
(:func:`rdist.shuffle.tasks.deliver`: same data plane, inbox, spill and restart); the
barrier is the dataframe exchange's; an unpack places its pieces into the output chunk
(:func:`rdist.shuffle.rechunk.assemble`). A group of one input chunk has no exchange: each
of its output chunks is a slice of that chunk (:func:`cut`), taken where the chunk is.

Chunks must be numpy arrays (any dtype, any number of dimensions); anything else -- a
masked, sparse or GPU array -- is refused with the setting to use instead.
"""

from __future__ import annotations

import importlib
from typing import Any

from rdist import task_context
from rdist.protocol import serialize
from rdist.shuffle import rechunk, restart
from rdist.shuffle.plan import RechunkPlan
from rdist.shuffle.service import service_of
from rdist.shuffle.tasks import deliver, receive


def transfer(chunk: Any, plan: RechunkPlan, source: rechunk.Index) -> tuple[int, int]:
    """Split input chunk ``source`` (its index within the group) and send its pieces."""
    _check_numpy(chunk, source)
    worker = task_context.current_worker()
    run, owners = restart.current_run(worker, plan)
    here = service_of(worker).address
    by_owner: dict[str, dict[int, list[Any]]] = {}
    for target, piece in rechunk.split(chunk, source, plan.old, plan.new).items():
        part = rechunk.linear(target, plan.new)
        if part not in plan.wanted:
            continue
        if owners[part] == here and piece.base is not None:
            # kept here until unpacked: a copy, so the whole input chunk need not stay
            piece = piece.copy()
        by_owner.setdefault(owners[part], {})[part] = serialize.dumps(piece)
    deliver(worker, plan, run, rechunk.linear(source, plan.old), by_owner)
    return run, int(chunk.size)


def unpack(plan: RechunkPlan, target: rechunk.Index, run: int) -> Any:
    """Output chunk ``target`` (its index within the group) from the pieces sent for it."""
    frames = receive(plan, rechunk.linear(target, plan.new), run)
    pieces = {rechunk.unlinear(s, plan.old): serialize.loads(f) for s, f in frames}
    out = rechunk.assemble(target, pieces, plan.old, plan.new)
    if not out.flags.writeable:  # a buffer received read-only: the result is the user's
        out = out.copy()
    return out


def cut(chunk: Any, old: rechunk.Chunks, new: rechunk.Chunks, target: rechunk.Index) -> Any:
    """Output chunk ``target`` of a group with one input chunk: a slice of it (no exchange)."""
    return rechunk.piece(chunk, tuple(0 for _ in old), target, old, new)


def _check_numpy(chunk: Any, source: rechunk.Index) -> None:
    np: Any = importlib.import_module("numpy")
    if type(chunk) is not np.ndarray:
        raise TypeError(
            f"input chunk {source} of a p2p rechunk is a {type(chunk).__module__}."
            f"{type(chunk).__qualname__}: rdist's p2p rechunk handles numpy chunks only; "
            "use dask.config.set({'array.rechunk.method': 'tasks'}) when building it"
        )
