"""What every task of one exchange needs to know, decided once at submission."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Exchange(Protocol):
    """What a restart needs of an exchange's plan (a dataframe's or an array's)."""

    @property
    def id(self) -> str: ...

    @property
    def owners(self) -> tuple[str, ...]: ...

    @property
    def npartitions(self) -> int: ...

    @property
    def barrier_key(self) -> str: ...

    def transfer_keys(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class ExchangePlan:
    """One exchange: its id, the column naming each row's output partition, the owner (a
    worker address) of every output partition in run 0, and the wire names of its
    transfer tasks and barrier (a restart asks the scheduler to run those again)."""

    id: str  #: dask's shuffle token: unique per shuffle of a graph
    column: str  #: the integer column holding each row's output partition
    owners: tuple[str, ...]  #: ``owners[j]``: the worker that assembles output partition j
    transfer_name: str  #: transfer ``i`` is the task ``(transfer_name, i)``
    ntransfers: int
    barrier_key: str  #: wire name of the barrier task
    drop_column: bool = True  #: the partition column leaves the frame once split

    @property
    def npartitions(self) -> int:
        return len(self.owners)

    def transfer_keys(self) -> list[str]:
        """Wire names of the transfer tasks (a tuple key travels as its ``repr``)."""
        return [repr((self.transfer_name, i)) for i in range(self.ntransfers)]


@dataclass(frozen=True, slots=True)
class RechunkPlan:
    """One exchange of an array rechunk (dask makes one per independent group of chunks):
    the input and output chunk sizes of the group, the owner of every output chunk (by its
    number in C order) in run 0, and the wire names of its transfers and barrier."""

    id: str  #: dask's token of this group
    old: tuple[tuple[int, ...], ...]  #: the group's input chunks, per axis
    new: tuple[tuple[int, ...], ...]  #: the group's output chunks, per axis
    owners: tuple[str, ...]  #: ``owners[j]``: the worker that assembles output chunk j
    transfers: tuple[str, ...]  #: wire names of the transfer tasks
    barrier_key: str  #: wire name of the barrier task
    wanted: frozenset[int]  #: output chunks that have an unpack (the others are not sent)

    @property
    def npartitions(self) -> int:
        return len(self.owners)

    def transfer_keys(self) -> list[str]:
        return list(self.transfers)


def assign_owners(npartitions: int, workers: list[str]) -> tuple[str, ...]:
    """Contiguous ranges of output partitions per worker (sorted addresses), as even as can be:
    neighbouring partitions (e.g. of a sort) land together."""
    if not workers:
        raise RuntimeError(
            "a p2p shuffle needs at least one live worker when the graph is submitted: "
            "wait for workers first (client.wait_for_workers(1))"
        )
    ordered = sorted(workers)
    n = len(ordered)
    return tuple(ordered[j * n // npartitions] for j in range(npartitions))
