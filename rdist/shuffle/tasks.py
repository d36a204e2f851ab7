"""The functions the rewritten tasks run on workers (they must import cheaply: workers
unpickle them by reference).

A transfer returns ``(run, rows)``: the run it delivered its pieces for, so the barrier can
tell that every transfer belongs to the current run; the barrier returns that run, and an
unpack assembles the pieces of that run.
"""

from __future__ import annotations

from typing import Any

from rdist import task_context
from rdist.protocol import serialize
from rdist.shuffle import frames, restart
from rdist.shuffle.inbox import PiecesGone
from rdist.shuffle.plan import Exchange, ExchangePlan
from rdist.shuffle.service import PeerLost, service_of


def split(df: Any, plan: ExchangePlan) -> dict[int, Any]:
    """``df`` cut by output partition (rows keep their order within a piece)."""
    return frames.cut(df, plan.column, plan.drop_column)


def transfer(df: Any, plan: ExchangePlan, source: int) -> tuple[int, int]:
    """Split input partition ``source`` and send every piece to its output's owner."""
    worker = task_context.current_worker()
    run, owners = restart.current_run(worker, plan)
    by_owner: dict[str, dict[int, list[Any]]] = {}
    for part, piece in split(df, plan).items():
        by_owner.setdefault(owners[part], {})[part] = serialize.dumps(piece)
    deliver(worker, plan, run, source, by_owner)
    return run, len(df)


def deliver(
    worker: Any, plan: Exchange, run: int, source: int, by_owner: dict[str, dict[int, list[Any]]]
) -> None:
    """Send serialized pieces (owner -> output -> frames) of input ``source``; an owner that
    cannot be reached restarts the exchange (and reschedules the calling transfer)."""
    try:
        service_of(worker).push(plan.id, run, source, by_owner)
    except PeerLost as exc:
        restart.restart(worker, plan, run, {exc.address}, f"cannot send to {exc.address}: {exc}")


def barrier(plan: Exchange, *done: tuple[int, int]) -> int:
    """Every transfer has delivered (this task depends on them all): unpacks may start.
    Transfers of an older run (finished before a restart reached them) start it again."""
    worker = task_context.current_worker()
    run, _ = restart.current_run(worker, plan)
    if any(r != run for r, _ in done):
        restart.restart(worker, plan, run, set(), "transfers of an older run")
    return run


def unpack(plan: ExchangePlan, part: int, meta: Any, run: int) -> Any:
    """Output partition ``part`` from the pieces sent to its owner (this worker, normally)."""
    pieces = receive(plan, part, run)
    return assemble([serialize.loads(frames) for _, frames in pieces], meta)


def receive(plan: Exchange, part: int, run: int) -> list[tuple[int, list[Any]]]:
    """The serialized pieces of output ``part`` (by input, in input order), from this worker
    or from the owner; a lost owner or pieces gone restart the exchange."""
    worker = task_context.current_worker()
    svc = service_of(worker)
    owner = restart.owners_of(worker, plan, run)[part]
    try:
        if owner == svc.address:
            return svc.take(plan.id, run, part)
        # the scheduler placed us elsewhere (the owner is busy or gone)
        return svc.pull(owner, plan.id, run, part)
    except PeerLost as exc:
        restart.restart(worker, plan, run, {exc.address}, f"cannot fetch from {exc.address}")
    except PiecesGone as exc:  # this unpack ran before and its result was lost since
        restart.restart(worker, plan, run, set(), str(exc))


def assemble(pieces: list[Any], meta: Any) -> Any:
    return frames.assemble(pieces, meta)
