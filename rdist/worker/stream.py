"""Reading the worker's stream: batches of entries, decoded through ``wire.WORKER``.

One thread reads at a time (:attr:`StreamReader.owner`). Each read first sends, on the
same round trip, the acknowledgements of the entries handled since the previous read and
the report of the quick tasks run meanwhile. Entries go through the stream's
:class:`~rdist.store.guard.EntryGuard`: one that does not decode, or whose handler raises,
goes to the dead-letter stream with its reason, and one that was delivered twice without
being acknowledged (its handling took the process down) is set aside unhandled; no input
stops the loop. The loop itself runs supervised (:mod:`rdist.supervise`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from rdist.protocol.wire import (
    WORKER,
    Action,
    ActorCall,
    Batch,
    Compute,
    Free,
    Message,
    PluginAdded,
    PluginRemoved,
    RestartWorker,
    Retire,
    Run,
    StackRequest,
    Stop,
    StoryRequest,
)
from rdist.store import RedisStore
from rdist.store.connection import BatchedDeletes, ConnectionErrors, EmptyReadGuard, ResponseError
from rdist.store.guard import EntryGuard
from rdist.store.health import Backoff
from rdist.store.keys import WORKER_GROUP
from rdist.supervise import start_thread
from rdist.worker import reannounce, stacks
from rdist.worker.context import bind_worker
from rdist.worker.events import (
    ComputeTasks,
    DataArrived,
    Event,
    Execute,
    FreeKeys,
    SendReport,
    StealRequest,
)
from rdist.worker.specs import SpecLoader

if TYPE_CHECKING:
    from rdist.worker.server import Worker

log = logging.getLogger("rdist.worker")

BATCH_ENTRIES = 100
BLOCK_MS = 500
#: How often the loop also reads its own pending (delivered, unacknowledged) entries: a
#: read whose reply was lost (Redis restarting as it answered; the client may retry it
#: without telling us) delivered entries that never come from ">" again.
PENDING_CHECK_SECONDS = 2.0

Entry = tuple[bytes, "bytes | None"]
Handled = tuple[list[Execute], list[SendReport]]


@dataclass(slots=True)
class _Loop:
    """What one reading thread carries from one read to the next."""

    reader: RedisStore  #: its own connection (blocking reads need one)
    pending_due: float  #: when to read our own pending entries again
    read_pending: bool = True  #: first what an earlier process left unacknowledged
    #: our pending entries are re-read one at a time, each after the one before
    pending_after: bytes = b"0"
    ack: list[bytes] = field(default_factory=list)  #: handled, acknowledged with the next read
    #: reports of the tasks run on this thread, sent with the next read
    reports: list[SendReport] = field(default_factory=list)
    deletes: BatchedDeletes = field(default_factory=BatchedDeletes)


def _stimulus_of(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


class StreamReader:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.owner: int | None = None  #: the thread reading now
        #: entries handled but not acknowledged yet (by a reader that handed over, too):
        #: in our pending list, yet not lost
        self.in_hand: set[bytes] = set()
        self.loader = SpecLoader(worker)
        self._backoff: Backoff | None = None  #: retries of Redis (made at the first failure)
        self.guard = EntryGuard(worker.store, worker.stream, f"worker {worker.address}", log)

    def backoff(self) -> Backoff:
        if self._backoff is None:
            worker = self.worker
            self._backoff = Backoff(f"worker {worker.address}", worker.store.url, log)
        return self._backoff

    def start(self, reader: RedisStore) -> None:
        """A reading thread on ``reader`` (its own connection), supervised: should the loop
        fail, it starts again with what it holds (entries to acknowledge, reports)."""
        worker = self.worker
        loop = _Loop(reader, time.monotonic() + PENDING_CHECK_SECONDS)
        thread = start_thread(
            "rdist-stream", lambda: self.run(loop), worker.stop_event, worker.on_thread_death
        )
        worker.threads.append(thread)

    def hand_over_if_mine(self) -> None:
        """A task run on the stream thread seceded: another thread reads from now on."""
        if self.owner == threading.get_ident():
            self.owner = None
            self.start(self.worker.reader_store.clone())

    # -- the loop ------------------------------------------------------------------------------
    def run(self, loop: _Loop) -> None:
        """Read, handle, run what may run here; until the worker stops or another thread
        takes over (a task run here seceded)."""
        worker = self.worker
        me = self.owner = threading.get_ident()
        bind_worker(worker)  # quick tasks run on this thread too
        guard = EmptyReadGuard(worker.stop_event)
        while not worker.stop_event.is_set():
            if self.owner != me:
                self._leave(loop)
                return
            started = time.monotonic()
            pending = loop.read_pending
            entries = self._read(loop, started)
            if entries is None or worker.stop_event.is_set():
                continue  # not read (Redis away, or we rejoined), or woken by close()
            if not pending:  # (a pending read does not block: nothing to pace)
                guard.after_read(bool(entries), started, BLOCK_MS)
            if entries:
                self._handle_read(loop, entries)

    def _read(self, loop: _Loop, started: float) -> list[Entry] | None:
        """One round trip: the acknowledgements and reports of the previous read go out,
        the next entries come in (every so often our own pending ones, one at a time)."""
        worker = self.worker
        stream, streams = worker.stream, worker.store.streams
        if started >= loop.pending_due and not loop.read_pending:
            loop.read_pending, loop.pending_after = True, b"0"
        ids, done = loop.ack, loop.reports

        def before(pipe: Any) -> None:
            if done:
                worker.reporter.report(done, into=pipe)
            if ids:
                streams.acknowledge(stream, WORKER_GROUP, ids, pipe)
                loop.deletes.add(ids)
            streams.delete_entries(stream, loop.deletes.take_due(), pipe)

        deliveries = 1
        try:
            if loop.read_pending:
                entries, deliveries = loop.reader.read_own_pending(
                    stream, WORKER_GROUP, worker.address, loop.pending_after, before
                )
            else:
                entries = loop.reader.read_group(
                    stream, WORKER_GROUP, worker.address, BATCH_ENTRIES, BLOCK_MS, before
                )
        except ConnectionErrors as exc:
            if not worker.stop_event.is_set():
                self.backoff().wait(exc, worker.stop_event)  # a permanent error raises
            # the failed read may have been served: what it delivered is in our pending list
            loop.read_pending, loop.pending_after = True, b"0"
            return None
        except ResponseError as exc:
            if worker.stop_event.is_set():
                return None
            if "NOGROUP" not in str(exc) and "key to exist" not in str(exc):
                raise  # (fakeredis says the second for a stream that vanished)
            if reannounce.redis_lost(worker, loop.reader):
                # Redis lost data (our group with it): keep everything; the heartbeat
                # re-announces it once the scheduler starts the new epoch
                loop.reader.ensure_group(stream, WORKER_GROUP, start="0")
                return None
            worker.rejoin_cluster()  # the scheduler declared us dead
            return None
        if self._backoff is not None:
            self._backoff.succeeded()
        self.in_hand.difference_update(ids)  # acknowledged by this round trip
        loop.ack, loop.reports = [], []
        set_aside: list[bytes] = []
        if loop.read_pending:
            entries, set_aside = self._pending_entry(loop, entries, deliveries, started)
        else:
            self.guard.received(entries)
        loop.ack = [entry_id for entry_id, _ in entries] + set_aside
        self.in_hand.update(loop.ack)
        return entries

    def _pending_entry(
        self, loop: _Loop, entries: list[Entry], deliveries: int, started: float
    ) -> tuple[list[Entry], list[bytes]]:
        """What to handle of one entry re-read from our pending list, and what to just
        acknowledge: nothing when the pass is over or a reader that handed over holds it;
        the entry itself, unhandled, when it failed too often (it is set aside)."""
        if not entries:
            loop.read_pending = False
            loop.pending_due = started + PENDING_CHECK_SECONDS
            return [], []
        (entry_id, payload) = entries[0]
        loop.pending_after = entry_id
        if entry_id in self.in_hand:
            return [], []
        if self.guard.too_often(entry_id, payload, deliveries):
            return [], [entry_id]
        return entries, []

    def _handle_read(self, loop: _Loop, entries: list[Entry]) -> None:
        worker = self.worker
        try:
            executes, loop.reports = self.handle_entries(entries)
        except ConnectionErrors as exc:
            # a batch loads its specs and inputs before it changes anything: left pending,
            # it comes back with the next read of our pending entries
            self.in_hand.difference_update(loop.ack)
            self.guard.excuse(loop.ack)  # (its next delivery is no sign of a bad entry)
            loop.ack, loop.read_pending, loop.pending_after = [], True, b"0"
            self.backoff().wait(exc, worker.stop_event)
            return
        loop.reports += worker.executor.run_inline(executes)

    def _leave(self, loop: _Loop) -> None:
        """Another thread reads now: send what this one still holds, then close its
        connection."""
        worker = self.worker
        if loop.reports:
            worker.reporter.report(loop.reports)
        if loop.ack:
            streams = worker.store.streams
            pipe = loop.reader.pipeline()
            streams.acknowledge(worker.stream, WORKER_GROUP, loop.ack, pipe)
            streams.delete_entries(worker.stream, loop.ack, pipe)
            pipe.execute()
            self.in_hand.difference_update(loop.ack)
        loop.reader.close()

    # -- entries -------------------------------------------------------------------------------
    def handle_entries(self, entries: list[Entry]) -> Handled:
        """Decode and dispatch one read; the actions of all its batches are applied together
        (one spec load); returns the tasks to run and the report items."""
        guard = self.guard
        batches: list[tuple[str, list[Action]]] = []  #: (stimulus id, actions) per entry
        sources: list[Entry] = []  #: entries whose actions are applied below
        for entry_id, payload in entries:
            for msg in guard.decode(WORKER, entry_id, payload):
                if type(msg) is Batch:
                    batches.append((_stimulus_of(entry_id), msg.actions))
                    sources.append((entry_id, payload))
                else:
                    guard.call(entry_id, payload, f"handling {msg.OP}", partial(self._handle, msg))
        if not batches:
            return [], []
        try:
            return self._apply(batches)
        except ConnectionErrors:
            raise
        except Exception as exc:  # a bug: the loop lives on, the entries are set aside
            log.exception("worker %s: handling a batch failed", self.worker.address)
            reason = f"handler raised {type(exc).__name__}: {exc} (handling a batch)"
            for entry_id, payload in sources:
                guard.refuse(entry_id, payload, reason, exc)
            return [], []

    def _handle(self, msg: Message) -> None:
        worker = self.worker
        if isinstance(msg, Run):
            threading.Thread(target=worker.run_function, args=(msg,), daemon=True).start()
        elif isinstance(msg, Stop):
            threading.Thread(target=worker.close, daemon=True).start()
        elif isinstance(msg, Retire):
            threading.Thread(target=worker.retire, args=(msg.peers,), daemon=True).start()
        elif isinstance(msg, RestartWorker):
            worker.restart()
        elif isinstance(msg, StoryRequest):
            worker.tell_story(msg)
        elif isinstance(msg, StackRequest):
            stacks.answer(worker, msg)
        elif isinstance(msg, ActorCall):
            worker.actors.call_from_stream(msg, worker.store)
        elif isinstance(msg, PluginAdded):
            worker.plugins.added(msg)
        elif isinstance(msg, PluginRemoved):
            worker.plugins.removed(msg)
        else:
            worker.dataplane.handle_message(msg)

    def _apply(self, batches: list[tuple[str, list[Action]]]) -> Handled:
        """Load what new tasks need in one round trip, then hand the actions to the state
        machine as events, in order: one event per run of compute (or free) actions of an
        entry, not one per task."""
        computes = [a for _, actions in batches for a in actions if type(a) is Compute]
        freed = {k for _, actions in batches for a in actions if type(a) is Free for k in a.keys}
        specs, stored = self.loader.load(computes, freed)
        now = time.time()
        events: list[Event] = []
        if stored:
            events.append(DataArrived(batches[0][0], now, stored, replica=True))
        for sid, actions in batches:
            events += _events_of(sid, now, actions, specs)
        return self.worker.handle(*events)


def _events_of(sid: str, now: float, actions: list[Action], specs: dict[str, Any]) -> list[Event]:
    """The events of one entry's actions, in order; consecutive computes (and frees) make
    one event."""
    events: list[Event] = []
    run: list[Compute] = []
    freed: list[str] = []
    for action in actions:
        if isinstance(action, Compute):
            if freed:
                events.append(FreeKeys(sid, now, freed))
                freed = []
            run.append(action)
            continue
        if run:
            events.append(ComputeTasks(sid, now, run, specs))
            run = []
        if isinstance(action, Free):
            freed += action.keys
            continue
        if freed:
            events.append(FreeKeys(sid, now, freed))
            freed = []
        events.append(StealRequest(sid, now, action.key))
    if run:
        events.append(ComputeTasks(sid, now, run, specs))
    if freed:
        events.append(FreeKeys(sid, now, freed))
    return events
