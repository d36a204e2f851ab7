"""A bounded log buffer per process, readable through Redis (dask's ``DequeHandler``).

Every role (scheduler, worker, nanny) keeps the last ``logging.length`` records of the
``rdist`` loggers in memory (:class:`LogBuffer`, a :class:`logging.Handler`) and one
thread (:class:`ProcessLog`) publishes the new ones to the process's ``logs:<role>:<id>``
list: all lines of a moment in one pipeline, the list trimmed to the same length, so a
flood of lines costs the logging thread two deque appends each and Redis a bounded list.
The same thread carries the topic events tasks emit through ``rdist.print``/``rdist.warn``
and forwarded logging (:mod:`rdist.client.logs`), batched the same way.

``client.get_worker_logs`` / ``get_scheduler_logs`` read the lists; ``dump_cluster_state``
also takes a worker's in-memory lines.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from rdist.config import DEFAULTS
from rdist.protocol.wire import LogLine, TopicEvent

if TYPE_CHECKING:
    from rdist.store import RedisStore

__all__ = ["DEFAULT_LENGTH", "LogBuffer", "ProcessLog", "log_length", "rdist_version"]

#: Records kept per process, in memory and in Redis (dask keeps 10,000 in memory only;
#: in Redis, a hundred workers of 10,000 lines would hold ~150 MB). ``logging.length``.
DEFAULT_LENGTH: int = DEFAULTS["logging"]["length"]
#: The line format, as dask's ``distributed.admin.log-format``.
LINE_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
#: How long the publisher gathers lines after the first new one before it sends them:
#: one round trip per moment of logging, never one per line.
FLUSH_SECONDS = 0.25
#: An idle process renews its list's expiry this often (see rdist.store.logs).
RENEW_SECONDS = 600.0
#: Topic events (prints, warnings, forwarded records) held while Redis does not answer.
MAX_PENDING_EVENTS = 10_000


def rdist_version() -> str:
    """``rdist.__version__`` for a role's start-up line: the package is loaded whenever
    one of its modules is, and importing it by name here would tie every layer to it."""
    return str(getattr(sys.modules.get("rdist"), "__version__", "unknown"))


def log_length() -> int:
    """``logging.length`` of the configuration (``RDIST_LOGGING__LENGTH``), at least 1."""
    from rdist.config import ConfigError, load_config

    try:
        return max(1, int(load_config().get("logging.length", DEFAULT_LENGTH)))
    except (ConfigError, TypeError, ValueError):
        return DEFAULT_LENGTH


class LogBuffer(logging.Handler):
    """The last ``length`` records, and those not yet published (both bounded)."""

    def __init__(self, length: int = DEFAULT_LENGTH, on_new: Any = None) -> None:
        super().__init__()
        self.length = max(1, length)
        self.records: deque[logging.LogRecord] = deque(maxlen=self.length)
        self._unsent: deque[logging.LogRecord] = deque(maxlen=self.length)
        self._on_new = on_new  #: called (cheaply) when a record arrives
        self.setFormatter(logging.Formatter(LINE_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        # (under the handler's lock, taken by Handler.handle): formatting waits for the
        # publisher's thread, so a task logging in a loop pays two appends per line
        self.records.append(record)
        self._unsent.append(record)
        if self._on_new is not None:
            self._on_new()

    def lines(self, n: int | None = None) -> list[tuple[str, str]]:
        """``(level, line)`` of the last ``n`` records (all with None), oldest first."""
        with self._locked():
            records = list(self.records)
        if n is not None:
            records = records[-n:] if n > 0 else []
        return [(r.levelname, self._format(r)) for r in records]

    def take_unsent(self, everything: bool = False) -> list[logging.LogRecord]:
        """The records not published yet (``everything``: the whole buffer), now sent."""
        with self._locked():
            taken = list(self.records if everything else self._unsent)
            self._unsent.clear()
        return taken

    def encoded(self, records: list[logging.LogRecord]) -> list[bytes]:
        return [
            LogLine(r.created, r.levelname, r.name or "root", self._format(r)).encode()
            for r in records
        ]

    def _format(self, record: logging.LogRecord) -> str:
        try:
            return self.format(record)
        except Exception:  # a record whose arguments do not fit its message
            return f"{record.levelname} {record.name}: {record.msg!r} % {record.args!r}"

    def _locked(self) -> Any:
        assert self.lock is not None  # (made by Handler.__init__)
        return self.lock


class ProcessLog:
    """One process's log buffer on the ``rdist`` loggers, published by one thread.

    ``ident`` may come later (a nanny learns its worker's address when the worker has
    started): lines wait in the buffer until then, and a new ident gets the whole buffer.
    """

    def __init__(
        self,
        store: RedisStore,
        role: str,
        ident: str | None = None,
        length: int | None = None,
        logger: str = "rdist",
    ) -> None:
        self._store = store
        self.role = role
        self._ident = ident
        #: the next flush sends the whole buffer, in place of the list (a new ident, or
        #: lines that did not get through)
        self._resend = True
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.buffer = LogBuffer(length or log_length(), on_new=self._poke)
        self._events: deque[tuple[str, bytes]] = deque(maxlen=MAX_PENDING_EVENTS)
        self._logger = logging.getLogger(logger)
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()
        self._failed = False  #: the last flush did not get through

    @property
    def ident(self) -> str | None:
        return self._ident

    def start(self) -> ProcessLog:
        """Catch the ``rdist`` loggers' records and start publishing them."""
        if self._thread is None:
            self._logger.addHandler(self.buffer)
            self._thread = threading.Thread(
                target=self._run, name=f"rdist-logs-{self.role}", daemon=True
            )
            self._thread.start()
        return self

    def set_ident(self, ident: str) -> None:
        if ident != self._ident:
            self._ident, self._resend = ident, True
            self._poke()

    def topic(self, topic: str, msg: Any, when: float) -> None:
        """A topic event (``rdist.print``, forwarded logging), sent with the next batch;
        ``msg`` must be msgpack data (TypeError otherwise, at once)."""
        encoded = TopicEvent(when, msg).encode()
        self._events.append((topic, encoded))
        self._poke()

    def close(self) -> None:
        """Send what is left (unless Redis just failed us: leaving must not wait on it),
        stop the thread and let go of the loggers."""
        self._logger.removeHandler(self.buffer)
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if not self._failed:
            self.flush()

    def _poke(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(RENEW_SECONDS):
                self.flush()  # (idle: renew the list's expiry)
                continue
            self._stop.wait(FLUSH_SECONDS)  # gather what comes with the first line
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Publish the pending lines and events in one pipeline. Redis failing raises
        nothing: the next flush that gets through sends the whole buffer again, and the
        events (within MAX_PENDING_EVENTS) go with it."""
        from rdist.store.connection import ConnectionErrors

        with self._flush_lock:
            ident = self._ident
            events = [self._events.popleft() for _ in range(len(self._events))]
            if ident is None and not events:
                return
            records: list[logging.LogRecord] = []
            everything = self._resend
            if ident is not None:
                records = self.buffer.take_unsent(everything=everything)
                self._resend = False
            try:
                pipe = self._store.pipeline()
                if ident is not None:
                    lines = self.buffer.encoded(records)
                    length = self.buffer.length
                    self._store.logs.append(self.role, ident, lines, length, pipe, everything)
                for topic, encoded in events:
                    self._store.streams.topic_event(topic, encoded, pipe)
                pipe.execute()
                self._failed = False
            except Exception as exc:  # Redis away -- or a bug, which must not end the thread
                # (not logged: the line would only wait in this buffer for Redis too)
                self._failed = True
                self._resend = ident is not None
                if isinstance(exc, ConnectionErrors):
                    self._events.extendleft(reversed(events))
