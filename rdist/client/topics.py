"""Structured events on topics, as dask's ``log_event`` / ``get_events`` /
``subscribe_topic``: each topic is a capped Redis stream of ``[time, msg]`` records
(:class:`~rdist.protocol.wire.TopicEvent`), written by clients and by tasks
(``get_worker().log_event``), read by anyone; a subscription is one thread per client,
blocked on all its topics' streams at once (no polling).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rdist.protocol import wire
from rdist.store import RedisStore
from rdist.store.connection import ConnectionErrors
from rdist.store.keys import PAYLOAD_FIELD

log = logging.getLogger("rdist.client")

__all__ = ["Topics", "log_event"]

#: how long the subscription thread blocks on a read before it looks at its stop flag
BLOCK_MS = 500
#: events read per topic in one call of get_events
READ_COUNT = 100_000

Handler = Callable[[tuple[float, Any]], Any]


def log_event(store: RedisStore, topic: str | list[str], msg: Any) -> None:
    """Log ``msg`` (any msgpack value) on ``topic`` (or each of a list of topics)."""
    topics = [topic] if isinstance(topic, str) else list(topic)
    if not topics or not all(isinstance(t, str) and t for t in topics):
        raise TypeError(f"log_event(topic={topic!r}): a topic is a non-empty str (or a list)")
    event = wire.TopicEvent(time.time(), msg)
    try:
        event.encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"log_event(msg=...): events are msgpack data (dicts, lists, str, numbers): {exc}"
        ) from None
    pipe = store.pipeline()
    for name in topics:
        store.streams.topic_event(name, event, pipe)
    pipe.execute()


class Topics:
    """A client's view of the topics: logging, reading, subscriptions."""

    def __init__(self, store: RedisStore, stop: threading.Event) -> None:
        self._store = store
        self._stop = stop
        self._handlers: dict[str, Handler] = {}
        self._starts: dict[str, Any] = {}  #: where each subscription's reading starts
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def log_event(self, topic: str | list[str], msg: Any) -> None:
        log_event(self._store, topic, msg)

    def get_events(self, topic: str | None = None) -> Any:
        """``topic``'s events as a tuple of ``(time, msg)``, oldest first; ``None``: every
        topic's, as a dict by topic."""
        if topic is None:
            return {name: self.get_events(name) for name in self._store.streams.topic_names()}
        entries = self._store.streams.before(self._store.keys.topic(topic), "+", READ_COUNT)
        return tuple(_decoded(topic, payload) for _, payload in reversed(entries))

    def subscribe(self, topic: str, handler: Handler) -> None:
        """``handler((time, msg))`` for every event logged on ``topic`` from now on."""
        if not callable(handler):
            raise TypeError(f"subscribe_topic(handler={handler!r}): must be callable")
        # from the stream's newest entry now, not from wherever it is when the thread
        # first reads: an event logged just after this call is not missed
        newest = self._store.streams.newest(self._store.keys.topic(topic), 1)
        with self._lock:
            self._handlers[topic] = handler
            self._starts[topic] = newest[0][0] if newest else b"0-0"
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._listen, name="rdist-client-topics", daemon=True
                )
                self._thread.start()

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            if self._handlers.pop(topic, None) is None:
                raise ValueError(f"unsubscribe_topic({topic!r}): not subscribed")

    def _listen(self) -> None:
        reader = self._store.clone()
        last: dict[str, Any] = {}
        try:
            while not self._stop.is_set():
                with self._lock:
                    handlers = dict(self._handlers)
                    for topic in handlers:
                        if topic in self._starts:
                            last[topic] = self._starts.pop(topic)
                streams = {self._store.keys.topic(t): last[t] for t in handlers}
                if not streams:
                    self._stop.wait(BLOCK_MS / 1000)
                    continue
                try:
                    got = reader.streams.follow(streams, 1000, BLOCK_MS)
                except ConnectionErrors as exc:
                    if self._stop.is_set():  # (the client closed; Redis may be gone too)
                        break
                    log.warning("topic subscription: redis unavailable (%s)", exc)
                    self._stop.wait(1.0)
                    continue
                if self._stop.is_set():  # closed while blocked: the events are not ours now
                    break
                for stream, entries in got:
                    name = _topic_of(stream, self._store.keys.topic(""))
                    for entry_id, payload in entries:
                        last[name] = entry_id
                        self._call(handlers.get(name), name, payload)
        finally:
            reader.close()

    def _call(self, handler: Handler | None, topic: str, payload: dict[bytes, bytes]) -> None:
        if handler is None:
            return
        try:
            handler(_decoded(topic, payload))
        except Exception:  # a user's handler must not end the subscription
            log.exception("handler of topic %r failed", topic)


def _topic_of(stream: Any, prefix: str) -> str:
    name = stream.decode() if isinstance(stream, bytes) else str(stream)
    return name[len(prefix) :]


def _decoded(topic: str, payload: dict[bytes, bytes]) -> tuple[float, Any]:
    try:
        event = wire.TopicEvent.decode(payload.get(PAYLOAD_FIELD), f"topic:{topic}")
    except wire.MalformedMessage as exc:
        return (0.0, {"malformed": str(exc)})
    return (event.time, event.msg)
