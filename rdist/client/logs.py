"""Logs from the cluster on the client, as dask's: ``get_worker_logs`` /
``get_scheduler_logs`` (the processes' log buffers in Redis, :mod:`rdist.logbuffer`),
``forward_logging`` (records that tasks log on the workers re-emitted on the client's
loggers) and the client's side of ``rdist.print`` / ``rdist.warn`` (a task's print or
warning shown on the worker *and* on every client, through the topics ``print`` and
``warn``; the task's side is :mod:`rdist.worker.tasklog`).

Every event a task emits here goes out with its worker's next log batch (one pipeline for
everything logged in a moment), not one Redis round trip per line.
"""

from __future__ import annotations

import builtins
import logging
import sys
import warnings
from typing import TYPE_CHECKING, Any

from rdist.client.introspection import running_workers
from rdist.client.options import worker_list
from rdist.plugins.base import WorkerPlugin

if TYPE_CHECKING:
    from rdist.store import RedisStore

__all__ = [
    "DEFAULT_TOPICS",
    "ForwardLogging",
    "forwarding_topic",
    "re_emit",
    "scheduler_logs",
    "show_print",
    "show_warning",
    "worker_logs",
]

Lines = list[tuple[str, str]]
#: the attribute a forwarded record carries on the client: never forwarded again (a
#: client in the workers' own process would otherwise loop)
FORWARDED = "rdist_forwarded"


# -- the log buffers ------------------------------------------------------------------------
def worker_logs(
    store: RedisStore, n: int | None = None, workers: Any = None, nanny: bool = False
) -> dict[str, Lines]:
    """``{worker address: [(level, line), ...]}``: the last ``n`` lines (all kept with
    None) of each worker's (``nanny``: its nanny's) log, oldest first. ``workers`` names
    addresses or worker names; an address no longer present is read all the same (the
    lines of a worker that died stay in Redis for an hour)."""
    wanted = worker_list(workers)
    present = running_workers(store)
    if wanted is None:
        addresses = sorted(present)
    else:
        by_name = {record.name: address for address, record in present.items()}
        addresses = sorted({by_name.get(w, w) for w in wanted})
    tails = store.logs.tails("nanny" if nanny else "worker", addresses, _count(n))
    return {a: [(line.level, line.message) for line in lines] for a, lines in tails.items()}


def scheduler_logs(store: RedisStore, n: int | None = None) -> Lines:
    """The last ``n`` lines of the scheduler's log (the one leading, or the last that led)."""
    count = _count(n)
    token = store.leader() or store.logs.current_scheduler()
    if token is None:
        return []
    lines = store.logs.tails("scheduler", [token], count)[token]
    return [(line.level, line.message) for line in lines]


def _count(n: int | None) -> int | None:
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n={n!r}: the number of lines is a positive int, or None for all")
    return n


# -- forwarded logging ----------------------------------------------------------------------
def forwarding_topic(logger_name: str | None) -> str:
    return f"forward-logging-{logger_name or '<root>'}"


class _ForwardingHandler(logging.Handler):
    """On a worker: each record of the logger, as a plain map, on the forwarding topic."""

    def __init__(self, worker: Any, topic: str, level: int) -> None:
        super().__init__(level)
        self.worker = worker
        self.topic = topic

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, FORWARDED, False):
            return
        try:
            self.worker.logs.topic(self.topic, self._attributes(record), record.created)
        except Exception:
            self.handleError(record)

    def _attributes(self, record: logging.LogRecord) -> dict[str, Any]:
        # as logging.handlers.SocketHandler.makePickle: the message made here (its
        # arguments may not exist on the client), the traceback as text
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        out: dict[str, Any] = {}
        for name, value in record.__dict__.items():
            if value is None or isinstance(value, (str, int, float, bool)):
                out[name] = value
            elif name not in ("args", "exc_info", "msg"):
                out[name] = repr(value)
        out.update(msg=record.getMessage(), args=None, exc_info=None, worker=self.worker.address)
        out.pop("message", None)
        return out


class ForwardLogging(WorkerPlugin):
    """The worker plugin of ``client.forward_logging`` (dask's ``ForwardLoggingPlugin``)."""

    def __init__(self, logger_name: str | None, level: int, topic: str) -> None:
        self.logger_name = logger_name
        self.level = level
        self.topic = topic
        self._handler: _ForwardingHandler | None = None

    def setup(self, worker: Any) -> None:
        self._handler = _ForwardingHandler(worker, self.topic, self.level)
        logging.getLogger(self.logger_name).addHandler(self._handler)

    def teardown(self, worker: Any) -> None:
        if self._handler is not None:
            logging.getLogger(self.logger_name).removeHandler(self._handler)
            self._handler = None


def re_emit(event: tuple[float, Any]) -> None:
    """A forwarded record, handled by the client's logger of the same name (its level and
    handlers decide where it shows, as for any record logged here)."""
    _, attributes = event
    if not isinstance(attributes, dict):
        return
    record = logging.makeLogRecord({**attributes, FORWARDED: True})
    logging.getLogger(record.name).handle(record)


# -- rdist.print / rdist.warn (their worker side: rdist.worker.tasklog) -----------------------
def show_print(event: tuple[float, Any]) -> None:
    """The client's side of ``rdist.print``."""
    _, msg = event
    if not isinstance(msg, dict) or not isinstance(msg.get("args"), list):
        return
    stream = sys.stderr if msg.get("file") == 2 else sys.stdout
    builtins.print(
        *msg["args"],
        sep=_text_or(msg.get("sep"), " "),
        end=_text_or(msg.get("end"), "\n"),
        file=stream,
        flush=bool(msg.get("flush", False)),
    )


def show_warning(event: tuple[float, Any]) -> None:
    """The client's side of ``rdist.warn``: the same category where it can be imported
    here (a Warning subclass), else a UserWarning."""
    _, msg = event
    if not isinstance(msg, dict):
        return
    warnings.warn(str(msg.get("message", "")), _category(msg.get("category")), stacklevel=2)


def _text_or(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default


def _category(name: Any) -> type[Warning]:
    """``module:qualname`` of a warning class -> the class, from a module loaded here
    already: what a worker sent is never unpickled, nor makes us import anything."""
    if not isinstance(name, str) or ":" not in name:
        return UserWarning
    module_name, _, qualname = name.partition(":")
    found: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found if isinstance(found, type) and issubclass(found, Warning) else UserWarning


#: what every client shows of its cluster's tasks (dask's ``_default_event_handlers``)
DEFAULT_TOPICS = {"print": show_print, "warn": show_warning}
