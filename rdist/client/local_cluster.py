"""How ``Client()`` with no address starts a cluster of its own -- without importing one.

The client sits below the cluster in rdist's layers: ``rdist.cluster`` starts schedulers
and workers, which use the client (``get_client()`` in a task), so the client must never
import ``rdist.cluster`` (not even inside a function: that is the same cycle, only later).
Instead the cluster module *registers* its ``LocalCluster`` here when it is imported::

    rdist/cluster.py:   local_cluster.register(LocalCluster)
    rdist/client/...:   cluster = local_cluster.start(**kwargs)

and the ``rdist`` package names that module here (:func:`register_module`) without
importing it: importing any part of the client imports the package first, and a
``Client()`` with no address imports the named module then, which registers its factory.
Another cluster type (a test double, a Kubernetes cluster) may register itself instead.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol


class ClusterLike(Protocol):
    """What a client needs of a cluster it was handed or started."""

    redis_url: str
    cluster_name: str

    def close(self) -> None: ...


class ClusterFactory(Protocol):
    def __call__(self, **kwargs: Any) -> ClusterLike: ...


_factory: ClusterFactory | None = None
#: a module that registers a factory when imported (``rdist.cluster``), loaded at need
_module: str | None = None


def register(factory: ClusterFactory) -> None:
    """Make ``factory(**kwargs)`` what ``Client()`` without an address starts."""
    global _factory
    _factory = factory


def register_module(name: str) -> None:
    """The module whose import registers the factory; imported when a cluster is needed."""
    global _module
    _module = name


def registered() -> ClusterFactory | None:
    if _factory is None and _module is not None:
        importlib.import_module(_module)
    return _factory


def start(**kwargs: Any) -> ClusterLike:
    """A new local cluster from the registered factory, for a client to own."""
    factory = registered()
    if factory is None:
        raise RuntimeError(
            "Client() without an address starts a LocalCluster, but none is registered: "
            "import rdist (or rdist.cluster) first, or pass the cluster's Redis URL"
        )
    return factory(**kwargs)
