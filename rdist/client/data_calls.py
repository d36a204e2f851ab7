"""The Client's calls that put data on workers and move it: ``scatter``, ``replicate``,
``rebalance``, and the scattering of large task arguments (dask's names, signatures and
docstrings).

Each public one is a function of the client, set on :class:`~rdist.client.client.Client`
as the method of that name (``Client.scatter is data_calls.scatter``); the data moves in
:mod:`~rdist.client.data`. Data the client placed itself is finished at once in its
ledger, and the scheduler is told where it is (:func:`settle_scattered`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rdist.client import keynames, validate
from rdist.client.future import FINISHED, Future, futures_of, wait
from rdist.protocol import wire

if TYPE_CHECKING:
    from rdist.client.client import Client

__all__ = ["place", "rebalance", "replicate", "scatter", "settle_scattered"]


def place(client: Client, values: list[Any], workers: list[str] | None) -> list[Future]:
    """Scatter large arguments (``rdist.client.large``) before the tasks needing them;
    data this client holds already (the same array passed again) is not sent twice."""
    held = [Future._named(v.name, client) for v in values if client.ledger.holds(v.name)]
    new = [v for v in values if not client.ledger.holds(v.name)]
    if not new:
        return held
    targets = client._introspection.targets(workers, None)
    placed = client._data.scatter_serialized(new, targets)
    return held + settle_scattered(client, placed)


def settle_scattered(client: Client, placed: list[wire.KeyInMemory]) -> list[Future]:
    """Futures of data we placed, finished at once; the scheduler is told where it is."""
    futures = []
    for where in placed:
        future = Future._named(where.key, client)
        client.ledger.finish(future._state, where)
        futures.append(future)
    rows = [wire.ScatterItem(w.key, w.who_has, w.nbytes, w.in_redis) for w in placed]
    client._sender.post(wire.Scatter(client.id, rows))
    return futures


def scatter(
    self: Client,
    data: Any,
    workers: Any = None,
    broadcast: bool = False,
    direct: bool | None = None,
    hash: bool = True,
    timeout: float | None = None,
) -> Any:
    """Put local data on workers; returns finished futures in the shape of ``data``."""
    self._check_open("scatter")
    broadcast = validate.flag(broadcast, "broadcast")
    hash = validate.flag(hash, "hash")
    items: list[tuple[str | None, Any]]
    if isinstance(data, dict):
        items = [(keynames.check_key(k, "a key of scatter's data"), x) for k, x in data.items()]
    elif isinstance(data, (list, tuple, set, frozenset)):
        items = [(None, x) for x in data]
    else:
        items = [(None, data)]
    targets = self._introspection.targets(validate.workers(workers), timeout)
    placed = self._data.scatter(items, targets, broadcast, hash)
    futures = settle_scattered(self, placed)
    if isinstance(data, dict):
        return {k: f for k, f in zip(data, futures)}
    if isinstance(data, (list, tuple)):
        return type(data)(futures)
    return futures if isinstance(data, (set, frozenset)) else futures[0]


def replicate(
    self: Client,
    futures: Any,
    n: int | None = None,
    workers: Any = None,
    branching_factor: int = 2,
    **kwargs: Any,
) -> None:
    """Copy the futures' data until each is on ``n`` workers (default: all of
    ``workers``, default all); extra copies beyond ``n`` are dropped. Blocks until done."""
    self._check_open("replicate")
    found = futures_of(futures)
    wait(found)
    keys = list(dict.fromkeys(f._name for f in found if f.status == FINISHED))
    self._data.replicate(keys, n, workers)


def rebalance(self: Client, futures: Any = None, workers: Any = None, **kwargs: Any) -> None:
    """Move data (of ``futures``, default all) between ``workers`` (default all) so each
    holds about the same number of bytes. Blocks until done."""
    self._check_open("rebalance")
    keys = None
    if futures is not None:
        found = futures_of(futures)
        wait(found)
        keys = list(dict.fromkeys(f._name for f in found if f.status == FINISHED))
    self._data.rebalance(keys, workers)
