"""The Client's calls that share things with the whole cluster: published datasets and
plugins (``upload_file`` among them), with dask's names, signatures and docstrings.

Each is a function of the client, set on :class:`~rdist.client.client.Client` as the
method (or property) of that name (``Client.publish_dataset is sharing.publish_dataset``);
the work is done by :mod:`~rdist.client.datasets` and :mod:`rdist.plugins.registry`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rdist.client.datasets import NO_DEFAULT, Datasets

if TYPE_CHECKING:
    from rdist.client.client import Client

__all__ = [
    "datasets",
    "get_dataset",
    "list_datasets",
    "publish_dataset",
    "register_plugin",
    "register_scheduler_plugin",
    "register_worker_plugin",
    "unpublish_dataset",
    "unregister_worker_plugin",
    "upload_file",
]


# -- published datasets (rdist.client.datasets) ------------------------------------------
def publish_dataset(
    self: Client, *args: Any, name: Any = None, override: bool = False, **kwargs: Any
) -> None:
    """Publish named datasets (futures, persisted collections, any object) for every
    client: ``publish_dataset(x=df)``, ``publish_dataset(df, name="x")`` or
    ``publish_dataset({"x": df})``; KeyError if a name exists unless ``override``.
    Their futures stay computed until unpublished, whoever leaves."""
    self._datasets.publish(args, name, override, kwargs)


def get_dataset(self: Client, name: Any, default: Any = NO_DEFAULT, **kwargs: Any) -> Any:
    """A published dataset (a list of them for a list of names); KeyError if it does
    not exist, unless a ``default`` is given."""
    return self._datasets.get(name, default)


def unpublish_dataset(self: Client, name: Any, **kwargs: Any) -> None:
    """Remove published datasets (a name or a list of names); unknown names are fine."""
    self._datasets.unpublish(name)


def list_datasets(self: Client, **kwargs: Any) -> list[str]:
    """The names of the published datasets, sorted."""
    return self._datasets.names()


def datasets(self: Client) -> Datasets:
    """The published datasets as a mapping: ``client.datasets["x"] = df``, ``del``,
    ``in``, iteration, ``len``."""
    return Datasets(self)


# -- plugins (rdist.plugins) ---------------------------------------------------------------
def register_plugin(
    self: Client, plugin: Any, name: str | None = None, idempotent: bool | None = None
) -> dict[str, Any]:
    """Register a WorkerPlugin (set up on every worker, present and future), a
    NannyPlugin (every nanny) or a SchedulerPlugin (accepted only by a scheduler
    started with ``--accept-client-plugins``). A failing ``setup`` raises here."""
    return self._plugins.register(plugin, name, idempotent)


def upload_file(self: Client, filename: str, load: bool = True) -> dict[str, Any]:
    """Send a ``.py``, ``.zip`` or ``.egg`` file to every worker, now and every worker
    that joins later, and put it on their import path (``load``: import it at once) --
    dask's ``upload_file``, as an ``UploadFile`` worker plugin; uploading a file of the
    same name again replaces it."""
    from rdist.plugins import UploadFile

    if not os.path.isfile(filename):
        raise FileNotFoundError(f"upload_file(filename={filename!r}): no such file")
    name = f"upload-file-{os.path.basename(filename)}"
    return register_plugin(self, UploadFile(filename, load=load), name=name)


def register_worker_plugin(
    self: Client, plugin: Any = None, name: str | None = None, nanny: bool | None = None
) -> dict[str, Any]:
    """dask's older spelling of :meth:`register_plugin` for worker/nanny plugins."""
    return self._plugins.register(plugin, name)


def register_scheduler_plugin(
    self: Client, plugin: Any, name: str | None = None, idempotent: bool | None = None
) -> dict[str, Any]:
    """dask's older spelling of :meth:`register_plugin` for scheduler plugins."""
    return self._plugins.register(plugin, name, idempotent)


def unregister_worker_plugin(self: Client, name: str, nanny: bool | None = None) -> dict[str, Any]:
    """Tear a worker (``nanny=True``: nanny) plugin down everywhere and forget it."""
    return self._plugins.unregister(name, nanny)
