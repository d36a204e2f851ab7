"""The plugin interfaces (as dask's): classes of no-op hooks to override.

- :class:`WorkerPlugin` -- ``setup(worker)``, ``teardown(worker)``,
  ``transition(key, start, finish, **kwargs)``: registered by a client, kept in Redis and
  set up on every worker, present and future (:mod:`rdist.plugins.worker_side`);
- :class:`NannyPlugin` -- ``setup(nanny)``, ``teardown(nanny)`` and the ``restart``
  attribute (restart the worker once it is set up): on every nanny
  (:mod:`rdist.plugins.nanny_side`);
- :class:`SchedulerPlugin` -- ``start``, ``close``, ``update_graph``, ``transition``,
  ``add_worker``, ``remove_worker``, ``add_client``, ``remove_client``, ``restart``: from
  the scheduler's own configuration, since the scheduler never unpickles what clients
  send (:mod:`rdist.plugins.scheduler_side`).

Every hook is called by the shell of its process, never inside a state machine, and a
hook that raises is logged and ignored: a plugin never stops its host. A hook may be a
coroutine function (dask's are often ``async def``): it is run to completion.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from typing import Any

log = logging.getLogger("rdist.plugins")

WORKER, NANNY, SCHEDULER = "worker", "nanny", "scheduler"


class SchedulerPlugin:
    """Hooks into the scheduler; every method is optional (``distributed.SchedulerPlugin``)."""

    idempotent: bool = False

    def start(self, scheduler: Any) -> None:
        """When the scheduler starts leading (a standby taking over calls it too)."""

    def close(self) -> None:
        """When the scheduler stops leading, or shuts down."""

    def update_graph(
        self,
        scheduler: Any,
        *,
        client: str,
        keys: set[str],
        tasks: list[str],
        annotations: dict[str, Any],
        priority: dict[str, Any],
        stimulus_id: str,
        **kwargs: Any,
    ) -> None:
        """A client submitted tasks (``tasks``) and wants ``keys``."""

    def restart(self, scheduler: Any) -> None:
        """``client.restart()``."""

    def transition(self, key: str, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """A task changed state (``stimulus_id`` says why)."""

    def add_worker(self, scheduler: Any, worker: str) -> None:
        """A worker (its address) joined."""

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        """A worker left or was lost."""

    def add_client(self, scheduler: Any, client: str) -> None:
        """A client connected."""

    def remove_client(self, scheduler: Any, client: str) -> None:
        """A client left or was lost."""


class WorkerPlugin:
    """Hooks into every worker; every method is optional (``distributed.WorkerPlugin``)."""

    idempotent: bool = False

    def setup(self, worker: Any) -> None:
        """When the plugin is registered (on every worker present) or a worker starts."""

    def teardown(self, worker: Any) -> None:
        """When the worker closes, or the plugin is unregistered or replaced."""

    def transition(self, key: str, start: str, finish: str, **kwargs: Any) -> None:
        """A task changed state on this worker (``stimulus_id`` says why)."""


class NannyPlugin:
    """Hooks into every nanny; every method is optional (``distributed.NannyPlugin``)."""

    idempotent: bool = False
    #: restart the nanny's worker once the plugin is set up (so that it takes effect)
    restart: bool = False

    def setup(self, nanny: Any) -> None:
        """When the plugin is registered (on every nanny present) or a nanny starts."""

    def teardown(self, nanny: Any) -> None:
        """When the nanny closes, or the plugin is unregistered or replaced."""


_SCHEDULER_HOOKS = (
    "start",
    "close",
    "update_graph",
    "restart",
    "transition",
    "add_worker",
    "remove_worker",
    "add_client",
    "remove_client",
)


def kind_of(plugin: Any) -> str:
    """``worker``, ``nanny`` or ``scheduler``: by class first (ours or dask's), then by
    the hooks it has (``setup`` without ``start``: a worker plugin, as dask assumes)."""
    as_registered = getattr(plugin, "as_registered", None)
    if as_registered is not None:
        plugin = as_registered()
    for cls in type(plugin).__mro__:
        if cls is SchedulerPlugin or cls.__name__ == "SchedulerPlugin":
            return SCHEDULER
        if cls is NannyPlugin or cls.__name__ == "NannyPlugin":
            return NANNY
        if cls is WorkerPlugin or cls.__name__ == "WorkerPlugin":
            return WORKER
    if any(hasattr(plugin, hook) for hook in ("setup", "teardown")):
        return WORKER
    if any(hasattr(plugin, hook) for hook in _SCHEDULER_HOOKS):
        return SCHEDULER
    raise TypeError(
        f"{type(plugin).__name__} is no plugin: subclass rdist.WorkerPlugin, NannyPlugin or "
        "SchedulerPlugin"
    )


def plugin_name(plugin: Any, name: str | None = None) -> str:
    """The name given, else the plugin's ``name`` attribute, else a fresh one."""
    found = name or getattr(plugin, "name", None)
    if found is not None and not isinstance(found, str):
        raise TypeError(f"a plugin's name must be a string, not {type(found).__name__}")
    return found or f"{type(plugin).__name__}-{uuid.uuid4()}"


def has_hook(plugin: Any, hook: str, base: type) -> bool:
    """Whether ``plugin`` overrides ``hook`` (a no-op of ``base`` is not worth a call)."""
    method = getattr(type(plugin), hook, None)
    return method is not None and method is not getattr(base, hook, None)


def call_hook(plugin: Any, hook: str, *args: Any, **kwargs: Any) -> None:
    """Call a hook, running a coroutine to completion; a failure is logged, not raised."""
    try:
        run_hook(plugin, hook, *args, **kwargs)
    except Exception:
        log.exception("plugin %s: %s failed", type(plugin).__name__, hook)


def run_hook(plugin: Any, hook: str, *args: Any, **kwargs: Any) -> Any:
    """Call a hook, running a coroutine to completion; its failure is raised."""
    method = getattr(plugin, hook, None)
    if method is None:
        return None
    result = method(*args, **kwargs)
    if inspect.isawaitable(result):
        return _complete(result)
    return result


def _complete(awaitable: Any) -> Any:
    async def wrapped() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wrapped())
    raise RuntimeError("a coroutine hook cannot run inside a running event loop here")
