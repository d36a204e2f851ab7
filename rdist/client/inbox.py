"""The client's stream: where the scheduler and the workers tell a client about its keys.

Two kinds of thread read it.  The listener thread reads it whenever nobody else does.  A
thread waiting on one result reads it itself for a short while: a quick result then
reaches the waiting thread without a hand-off from the listener, and on a machine with
idle cores waking a sleeping thread costs more than a quick task.  While such reads go on
(and shortly after), the listener keeps off the stream, so one entry wakes one thread.

Whoever reads, each entry is handled once and in stream order: a cursor (the newest entry
handled) decides, under one lock. What an entry means is the handler's business (the
client's listener decodes it through ``wire.CLIENT``); here entries are only read, handed
on and deleted, and the client's heartbeat rides along with the reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rdist.protocol import wire
from rdist.store import RedisStore
from rdist.store.connection import BatchedDeletes, ConnectionErrors, EmptyReadGuard
from rdist.store.health import Backoff, RedisConfigError

log = logging.getLogger("rdist.client")

BLOCK_MS = 500
#: A thread waiting on one future reads the stream itself this long (seconds), then leaves
#: it to the listener: only quick results gain from skipping the listener's hand-off.
READ_WHILE_WAITING = 0.05
#: The listener stays off the stream this long after the last read by a waiting thread:
#: in a loop of ``submit(...).result()`` the next wait is about to begin.
LISTENER_GRACE = 0.005
#: How often the listener checks that Redis still holds the client's stream (seconds).
WATCH_SECONDS = 2.0

Entry = tuple[bytes, bytes | None]


def entry_seq(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id ``b"<ms>-<n>"`` as a tuple that orders like the stream."""
    ms, _, n = entry_id.partition(b"-")
    return int(ms), int(n or 0)


class Inbox:
    """Reads one client's stream; ``handle(entry_id, payload)`` sees each entry once."""

    def __init__(
        self,
        store: RedisStore,
        client_id: str,
        handle: Callable[[bytes, bytes | None], None],
        heartbeat: Callable[[], wire.ClientRecord],
        stop: threading.Event,
        idle: Callable[[], None],
        beat_every: float,
        watch: Callable[[], object] | None = None,
        check_epoch: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._beat_every = beat_every  #: seconds between heartbeats (client.heartbeat_interval)
        self._client_id = client_id
        self._stream = store.keys.client_stream(client_id)
        self._handle = handle
        self._heartbeat = heartbeat  #: our record in the clients hash, as of now
        self._stop = stop
        self._idle = idle  #: called by the listener before each read or pause
        #: called by the listener every WATCH_SECONDS: checks that Redis kept our stream
        self._watch = watch
        self._next_watch = 0.0
        #: entries never deleted once handled (the stream's marker, see rdist.client.listener)
        self.kept: set[bytes] = set()
        #: reads the cluster epoch when due (``rdist.client.recovery``): Redis lost data?
        self._check_epoch = check_epoch
        self._listen_reader = store.clone()
        self._wait_reader: RedisStore | None = None
        self._handled: tuple[int, int] = (0, 0)  #: newest entry handled
        self._handle_lock = threading.RLock()  #: a done-callback may itself wait and read
        self._deletes = BatchedDeletes()  #: handled entries, deleted by a later read
        self._waiting = threading.Lock()  #: held by the thread reading while it waits
        self._last_wait = 0.0  #: monotonic time the last such read ended
        self._next_beat = 0.0

    # -- shared ------------------------------------------------------------------------
    def _read(self, reader: RedisStore, block_ms: int) -> list[Entry]:
        start = "%d-%d" % self._handled
        return reader.read(self._stream, start, 1000, block_ms, before=self._before_read)

    def _before_read(self, pipe: Any) -> None:
        """Deletions (when due) and a heartbeat (when due) ride with whichever read goes next."""
        with self._handle_lock:
            due = self._deletes.take_due()
        self._store.streams.delete_entries(self._stream, due, pipe=pipe)
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self._beat_every
            self._store.clients.beat(self._client_id, self._heartbeat(), pipe=pipe)

    def _handle_entries(self, entries: list[Entry]) -> None:
        with self._handle_lock:
            for entry_id, payload in entries:
                seq = entry_seq(entry_id)
                if seq <= self._handled:
                    continue  # the other reader handled it
                self._handled = seq  # first: a callback run by handle may read on
                if entry_id not in self.kept:
                    self._deletes.add((entry_id,))
                self._handle(entry_id, payload)

    # -- the listener thread -----------------------------------------------------------
    def waiter_reads(self) -> bool:
        """Whether a waiting thread reads the stream now, or did a moment ago."""
        return self._waiting.locked() or time.monotonic() < self._last_wait + LISTENER_GRACE

    def waited_since(self, since: float) -> bool:
        """Whether a thread waits on a result now, or stopped waiting after ``since``
        (monotonic): the sender's test of a burst of submissions."""
        return self._waiting.locked() or self._last_wait >= since

    def listen(self) -> None:
        guard = EmptyReadGuard(self._stop)
        backoff = Backoff(self._stream, self._store.url, log)
        while not self._stop.is_set():
            # what was posted without waking anybody (while a waiter read) goes now
            self._idle()
            try:
                self._check_epoch()
            except ConnectionErrors:
                pass  # the read below meets it too, and backs off
            if self.waiter_reads():
                self._stop.wait(LISTENER_GRACE)
                continue
            started = time.monotonic()
            try:
                if self._watch is not None and started >= self._next_watch:
                    self._next_watch = started + WATCH_SECONDS
                    self._watch()
                entries = self._read(self._listen_reader, BLOCK_MS)
            except ConnectionErrors as exc:
                if self._stop.is_set():
                    return
                try:
                    backoff.wait(exc, self._stop)
                except RedisConfigError as error:  # no retry helps (a revoked password)
                    log.error("%s: %s; the client stops reading", self._stream, error)
                    return
                continue
            backoff.succeeded()
            guard.after_read(bool(entries), started, BLOCK_MS)
            self._handle_entries(entries)

    # -- a thread waiting on a result ----------------------------------------------------
    def read_while_waiting(self, done: Callable[[], bool], budget: float) -> None:
        """Read on this thread until ``done()`` or ``budget`` seconds have passed."""
        if not self._waiting.acquire(blocking=False):
            return  # another thread reads: wait for the listener's hand-off instead
        try:
            if self._wait_reader is None:
                self._wait_reader = self._store.clone()
            deadline = time.monotonic() + budget
            while not done() and not self._stop.is_set():
                block_ms = int((deadline - time.monotonic()) * 1000)
                if block_ms < 1:
                    return
                self._handle_entries(self._read(self._wait_reader, block_ms))
        except ConnectionErrors:
            return  # the listener copes with it
        finally:
            self._last_wait = time.monotonic()
            self._waiting.release()

    def wake(self) -> None:
        """Make a blocked read return (closing)."""
        self._store.streams.to_client(self._client_id, wire.Notify([]), create=True)

    def close(self) -> None:
        self._listen_reader.close()
        with self._waiting:
            if self._wait_reader is not None:
                self._wait_reader.close()
