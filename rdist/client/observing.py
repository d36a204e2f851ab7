"""The Client's calls that watch the cluster: events on topics, logs, the task stream,
the profiler, stories and cluster dumps (dask's names, signatures and docstrings).

Each is a function of the client, set on :class:`~rdist.client.client.Client` as the
method of that name (``Client.get_worker_logs is observing.get_worker_logs``): the work
is done by the rooms they call -- :mod:`~rdist.client.topics`, :mod:`~rdist.client.logs`,
:mod:`~rdist.client.dump`, :mod:`~rdist.client.diagnostics` and
:mod:`~rdist.client.introspection`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rdist.client import diagnostics as diag
from rdist.client import dump
from rdist.client import logs as client_logs
from rdist.client.cluster_calls import run
from rdist.client.introspection import StoryEvent

if TYPE_CHECKING:
    from rdist.client.client import Client

__all__ = [
    "dump_cluster_state",
    "forward_logging",
    "get_events",
    "get_scheduler_logs",
    "get_task_stream",
    "get_worker_logs",
    "log_event",
    "profile",
    "story",
    "subscribe_topic",
    "unforward_logging",
    "unsubscribe_topic",
]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


# -- events on topics (rdist.client.topics) ------------------------------------------------
def log_event(self: Client, topic: str | list[str], msg: Any) -> None:
    """Log ``msg`` (msgpack data) on ``topic`` (or each topic of a list), as dask's."""
    self._check_open("log_event")
    self._topics.log_event(topic, msg)


def get_events(self: Client, topic: str | None = None) -> Any:
    """The ``(time, msg)`` events of ``topic``, oldest first (``None``: a dict of every
    topic's)."""
    return self._topics.get_events(topic)


def subscribe_topic(self: Client, topic: str, handler: Callable[[tuple[float, Any]], Any]) -> None:
    """Call ``handler((time, msg))`` for each event logged on ``topic`` from now on."""
    self._check_open("subscribe_topic")
    self._topics.subscribe(topic, handler)


def unsubscribe_topic(self: Client, topic: str) -> None:
    self._topics.unsubscribe(topic)


# -- logs (rdist.client.logs, rdist.client.dump) ---------------------------------------------
def get_worker_logs(
    self: Client, n: int | None = None, workers: Any = None, nanny: bool = False
) -> dict[str, list[tuple[str, str]]]:
    """``{address: [(level, line), ...]}``: the last ``n`` lines (None: all kept) of each
    worker's log (``nanny``: its nanny's), oldest first, as dask's."""
    self._check_open("get_worker_logs")
    return client_logs.worker_logs(self.store, n, workers, nanny)


def get_scheduler_logs(self: Client, n: int | None = None) -> list[tuple[str, str]]:
    """The last ``n`` lines (None: all kept) of the scheduler's log, oldest first."""
    self._check_open("get_scheduler_logs")
    return client_logs.scheduler_logs(self.store, n)


def forward_logging(
    self: Client, logger_name: str | None = None, level: int = logging.NOTSET
) -> None:
    """Records of ``logger_name`` (None: the root logger) at ``level`` and above,
    logged on the workers (by tasks), are handled again by this client's logger of the
    same name, as dask's."""
    self._check_open("forward_logging")
    topic = client_logs.forwarding_topic(logger_name)
    self._topics.subscribe(topic, client_logs.re_emit)
    plugin = client_logs.ForwardLogging(logger_name, level, topic)
    self._plugins.register(plugin, topic, None)


def unforward_logging(self: Client, logger_name: str | None = None) -> None:
    """Stop what :meth:`forward_logging` of ``logger_name`` started."""
    topic = client_logs.forwarding_topic(logger_name)
    self._topics.unsubscribe(topic)
    self._plugins.unregister(topic)


def dump_cluster_state(
    self: Client,
    filename: str = "dump",
    write_from_scheduler: bool | None = None,
    exclude: Iterable[str] = (),
    format: str = "msgpack",
) -> str:
    """Write the scheduler's state (from Redis) and every worker's (asked of it) to
    ``filename`` + ``.msgpack.gz`` or ``.yaml``, for a bug report; returns the path.
    dask's signature: ``write_from_scheduler`` changes nothing here (the scheduler
    runs no such code: the client always writes the file)."""
    self._check_open("dump_cluster_state")
    state = dump.cluster_state(self.store, lambda f: run(self, f, on_error="return"))
    return dump.write(state, filename, format, exclude)


# -- diagnostics (rdist.client.diagnostics) ------------------------------------------------
def get_task_stream(
    self: Client,
    start: Any = None,
    stop: Any = None,
    count: int | None = None,
    plot: bool | str = False,
    filename: str = "task-stream.html",
) -> Any:
    """The task-stream records of ``[start, stop]`` (epoch seconds, datetimes, or
    durations ago like ``"10s"``), the last ``count`` only when given, as dask's; with
    ``plot``, ``(records, filename)`` after writing them as an HTML page there."""
    begin, end = diag.time_bound(start), diag.time_bound(stop)
    records = diag.task_records(*diag.task_stream(self.store, begin, end), count)
    if not plot:
        return records
    diag.write_task_stream(filename, records)
    return records, filename


def profile(
    self: Client,
    key: str | None = None,
    start: Any = None,
    stop: Any = None,
    workers: Any = None,
    filename: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The sampling profiler's call tree of ``[start, stop]`` as dask's profile dict
    (of the task group ``key`` only, e.g. ``"inc"``, when given); with ``filename``,
    an HTML flame graph is written there too."""
    begin, end = diag.time_bound(start), diag.time_bound(stop)
    chosen = None if workers is None else [str(w) for w in _as_list(workers)]
    state = diag.profile(self.store, key, begin, end, chosen)
    if filename is not None:
        diag.write_profile(filename, state, f"rdist profile{f' of {key}' if key else ''}")
    return state


def story(
    self: Client, *keys_or_stimuli: Any, on_error: str = "raise", timeout: float | None = None
) -> list[StoryEvent]:
    """What happened to these keys (or stimulus ids), as dask's ``Client.story``: the
    transition records of the scheduler and of every worker, merged in time order,
    each a :class:`~rdist.client.introspection.StoryEvent` naming its ``source``.

    Every process is asked on its stream and answers on this client's; one that does
    not answer within ``timeout`` (default: the client's) raises TimeoutError naming
    it, or with ``on_error="ignore"`` is logged and left out."""
    self._check_open("ask for a story")
    return self._introspection.story(keys_or_stimuli, on_error, timeout)
