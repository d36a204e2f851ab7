"""``Client(asynchronous=True)``: the same client, its waiting methods awaitable.

dask's asynchronous client runs on the caller's event loop. rdist's client does its waiting
on threads already (a sender, a listener, and the caller's thread reading replies), so the
asynchronous form is a thin layer: every method that waits is replaced, on that one
instance, by one that returns an awaitable running the blocking method on the loop's
default executor. The loop is never blocked: a coroutine awaiting ``gather`` of 10,000
futures leaves every other task of the loop running. Methods that do not wait --
``submit``, ``map``, ``compute``, ``persist``, ``scatter`` of nothing -- return at once, as
in dask; ``await future``, ``async for`` over ``as_completed`` and ``await wait(...)`` (see
:func:`wait_async`) wait the same way.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rdist.client.client import Client

__all__ = ["WAITING_METHODS", "in_thread", "make_awaitable"]

#: the Client methods that wait for the cluster (and so become awaitable)
WAITING_METHODS = (
    "cancel",
    "close",
    "dump_cluster_state",
    "forward_logging",
    "gather",
    "get_dataset",
    "get_scheduler_logs",
    "get_versions",
    "get_worker_logs",
    "has_what",
    "list_datasets",
    "nbytes",
    "nthreads",
    "processing",
    "publish_dataset",
    "rebalance",
    "register_plugin",
    "register_worker_plugin",
    "replicate",
    "restart",
    "retire_workers",
    "retry",
    "run",
    "scatter",
    "scheduler_info",
    "shutdown",
    "story",
    "unforward_logging",
    "unpublish_dataset",
    "upload_file",
    "wait_for_workers",
    "who_has",
)

T = TypeVar("T")


async def in_thread(call: Callable[[], T]) -> T:
    """``call()`` on the running loop's default executor, awaited."""
    return await asyncio.get_running_loop().run_in_executor(None, call)


def make_awaitable(client: Client) -> None:
    """Give ``client`` awaitable versions of its waiting methods (this instance only)."""
    cls = type(client)
    for name in WAITING_METHODS:
        method = getattr(cls, name, None)
        if method is not None:
            setattr(client, name, _awaitable(client, method))


def _awaitable(client: Client, method: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Awaitable[T]:
        return in_thread(functools.partial(method, client, *args, **kwargs))

    return call
