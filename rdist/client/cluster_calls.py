"""The Client's calls about and to the cluster's processes: who holds what, ``run``,
versions, shared metadata, and the workers' lifetime (``restart``, ``retire_workers``,
``shutdown``, ``wait_for_workers``, ``amm``), with dask's names, signatures and docstrings.

Each is a function of the client, set on :class:`~rdist.client.client.Client` as the
method of that name (``Client.run is cluster_calls.run``); the work is done by the rooms
they call -- :mod:`~rdist.client.introspection`, :mod:`~rdist.client.inspect_more`,
:mod:`~rdist.client.retire`, :mod:`~rdist.client.metadata`, :mod:`~rdist.client.amm`.
Calls between them go to these functions themselves (``get_versions`` calls :func:`run`),
never through the instance: an asynchronous client's instance methods return awaitables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rdist import versions
from rdist.client import inspect_more, keynames, metadata, retire
from rdist.client.amm import AMMClientProxy
from rdist.client.future import futures_of
from rdist.config import mask_url
from rdist.protocol import wire

if TYPE_CHECKING:
    from rdist.client.client import Client

__all__ = [
    "amm",
    "get_metadata",
    "get_versions",
    "has_what",
    "nbytes",
    "nthreads",
    "processing",
    "restart",
    "retire_workers",
    "run",
    "run_on_scheduler",
    "scheduler_info",
    "set_metadata",
    "shutdown",
    "wait_for_workers",
    "who_has",
]


def restart(self: Client, timeout: float | None = None, wait_for_workers: bool = True) -> None:
    """Cancel every future of every client and restart all workers; returns once the
    workers are back (promptly: a task that is still running is not waited for)."""
    self._check_open("restart")
    timeout = timeout or self.timeout * 2
    deadline = time.monotonic() + timeout
    n_workers = len(self._introspection.workers())
    started = time.time()
    self._restarted.clear()
    self._sender.post(wire.Restart(self.id))
    if not self._restarted.wait(timeout):
        raise TimeoutError(f"the scheduler did not restart the cluster within {timeout} s")
    self.ledger.cancel_everything()
    if not wait_for_workers:
        return
    while sum(w.started >= started for w in self._introspection.workers().values()) < n_workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers did not come back within {timeout} s")
        self._stop.wait(0.05)  # a restart is rare: a short timed wait is fine


def scheduler_info(self: Client, n_workers: int = -1, **kwargs: Any) -> dict[str, Any]:
    self._check_open("ask for scheduler_info")
    return self._introspection.scheduler_info(self.cluster_name, mask_url(self.redis_url))


def nthreads(self: Client, workers: Any = None) -> dict[str, int]:
    self._check_open("ask for nthreads")
    return self._introspection.nthreads(workers)


def who_has(self: Client, futures: Any = None) -> dict[Any, list[str]]:
    """Key -> addresses of the workers holding its data (keys as the futures have them)."""
    self._check_open("ask who_has")
    keys = self.ledger.keys() if futures is None else [f._name for f in futures_of(futures)]
    found = self._introspection.who_has(keys)
    return {keynames.user_key(k): holders for k, holders in found.items()}


def has_what(self: Client, workers: Any = None) -> dict[str, list[Any]]:
    """Worker address -> the keys it holds."""
    self._check_open("ask has_what")
    found = self._introspection.has_what(workers)
    return {w: [keynames.user_key(k) for k in keys] for w, keys in found.items()}


def processing(self: Client, workers: Any = None) -> dict[str, list[Any]]:
    """Worker address -> the keys processing (assigned, not finished) there."""
    self._check_open("ask what is processing")
    return inspect_more.processing(self, workers)


def nbytes(self: Client, keys: Any = None, summary: bool = False, **kwargs: Any) -> dict[Any, int]:
    """Bytes of each result in memory (``summary=True``: per task group)."""
    self._check_open("ask for nbytes")
    return inspect_more.nbytes(self, keys, summary)


def wait_for_workers(self: Client, n_workers: int = 1, timeout: float | None = None) -> None:
    """Block until ``n_workers`` workers are running (woken by join events, no polling)."""
    self._check_open("wait_for_workers")
    self._introspection.wait_for_workers(n_workers, timeout)


def retire_workers(
    self: Client,
    workers: Any = None,
    close_workers: bool = True,
    remove: bool = True,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """Retire workers gracefully (default: the idle, cheap ones): the results only they
    hold move to the workers that stay first, then they leave and are not replaced by
    their nannies; returns address -> worker info of the workers retired."""
    self._check_open("retire workers")
    return retire.retire_workers(self, workers, close_workers, remove, kwargs.get("timeout"))


def amm(self: Client) -> AMMClientProxy:
    """The scheduler's Active Memory Manager: ``start()``, ``stop()``, ``running()``,
    ``run_once()`` (dask's ``client.amm``; see :mod:`rdist.client.amm`)."""
    return AMMClientProxy(self)


def shutdown(self: Client) -> None:
    """Stop the cluster -- its workers (no nanny restarts them) and the scheduler --
    and close this client, as dask's. Other clients of the cluster lose it too."""
    self._check_open("shut the cluster down")
    cluster = self.cluster or self._owned_cluster
    if cluster is None:
        retire.shutdown(self)
    self.close()
    if cluster is not None:
        cluster.close()


def run_on_scheduler(self: Client, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Not in rdist, on purpose: the scheduler never runs (or unpickles) user code."""
    raise NotImplementedError(
        "rdist's scheduler never runs user code, so there is no run_on_scheduler: use "
        "client.run(function) to run it on the workers, client.scheduler_info() / "
        "client.story(key) to look at the scheduler, or a SchedulerPlugin (loaded by "
        "`rdist scheduler --plugin`, or from clients with --accept-client-plugins)"
    )


def run(
    self: Client,
    function: Callable[..., Any],
    *args: Any,
    workers: Any = None,
    wait: bool = True,
    nanny: bool = False,
    on_error: str = "raise",
    **kwargs: Any,
) -> Any:
    """``function(*args, **kwargs)`` on every worker (or ``workers``): ``{address: result}``."""
    self._check_open("run")
    return self._introspection.run(function, args, kwargs, workers, wait, on_error)


def get_versions(
    self: Client, check: bool = False, packages: list[str] | None = None
) -> dict[str, Any]:
    """The Python and package versions of ``client``, ``scheduler`` and each of the
    ``workers`` (by address), as dask's; ``check=True`` raises ValueError naming every
    required package (and Python's minor version) that differs between them."""
    self._check_open("get_versions")
    answer = {
        "scheduler": self.store.meta.scheduler_versions(),
        "workers": run(self, versions.get_versions, packages),
        "client": versions.get_versions(packages),
    }
    if check:
        found = versions.mismatches(answer, packages)
        if found:
            raise ValueError(versions.mismatch_message(found))
    return answer


def set_metadata(self: Client, key: Any, value: Any) -> None:
    """Keep ``value`` (msgpack data) at ``key`` -- a str, or a list of str as a path
    into nested dicts -- for every client of the cluster, as dask's."""
    self._check_open("set_metadata")
    metadata.set_metadata(self.store, key, value)


def get_metadata(self: Client, keys: Any, default: Any = metadata.MISSING) -> Any:
    """The value at ``keys`` (a str or a path); ``default`` if absent, else KeyError."""
    return metadata.get_metadata(self.store, keys, default)
