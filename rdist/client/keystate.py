"""What one client knows about one key: its :class:`FutureState`, shared by every
:class:`~rdist.client.future.Future` of the key, and the statuses it goes through.

A million of them live at once in the client of a big ``map``: the state is slotted and
keeps the least it can (no Event until somebody waits on this one key, no callback list
until a second callback, whether it is done read from its status).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rdist.exceptions import KilledWorker
from rdist.protocol import tracebacks, wire

__all__ = [
    "CANCELLED",
    "ERROR",
    "FINISHED",
    "LOST",
    "PENDING",
    "FutureState",
    "Outcome",
]

PENDING, FINISHED, ERROR, CANCELLED, LOST = "pending", "finished", "error", "cancelled", "lost"
#: What the client was told of a settled key: where its value is, or how it failed
#: (None for a cancelled or lost key, whose status says it all).
Outcome = wire.KeyInMemory | wire.KeyErred | None

_EVENT_LOCK = threading.Lock()
#: what settling a state without callbacks returns (never changed)
_NO_CALLBACKS: list[Callable[[], None]] = []


class FutureState:
    """What one client knows about one key; shared by every Future of that key."""

    __slots__ = (
        "key",
        "status",
        "outcome",
        "_event",
        "callbacks",
        "_exception",
        "unconfirmed",
        "refs",
    )

    def __init__(self, key: str) -> None:
        self.key = key  #: the wire name
        self.status = PENDING
        self.outcome: Outcome = None
        #: made only when somebody waits: most futures of a big map are never waited on
        #: one by one, and an Event costs more than the rest of a future together
        self._event: threading.Event | None = None
        #: done-callbacks: None, the one added, or a list of several (a gather of a
        #: million futures adds one each: a list each would be 64 MB more)
        self.callbacks: Callable[[], None] | list[Callable[[], None]] | None = None
        self._exception: tuple[BaseException, str, list[tracebacks.Frame]] | None = None
        #: made by ``Future(key, client)`` for a key this client never submitted: whether
        #: any task has it is asked once, before the first wait (see Ledger.confirm)
        self.unconfirmed = False
        self.refs = 0  #: the Futures of this key the client holds (counted by its Ledger)

    @property
    def event(self) -> threading.Event:
        event = self._event
        if event is None:
            with _EVENT_LOCK:
                event = self._event
                if event is None:
                    event = self._event = threading.Event()
            if self.status != PENDING:  # settled before the event existed
                event.set()
        return event

    def done(self) -> bool:
        return self.status != PENDING

    def settle(self, status: str, outcome: Outcome) -> list[Callable[[], None]]:
        """Record the outcome; returns the callbacks to fire (each fires once)."""
        self.outcome = outcome  # before the status: a state seen done has its outcome
        self._exception = None
        self.status = status
        if self._event is not None:
            self._event.set()
        callbacks, self.callbacks = self.callbacks, None
        if callbacks is None:
            return _NO_CALLBACKS
        return callbacks if type(callbacks) is list else [callbacks]  # type: ignore[list-item]

    def add_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when settled (the caller holds the ledger's lock)."""
        callbacks = self.callbacks
        if callbacks is None:
            self.callbacks = fn
        elif type(callbacks) is list:
            callbacks.append(fn)
        else:
            self.callbacks = [callbacks, fn]  # type: ignore[list-item]

    def reset(self) -> None:
        self.status = PENDING
        self.outcome = None
        self._exception = None
        if self._event is not None:
            self._event.clear()

    def where(self) -> wire.KeyInMemory | None:
        """Where the value is, when the key is finished."""
        outcome = self.outcome
        return outcome if isinstance(outcome, wire.KeyInMemory) else None

    def exception_and_traceback(self) -> tuple[BaseException, str]:
        """The task's exception and its remote traceback as text."""
        exc, text, _ = self.failure()
        return exc, text

    def failure(self) -> tuple[BaseException, str, list[tracebacks.Frame]]:
        """The exception, the remote traceback's text and its frames (built once)."""
        if self._exception is None:
            outcome = self.outcome
            erred = outcome if isinstance(outcome, wire.KeyErred) else None
            self._exception = _rebuild_exception(self.key, erred)
        return self._exception


def _rebuild_exception(
    key: str, erred: wire.KeyErred | None
) -> tuple[BaseException, str, list[tracebacks.Frame]]:
    from rdist.protocol import serialize

    if erred is not None and erred.error is not None:
        try:
            loaded = serialize.from_blob(erred.error)
        except Exception as err:  # the exception class may not exist here
            text = f"task {key!r} failed; its exception cannot be loaded: {err}"
            return RuntimeError(text), "", []
        failure = tracebacks.split_error(loaded)
        if failure is not None:
            return failure
        return RuntimeError(f"task {key!r} failed with an unreadable error"), "", []
    text = (erred.error_text if erred is not None else None) or f"task {key!r} failed"
    if erred is not None and erred.kind == wire.KILLED_WORKER:
        killed = KilledWorker(erred.blame or key)
        killed.args = (text,)
        return killed, "", []
    return RuntimeError(text), "", []
