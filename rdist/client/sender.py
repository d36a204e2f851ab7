"""The client's outbox: everything it tells the scheduler, batched into few round trips.

A message is posted as a wire record (``wire.UpdateGraph``, ``wire.ReleaseKeys``, ...).
Whoever sends drains the whole outbox into one pipeline: the pickled functions first (one
HSET of the ``funcs`` hash), then the messages in order, consecutive graph updates and
consecutive releases merged into one message each (a release of very many keys split again
into messages of RELEASE_KEYS_PER_MESSAGE), and several messages bundled into one stream
entry so the scheduler reads them in one batch.

Who sends: a submission (``direct``) sends on the calling thread when nobody else is
sending and it is no burst -- one thread hop less on the submit path of ``submit(...)
.result()``; otherwise the sender thread (:meth:`Sender.run`) takes it. A burst is a
submission that follows the last send within :data:`BURST_GAP` with no wait for a result
between (``[client.submit(f, x) for x in ...]``, a chain built link by link): sent one by
one, each would be a stream entry of its own for the scheduler; the sender thread sends
what piled up meanwhile in one. A release (``lazy``) wakes nobody while a thread waits on a
result: the next submission or the idle listener takes it along within milliseconds.

A send does not wait for Redis's replies: they are read with the next send, so a submission
costs the submitting thread one write and no wake-up for a reply (on two busy cores that
wake-up competes with the scheduler for the CPU just as it starts on the new task: ~0.15 ms
of a 1 ms round trip). Should the connection break meanwhile, that next send writes the
unconfirmed commands again first (at least once, as every retry here). With no next send
the idle listener confirms a send older than :data:`CONFIRM_AFTER`, and :meth:`flush` -- what
``close`` and every call that must see its messages arrive use -- confirms at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from rdist.protocol import wire
from rdist.store import RedisStore
from rdist.store.connection import ConnectionErrors, ResponseError
from rdist.store.health import Backoff, RedisConfigError

if TYPE_CHECKING:
    from rdist.client.recovery import Journal

log = logging.getLogger("rdist.client")

RELEASE_DELAY = 0.005  #: seconds a lone release waits for a submission to travel with
#: The idle listener reads the replies of a send this old that no later send has read.
CONFIRM_AFTER = 0.05
#: A submission this soon after the last send, with no wait for a result between, is part
#: of a burst: it goes to the sender thread (see the module doc).
BURST_GAP = 0.002
#: Messages sent together go in one stream entry up to this size; a big graph is better
#: read (and written out by the scheduler) in slices of its own.
BUNDLE_BYTES = 1 << 20
#: A send that finds Redis unreachable is tried again this often, backing off.
SEND_ATTEMPTS = 60
#: The bound on any stream entry a client sends. A call's tasks are packed into messages
#: of about ``rdist.client.submit.MESSAGE_BYTES``, large arguments are scattered and a
#: task's spec is at most ``rdist.client.large.MAX_SPEC_BYTES``, so a call never comes
#: near it; merging here stays under it; an entry that would pass it is refused.
MAX_ENTRY_BYTES = 32 << 20
#: Consecutive graph updates are merged into one message while it stays under this.
MERGE_BYTES = 4 << 20
#: Keys per ``release-keys`` message: a dropped list of a million futures goes out as
#: messages of this many keys (~1 MB each), as a big graph goes in slices -- the scheduler
#: then reads and writes out its consequences a slice at a time, and no entry nears
#: MAX_ENTRY_BYTES (one of 700k keys would pass it and be refused).
RELEASE_KEYS_PER_MESSAGE = 20_000

#: A posted message and the functions (hash -> pickled) it needs stored before it.
Outgoing = tuple[wire.Message, Mapping[bytes, bytes] | None]


def update_bytes(msg: wire.UpdateGraph) -> int:
    """About the encoded size of a graph update: its specs, plus a little per task."""
    return sum(map(len, msg.specs.values())) + 64 * len(msg.tasks) + 16 * len(msg.wanted)


def _absorb(into: wire.Message, msg: wire.Message, sizes: dict[int, int]) -> bool:
    """Merge ``msg`` into the message before it, if both are of a mergeable kind (graph
    updates only while the merged one stays under MERGE_BYTES; ``sizes`` by id)."""
    if type(into) is not type(msg):
        return False
    if isinstance(into, wire.UpdateGraph) and isinstance(msg, wire.UpdateGraph):
        size = sizes.get(id(into))
        if size is None:
            size = sizes[id(into)] = update_bytes(into)
        added = update_bytes(msg)
        if size + added > MERGE_BYTES:
            return False
        sizes[id(into)] = size + added
        into.tasks.extend(msg.tasks)
        into.wanted.extend(msg.wanted)
        into.fire_and_forget.extend(msg.fire_and_forget)
        into.specs.update(msg.specs)
        into.funcs.update(msg.funcs)
        return True
    if isinstance(into, wire.ReleaseKeys) and isinstance(msg, wire.ReleaseKeys):
        into.keys.extend(msg.keys)
        return True
    return False


def encode_outbox(items: list[Outgoing]) -> tuple[dict[bytes, bytes], list[bytes]]:
    """The functions to store and the stream entries to add for a drained outbox (pure).

    Consecutive graph updates (and consecutive releases) become one message; several
    messages small enough together become one bundle entry."""
    funcs: dict[bytes, bytes] = {}
    encoded: list[bytes] = []
    merged: wire.Message | None = None
    sizes: dict[int, int] = {}
    for msg, needs in items:
        if needs:
            funcs.update(needs)
        if merged is not None and _absorb(merged, msg, sizes):
            continue
        if merged is not None:
            encoded += _encoded(merged)
        merged = msg
    if merged is not None:
        encoded += _encoded(merged)
    if len(encoded) > 1 and sum(map(len, encoded)) <= BUNDLE_BYTES:
        encoded = [wire.bundle(encoded)]  # one entry: the scheduler sees them in one batch
    return funcs, encoded


def _encoded(msg: wire.Message) -> list[bytes]:
    """``msg`` encoded: one entry, or a big release in entries of bounded size."""
    if type(msg) is not wire.ReleaseKeys or len(msg.keys) <= RELEASE_KEYS_PER_MESSAGE:
        return [msg.encode()]
    keys, step = msg.keys, RELEASE_KEYS_PER_MESSAGE
    return [
        wire.ReleaseKeys(msg.client, keys[start : start + step]).encode()
        for start in range(0, len(keys), step)
    ]


def within_bound(entries: list[bytes], client_id: str) -> list[bytes]:
    """The entries under MAX_ENTRY_BYTES; one past it is logged with its size, not sent
    (the client's checks make sure none is: this is the last line, not the rule)."""
    kept = [e for e in entries if len(e) <= MAX_ENTRY_BYTES]
    if len(kept) < len(entries):
        for entry in entries:
            if len(entry) > MAX_ENTRY_BYTES:
                log.error(
                    "client %s: not sending a stream entry of %d bytes (the bound is %d)",
                    client_id,
                    len(entry),
                    MAX_ENTRY_BYTES,
                )
    return kept


class Sender:
    """The outbox of one client and the thread that empties it."""

    def __init__(self, store: RedisStore, client_id: str, stop: threading.Event) -> None:
        self._store = store
        self._client_id = client_id
        self._stop = stop
        self._outbox: deque[Outgoing] = deque()
        self._ready = threading.Condition(threading.RLock())
        self._sending = threading.Lock()  #: held while a batch is drained and sent (keeps order)
        self._backoff: Backoff | None = None  #: retries of sends (made by the first)
        #: monotonic time of the last send whose replies nobody has read yet (0: none)
        self._unconfirmed_since = 0.0
        #: the release last in the outbox that the sender thread was woken for
        self._woken_for: wire.Message | None = None
        #: whether a thread waiting on a result reads the client's stream now: lazy posts
        #: then wait for whoever goes next (set by the client once its inbox exists)
        self.waiter_reads: Callable[[], bool] = lambda: False
        #: whether a thread waits on a result now or stopped waiting after the (monotonic)
        #: time given (set by the client once its inbox exists)
        self.waited_since: Callable[[float], bool] = lambda since: True
        self._last_sent = 0.0  #: monotonic time the last send went out
        #: what was submitted, and the keys held (``rdist.client.recovery``; set by the client)
        self.journal: Journal | None = None
        self.held: Callable[[], list[str]] = list

    def post(
        self,
        msg: wire.Message,
        funcs: Mapping[bytes, bytes] | None = None,
        direct: bool = False,
        lazy: bool = False,
    ) -> None:
        """Queue ``msg`` (with the functions it needs stored first); see the module doc for
        ``direct`` and ``lazy``."""
        if self.journal is not None and type(msg) is wire.UpdateGraph:
            self.journal.record(msg, funcs, self.held)  # to send again should Redis lose it
        with self._ready:
            self._outbox.append((msg, funcs))
            if not (direct and not self._in_burst() and self._sending.acquire(blocking=False)):
                if not (lazy and self.waiter_reads()):
                    self._ready.notify()
                return
            items = list(self._outbox)
            self._outbox.clear()
        try:
            self._send(items)
        finally:
            self._sending.release()

    def _in_burst(self) -> bool:
        last = self._last_sent
        return time.monotonic() < last + BURST_GAP and not self.waited_since(last)

    def release(self, key: str) -> None:
        """Queue the release of ``key`` (as a ``lazy`` post): it joins a release waiting
        last in the outbox, so a dropped list of a million futures makes a few messages,
        not a million."""
        with self._ready:
            outbox = self._outbox
            tail = outbox[-1][0] if outbox else None
            if type(tail) is wire.ReleaseKeys:
                tail.keys.append(key)
                if tail is self._woken_for:
                    return  # the sender thread knows of this release already
            else:
                tail = wire.ReleaseKeys(self._client_id, [key])
                outbox.append((tail, None))
            if not self.waiter_reads():
                self._woken_for = tail
                self._ready.notify()

    def flush(self, confirm: bool = True) -> None:
        """Send everything queued, waiting for a send in progress to finish first; with
        ``confirm``, return once Redis has taken every message sent so far."""
        with self._sending:
            items = self._drain()
            if items:
                self._send(items)
            if confirm and self._unconfirmed_since:
                self._confirm()

    def flush_if_free(self) -> None:
        """Send what waits in the outbox unless another thread is sending (the idle
        listener's call: it also confirms a send no later one confirmed)."""
        due = self._unconfirmed_since and time.monotonic() > self._unconfirmed_since + CONFIRM_AFTER
        if (self._outbox or due) and self._sending.acquire(blocking=False):
            try:
                items = self._drain()
                if items:
                    self._send(items)
                elif self._unconfirmed_since:
                    self._confirm()
            finally:
                self._sending.release()

    def wake(self) -> None:
        """Make the sender thread look again (closing: it returns once the outbox is empty)."""
        with self._ready:
            self._ready.notify_all()

    def run(self) -> None:
        """The sender thread: sleeps until something is posted, until the client stops."""
        while True:
            with self._ready:
                while not self._outbox and not self._stop.is_set():
                    self._ready.wait()
                if not self._outbox:
                    return
                if self._only_releases() and not self._stop.is_set():
                    # releases are never urgent: let the next submission carry them rather
                    # than contend with it for the connection
                    self._ready.wait(RELEASE_DELAY)
            self.flush(confirm=False)

    def _only_releases(self) -> bool:
        return all(isinstance(msg, wire.ReleaseKeys) for msg, _ in self._outbox)

    def _drain(self) -> list[Outgoing]:
        with self._ready:
            items = list(self._outbox)
            self._outbox.clear()
        return items

    def _send(self, items: list[Outgoing]) -> None:
        """One pipeline: the functions first, then the messages in order."""
        funcs, entries = encode_outbox(items)
        entries = within_bound(entries, self._client_id)
        joining = any(isinstance(msg, wire.ClientJoin) for msg, _ in items)
        store = self._store
        for _ in range(SEND_ATTEMPTS):
            try:
                pipe = store.raw_pipeline()
                store.specs.put_functions(funcs, pipe=pipe)
                if joining:  # our stream exists from before the scheduler hears of us
                    store.streams.to_client(self._client_id, wire.Notify([]), pipe, create=True)
                for entry in entries:
                    store.streams.to_scheduler(entry, pipe=pipe)
                try:
                    pipe.send()  # (its replies are read by the next send or confirmation)
                finally:
                    self._unconfirmed_since = self._last_sent = time.monotonic()
                self._retries().succeeded()
                return
            except ResponseError as exc:  # about the send before: this one went out
                self._refused(exc)
                return
            except ConnectionErrors as exc:
                if not self._wait_to_retry(exc, len(items)):
                    return
        log.error(
            "client %s: gave up sending %d messages: redis stayed unreachable",
            self._client_id,
            len(items),
        )

    def _confirm(self) -> None:
        """Read the replies of what was sent (sent again first if its connection broke)."""
        for _ in range(SEND_ATTEMPTS):
            try:
                self._store.confirm_sent()
                self._unconfirmed_since = 0.0
                return
            except ResponseError as exc:
                self._unconfirmed_since = 0.0
                self._refused(exc)
                return
            except ConnectionErrors as exc:
                if not self._wait_to_retry(exc, 0):
                    return
        log.error(
            "client %s: gave up confirming its messages: redis stayed unreachable", self._client_id
        )

    def _wait_to_retry(self, exc: Exception, count: int) -> bool:
        """Back off before trying again; False when no retry can help (logged)."""
        try:
            self._retries().wait(exc, self._stop)
            return True
        except RedisConfigError as error:  # no retry helps: say so, once
            log.error("client %s: %s; %d messages dropped", self._client_id, error, count)
            return False

    def _retries(self) -> Backoff:
        """The backoff of this client's sends (one for its life: sends run one at a time)."""
        if self._backoff is None:
            self._backoff = Backoff(f"client {self._client_id}", self._store.url, log)
        return self._backoff

    def _refused(self, exc: Exception) -> None:
        """Redis answered what this client sent with an error (out of memory, a replica
        that took writes away): those messages are lost; the futures they carried wait."""
        log.error("client %s: redis refused messages it was sent: %s", self._client_id, exc)
