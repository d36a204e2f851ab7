"""The Client's calls that run task graphs and dask collections: ``get``, ``compute``,
``persist``, ``normalize_collection``, ``recreate_error_locally`` (dask's names,
signatures and docstrings).

Each is a function of the client, set on :class:`~rdist.client.client.Client` as the
method of that name (``Client.compute is graph_calls.compute``); graphs become tasks in
:mod:`~rdist.client.collections` and :mod:`~rdist.client.submit`, and the values come back
through the client's :mod:`~rdist.client.results` room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rdist.client import collections as dask_collections
from rdist.client import inspect_more

if TYPE_CHECKING:
    from rdist.client.client import Client
    from rdist.client.future import Future

__all__ = ["compute", "get", "normalize_collection", "persist", "recreate_error_locally"]


def get(
    self: Client,
    dsk: Any,
    keys: Any,
    workers: Any = None,
    allow_other_workers: bool = False,
    resources: dict[str, float] | None = None,
    retries: int | None = None,
    priority: int = 0,
    sync: bool = True,
    **kwargs: Any,
) -> Any:
    """Compute a task graph -- a dict of tuple tasks or dask task-spec nodes, or what
    ``dask.compute(x, scheduler=client.get)`` hands over -- and return the values of
    ``keys`` in their shape."""
    self._check_open("get")
    futures = dask_collections.submit_graph(
        self._submitter,
        dsk,
        list(dict.fromkeys(dask_collections.flatten_keys(keys))),
        workers=workers,
        resources=resources,
        retries=retries,
        priority=priority,
        allow_other_workers=allow_other_workers,
    )
    values = self._results.gather(list(futures.values()), "raise")
    return dask_collections.shape_like(keys, dict(zip(futures, values)))


def compute(
    self: Client,
    collections: Any,
    sync: bool = False,
    optimize_graph: bool = True,
    workers: Any = None,
    allow_other_workers: bool = False,
    resources: dict[str, float] | None = None,
    retries: int | None = None,
    priority: int = 0,
    **kwargs: Any,
) -> Any:
    """A future for each dask collection's value (``sync=True``: the values)."""
    self._check_open("compute")
    futures = dask_collections.compute(
        self._submitter,
        collections,
        optimize_graph,
        workers=workers,
        allow_other_workers=allow_other_workers,
        resources=resources,
        retries=retries,
        priority=priority,
    )
    return self._results.gather(futures, "raise") if sync else futures


def persist(
    self: Client,
    collections: Any,
    optimize_graph: bool = True,
    workers: Any = None,
    allow_other_workers: bool = False,
    resources: dict[str, float] | None = None,
    retries: int | None = None,
    priority: int = 0,
    **kwargs: Any,
) -> Any:
    """The dask collection(s) computed on the cluster and backed by futures."""
    self._check_open("persist")
    return dask_collections.persist(
        self._submitter,
        collections,
        optimize_graph,
        workers=workers,
        allow_other_workers=allow_other_workers,
        resources=resources,
        retries=retries,
        priority=priority,
    )


def normalize_collection(self: Client, collection: Any) -> Any:
    """``collection`` with its graph's tasks replaced by this client's futures where
    it holds them (nothing is computed twice), as dask's."""
    return inspect_more.normalize_collection(self, collection)


def recreate_error_locally(self: Client, future: Future) -> None:
    """Run the task blamed for ``future``'s failure here, on its inputs: the error is
    raised in this process (for pdb), as dask's."""
    self._check_open("recreate_error_locally")
    inspect_more.recreate_error_locally(self, future)
