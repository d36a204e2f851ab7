"""The scheduler process: a thin shell around :class:`SchedulerState`.

One loop: read a batch from the ``sched`` stream, turn entries into events
(:mod:`~rdist.scheduler.inbound`), let the state machine decide, then send every
consequence of the batch -- task records, one message per worker, one per client, the
acknowledgement (:mod:`~rdist.scheduler.outbox`) -- in one pipeline, together with the
next blocking read. Entries go through the stream's :class:`~rdist.store.guard.EntryGuard`:
one that does not decode, or whose handling raises, is set aside on the dead-letter stream
with its reason, and one re-read from the pending list after it was delivered twice without
being acknowledged (it took a scheduler down each time) is set aside unhandled, so no
restart loops on it. Should leading fail all the same, the scheduler logs it, pauses and
leads again from what Redis holds.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rdist import versions
from rdist.config import Config, ConfigError, load_config, mask_url
from rdist.logbuffer import ProcessLog, rdist_version
from rdist.plugins.scheduler_side import SchedulerPlugins
from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler import hooks, membership
from rdist.scheduler.amm_runner import AmmRequested, AmmRunner, worker_memory
from rdist.scheduler.inbound import decode_entry
from rdist.scheduler.outbox import Outbox
from rdist.scheduler.restore import read_state
from rdist.scheduler.state import SchedulerState
from rdist.store import RedisStore, connect
from rdist.store.connection import BatchedDeletes, ConnectionErrors, EmptyReadGuard, Entry
from rdist.store.guard import DeadLetter, EntryGuard
from rdist.store.health import Backoff, RedisConfigError
from rdist.store.keys import SCHEDULER_GROUP
from rdist.store.lease import Lease
from rdist.supervise import MAX_PAUSE, STABLE_SECONDS, OnDeath, exit_process, start_thread

log = logging.getLogger("rdist.scheduler")

BATCH_ENTRIES = 500
#: After a batch of more than this many payload bytes (big graphs), read few entries at a
#: time: a batch's writes go out in one pipeline, and one of hundreds of MB would hold
#: Redis (and the GIL, parsing it) for seconds -- longer than the leader's lease lives.
LARGE_BATCH_BYTES = 4 << 20
FEW_ENTRIES = 4
BLOCK_MS = 500
#: The leader's lease (``scheduler.lease_ttl``, whose default this is): a standby takes
#: over this long after the leader last renewed it.
LEASE_TTL_MS = 2000
#: A shorter lease is refused: renewed every third of its life, it would lapse at any pause.
MIN_LEASE_TTL_MS = 100
#: How often the scheduler also reads its own pending (delivered, unacknowledged) entries.
#: Each batch is acknowledged in the round trip of the next read, so at a read the pending
#: list holds only entries whose delivery was lost with a reply: cheap to look, rare to find.
PENDING_CHECK_SECONDS = 2.0
#: Pause before leading again after leading failed (doubled while it keeps failing).
RETRY_LEADING_SECONDS = 0.5
VERSION = "1"  #: of the cluster's Redis layout, announced in ``meta``
_Write = Callable[[Any], None]  #: writes of one batch, queued on a pipeline


class SchedulerServer:
    """Reads the ``sched`` stream, runs the state machine, writes what it decided."""

    def __init__(
        self,
        store: RedisStore,
        name: str | None = None,
        worker_ttl: float | None = None,
        lease_ttl_ms: int | None = None,
        plugins: Iterable[tuple[str, Any]] = (),
        accept_client_plugins: bool = False,
        config: Config | None = None,
    ) -> None:
        """``config`` (else :func:`~rdist.config.load_config`) gives the settings that no
        argument does: ``scheduler.worker_ttl``, ``client_ttl``, ``lease_ttl``,
        ``allowed_failures``, ``work_stealing``."""
        config = config if config is not None else load_config()
        self.store = store
        #: scheduler plugins: from this process's configuration (and, with
        #: ``accept_client_plugins``, from clients); their hooks run in this shell
        self.plugins = SchedulerPlugins(plugins, accept_client_plugins)
        self._batch_entries = BATCH_ENTRIES  #: entries per read (fewer after a big batch)
        #: how the state machine is built (again at every restore)
        self._state_options: dict[str, Any] = {
            "allowed_failures": config.get("scheduler.allowed_failures"),
            "work_stealing": config.get("scheduler.work_stealing"),
        }
        self.state = SchedulerState(**self._state_options)
        #: one consumer name for every scheduler of the cluster: a successor then sees the
        #: entries its predecessor left unacknowledged as its own pending entries
        self.consumer = name or "leader"
        self.stop_event = threading.Event()
        self._deletes = BatchedDeletes()  #: handled entries of the sched stream
        self.batches = 0
        #: a client whose heartbeat is older than this is lost: dropped, its keys released
        self.client_ttl = float(config.get("scheduler.client_ttl"))
        #: a worker silent for this long is removed (its nanny reports deaths sooner)
        self.worker_ttl = (
            worker_ttl if worker_ttl is not None else float(config.get("scheduler.worker_ttl"))
        )
        self._last_client_check = 0.0
        self._last_worker_check = 0.0
        #: the newest heartbeat time seen of each worker: a worker whose record is gone (it
        #: is leaving, and its leave message is on its way) is not "silent" before its ttl
        self._last_seen: dict[str, float] = {}
        if lease_ttl_ms is None:
            lease_ttl_ms = round(float(config.get("scheduler.lease_ttl")) * 1000)
        if lease_ttl_ms < MIN_LEASE_TTL_MS:
            raise ConfigError(
                f"the scheduler's lease must live at least {MIN_LEASE_TTL_MS / 1000:g} s, not "
                f"{lease_ttl_ms / 1000:g} s: set scheduler.lease_ttl (RDIST_SCHEDULER__LEASE_TTL) "
                "or lease_ttl_ms to a longer one (default 2 s)"
            )
        self.lease = Lease(store.clone(), lease_ttl_ms)
        #: retries of Redis: capped backoff with jitter; a permanent error raises
        self.retry = Backoff("scheduler", store.url, log)
        self._lease_retry = Backoff("scheduler: lease", store.url, log)
        self.is_leader = threading.Event()
        self.started_serving = 0.0  #: monotonic time the last leadership began
        #: the scheduler whose lease this one waited for (a take-over), for the events log
        self._predecessor: str | None = None
        self._led_before = False  #: this process led before (its later leaderships say so)
        #: Redis failed while this process led: its next leadership starts a new epoch (a
        #: fail-over may have dropped the last writes). Losing the lease alone -- a
        #: scheduler too slow to renew it -- does not: Redis kept everything, and a new
        #: epoch would have every worker re-announce and every client re-submit.
        self._redis_failed = False
        self.guard = EntryGuard(store, store.keys.sched, "scheduler", log, deferred=True)
        #: what happens should the lease renewer die anyway (see rdist.supervise)
        self.on_thread_death: OnDeath = exit_process
        #: this process's last log lines, at ``logs:scheduler:<lease token>``
        self.logs = ProcessLog(store, "scheduler", self.lease.token)
        self._announced: set[str] = set()  #: workers whose joining the log told
        self._took_over = False  #: this leadership followed another scheduler's
        #: the Active Memory Manager: started or not, its clock, copies on their way
        self.amm = AmmRunner.from_config(config)

    @classmethod
    def from_url(cls, url: str, cluster: str = "default", **kwargs: Any) -> SchedulerServer:
        return cls(connect(url, cluster), **kwargs)

    # -- plugins ------------------------------------------------------------------------
    def add_plugin(self, plugin: Any, name: str | None = None) -> str:
        """Add a scheduler plugin in this process (dask's ``scheduler.add_plugin``)."""
        return self.plugins.add(plugin, name)

    def remove_plugin(self, name: str) -> None:
        self.plugins.remove(name)

    @property
    def tasks(self) -> dict[str, Any]:
        """The scheduler's tasks by key (what plugins look at, as in dask)."""
        return self.state.tasks

    @property
    def workers(self) -> dict[str, Any]:
        return self.state.workers

    def _decide_noted(self, events: Sequence[ev.Event]) -> list[ev.Instruction]:
        """:meth:`_decide`, with workers joining and leaving logged for the operator."""
        changes = membership.changes(self.state.workers, self._announced, events)
        out = self._decide(events, place=False)  # (placed once, for the batch: _place)
        if changes:
            membership.log_changes(log, changes, len(self.state.workers))
        return out

    def _decide(
        self, events: Sequence[ev.Event], flush: bool = False, place: bool = True
    ) -> list[ev.Instruction]:
        """The state machine's decisions on ``events``, with the plugins' hooks after."""
        return hooks.decide(self.state, self.plugins, self, events, flush, place)

    def _place(self) -> list[ev.Instruction]:
        """Placement for the entries of a batch, and the records they changed."""
        try:
            return hooks.place(self.state, self.plugins)
        except Exception:  # a bug must not stop the cluster: the next batch places again
            log.exception("placement failed")
            return self.state.flush()

    def prepare(self) -> None:
        self.store.ensure_group(self.store.keys.sched, SCHEDULER_GROUP, start="0")
        # (what workers and clients send on seeing it is read after the restore below)
        self._begin_epoch()
        self.store.meta.make_secret()
        before = self.store.meta.announced_scheduler()
        self.store.meta.announce_scheduler(self.lease.token, VERSION)
        self.store.meta.announce_versions(versions.get_versions())
        self.store.logs.set_current_scheduler(self.lease.token)
        # clients waiting for a scheduler (Client() at start) wake on this event; a
        # standby that took over says whose place it took (the dashboard's fail-overs)
        info: dict[str, Any] = {"scheduler": self.lease.token}
        if self._predecessor:
            info.update(takeover=True, previous=self._predecessor)
        elif before and before != self.lease.token:  # a new scheduler after one that died
            info.update(previous=before)
        self.store.streams.log_event(wire.ClusterEvent("scheduler-started", info))

    def run(self) -> None:
        """Wait for the lease (standby), lead until it is lost or :meth:`stop`; repeat.

        Leading that fails for any other reason than Redis (a bug) is logged; after a pause
        (longer while it keeps failing) the scheduler leads again from what Redis holds."""
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
        self.logs.start()
        log.info(
            "rdist %s scheduler %s (pid %d) starting for cluster %r on %s",
            rdist_version(),
            self.lease.token,
            os.getpid(),
            self.store.keys.cluster,
            mask_url(self.store.url),
        )
        try:
            self._run()
        finally:
            log.info("scheduler %s stopped", self.lease.token)
            self.logs.close()

    def _run(self) -> None:
        pause = RETRY_LEADING_SECONDS
        while not self.stop_event.is_set():
            if not self._wait_for_lease():
                break
            started = time.monotonic()
            try:
                self._lead()
            except RedisConfigError:
                raise  # no leading again helps: a new password, a TLS mismatch
            except Exception:
                if time.monotonic() - started >= STABLE_SECONDS:
                    pause = RETRY_LEADING_SECONDS
                log.exception("scheduler failed while leading: leading again in %.1f s", pause)
                self.stop_event.wait(pause)
                pause = min(MAX_PAUSE, pause * 2)
        try:
            self.lease.release()
        except ConnectionErrors:
            pass

    def _lead(self) -> None:
        """One leadership: restore the state from Redis, then serve until it ends."""
        self.is_leader.set()
        renewer = start_thread(
            "rdist-lease", self._renew_lease, self.stop_event, self.on_thread_death
        )
        try:
            self.prepare()
            self._restore()
            self.plugins.start(self)
            self._serve()
        except ConnectionErrors as exc:
            self._redis_failed = True
            self.retry.failed(exc)  # a permanent error (a new password?) raises
            log.warning("lost redis while leading (%s); standing by", exc)
        finally:
            self.is_leader.clear()
            self.plugins.close()
            renewer.join()

    def _wait_for_lease(self) -> bool:
        waited = False
        self._predecessor = None
        while not self.stop_event.is_set():
            try:
                if self.lease.try_acquire():
                    self._lease_retry.succeeded()
                    self._took_over = waited
                    if waited:
                        log.warning("scheduler %s took over as leader", self.lease.token)
                    else:
                        log.info("scheduler %s is the leader", self.lease.token)
                    self.started_serving = time.monotonic()
                    return True
                if not waited:
                    self._predecessor = self.lease.holder()
                    log.info("standing by: the lease is held by %s", self._predecessor)
                waited = True
                self._lease_retry.succeeded()
            except ConnectionErrors as exc:
                self.stop_event.wait(self._lease_retry.failed(exc))
                continue
            self.stop_event.wait(self.lease.ttl_ms / 4000)
        return False

    def _renew_lease(self) -> None:
        """Renew every third of the lease's life; losing it ends this leadership."""
        while self.is_leader.is_set() and not self.stop_event.wait(self.lease.ttl_ms / 3000):
            try:
                if not self.lease.renew():
                    log.error("scheduler %s lost its lease: standing down", self.lease.token)
                    self.is_leader.clear()
            except ConnectionErrors as exc:
                self._redis_failed = True
                self._lease_retry.failed(exc)  # logged once a spell; permanent raises
            else:
                self._lease_retry.succeeded()

    def _begin_epoch(self) -> None:
        """A new epoch when Redis came back empty, or after this scheduler lost Redis while
        leading (a fail-over may have dropped the last writes): workers re-announce what
        they hold and clients re-submit their graphs (``rdist.scheduler.reconcile``)."""
        _, new = self.store.epoch.begin(new=self._redis_failed)
        if new and self._led_before:
            log.warning(
                "redis may have lost data: new cluster epoch; workers and clients rebuild it"
            )
        self._led_before = True
        self._redis_failed = False

    def _restore(self) -> None:
        """Rebuild the state from Redis: records, live workers, stored errors."""
        self.state = SchedulerState(**self._state_options)
        event = read_state(self.store, self.worker_ttl, time.time())
        if event is None:
            return
        outbox = Outbox()
        outbox.add(self.state.handle(event))
        pipe = self.store.pipeline()
        outbox.write(pipe, self.store)
        for address, record in event.workers.items():
            # workers that joined before this scheduler: their join is not news to the
            # state now, but the events log would otherwise never show them
            joined = {"worker": address, "name": record.name, "restored": True}
            self.store.streams.log_event(wire.ClusterEvent("worker-joined", joined), pipe)
        pipe.execute()
        # news to an operator only when there was a graph to resume (a new cluster's first
        # scheduler finds the workers that were quicker than it, nothing more)
        log.log(
            logging.INFO if event.tasks or self._took_over else logging.DEBUG,
            "restored %d tasks and %d workers from redis",
            len(event.tasks),
            len(event.workers),
        )

    def _serve(self) -> None:
        guard = EmptyReadGuard(self.stop_event)
        pending_write: _Write | None = None
        handled: list[bytes] = []  #: the entries ``pending_write`` acknowledges
        # first what an earlier scheduler left unacknowledged, one entry at a time (see
        # rdist.store.guard); ``after`` is the last pending entry read in this pass
        read_pending, after = True, b"0"
        next_pending_check = time.monotonic() + PENDING_CHECK_SECONDS
        while not self.stop_event.is_set() and self.is_leader.is_set():
            started = time.monotonic()
            if started >= next_pending_check and not read_pending:
                # entries delivered by a read whose reply was lost (Redis restarting as it
                # answered, the client retrying without telling us) sit in our pending list
                # and never come from ">" again: a lost task-done would hang its task
                read_pending, after = True, b"0"
            try:
                entries, deliveries = self._read(pending_write, read_pending, after)
            except ConnectionErrors as exc:
                if self.stop_event.is_set():
                    break
                self._redis_failed = True
                self.retry.wait(exc, self.stop_event)
                read_pending, after = True, b"0"  # the failed read may have been served
                continue
            self.retry.succeeded()
            pending_write, handled = None, []
            if read_pending:
                if not entries:
                    read_pending = False
                    next_pending_check = started + PENDING_CHECK_SECONDS
                    continue
                entry_id, payload = entries[0]
                after = entry_id
                if self.guard.too_often(entry_id, payload, deliveries):
                    pending_write = self._batch_writes(Outbox(), self.guard.take(), [entry_id])
                    continue
            else:
                self.guard.received(entries)
                guard.after_read(bool(entries), started, BLOCK_MS)
                if not entries:
                    pending_write = self._idle_deletes()
            if entries:
                pending_write = self.process(entries)
                handled = [entry_id for entry_id, _ in entries]
                self.batches += 1
            pending_write = self._drop_lost_clients(pending_write)
            pending_write = self._drop_lost_workers(pending_write)
            if self.amm.due(time.time()):
                pending_write = self._amm_tick(pending_write)
        if pending_write is not None and not self.is_leader.is_set():
            # the lease lapsed (a starved renewal): the batch's writes may not go out, its
            # entries come again -- a delivery that says nothing against them (see
            # rdist.store.guard), or a big graph that twice outlasted the lease would be
            # set aside and its futures would never finish
            self.guard.excuse(handled)
        elif pending_write is not None:
            try:
                pipe = self.store.pipeline()
                pending_write(pipe)
                pipe.execute()
            except ConnectionErrors:
                log.warning(
                    "scheduler stopped before its last batch was written; "
                    "its entries stay pending for the next scheduler"
                )

    def _read(self, before: _Write | None, pending: bool, after: bytes) -> tuple[list[Entry], int]:
        """The next batch (after the writes of the previous one): new entries, or our own
        pending entry after ``after`` with how often it was delivered before."""
        store, stream = self.store, self.store.keys.sched
        if pending:
            return store.read_own_pending(stream, SCHEDULER_GROUP, self.consumer, after, before)
        entries = store.read_group(
            stream, SCHEDULER_GROUP, self.consumer, self._batch_entries, BLOCK_MS, before
        )
        return entries, 1

    def _drop_lost_workers(self, pending: _Write | None) -> _Write | None:
        """Workers silent for over ``worker_ttl``: reschedule their work, drop their stream."""
        now = time.time()
        if now < self._last_worker_check + min(1.0, self.worker_ttl / 4):
            return pending
        self._last_worker_check = now
        try:
            # only the known workers' records: junk fields in the hash cost nothing
            beats = self.store.workers.get_many(list(self.state.workers))
        except ConnectionErrors:
            return pending
        lost = []
        seen = self._last_seen
        for address in list(self.state.workers):
            record = beats.get(address)
            if record is not None:
                seen[address] = max(record.last_seen, seen.get(address, 0.0))
            if now - seen.setdefault(address, now) > self.worker_ttl:
                lost.append(address)
        for address in [a for a in seen if a not in self.state.workers]:
            del seen[address]  # left: forgotten with it
        if not lost:
            return pending
        self._announced.difference_update(lost)  # (should it come back, it joins anew)
        outbox = Outbox()
        for address in lost:
            log.warning(
                "worker %s sent no heartbeat for over %g s: removing it", address, self.worker_ttl
            )
            try:
                outbox.add(
                    self._decide([ev.WorkerLeft(f"worker-lost-{now}", now, address, lost=True)])
                )
            except Exception:  # a bug must not stop the cluster
                log.exception("failed to reschedule the work of lost worker %s", address)

        def write(pipe: Any) -> None:
            if pending is not None:
                pending(pipe)
            outbox.write(pipe, self.store)
            self.store.workers.remove(lost, pipe)
            self.store.streams.drop_worker_streams(lost, pipe)

        return write

    def process(self, entries: list[Entry]) -> _Write:
        """Decide on one batch; returns the writes to send (before the next read)."""
        size = sum(len(payload or b"") for _, payload in entries)
        self._batch_entries = FEW_ENTRIES if size > LARGE_BATCH_BYTES else BATCH_ENTRIES
        now = time.time()
        stream = self.store.keys.sched
        guard = self.guard
        outbox = Outbox()
        done_bytes, first = 0, 0
        for n, (entry_id, payload) in enumerate(entries):
            done_bytes += len(payload or b"")
            if done_bytes > LARGE_BATCH_BYTES and n > first:
                # a big batch goes out in slices: no pipeline of hundreds of MB
                outbox.add(self._place())
                pipe = self.store.pipeline()
                self._batch_writes(outbox, guard.take(), [i for i, _ in entries[first:n]])(pipe)
                pipe.execute()
                outbox, done_bytes, first = Outbox(), len(payload or b""), n
            try:
                events = decode_entry(entry_id, payload, now, stream)
            except wire.MalformedMessage as exc:
                guard.refuse(entry_id, payload, str(exc), exc)
                continue
            requests = [e for e in events if type(e) is AmmRequested]
            if requests:  # the shell's, answered below (one may share a bundle with others)
                for request in requests:
                    self.amm.request(request)
                events = [e for e in events if type(e) is not AmmRequested]
                if not events:
                    continue
            guard.call(
                entry_id,
                payload,
                "handling",
                lambda: outbox.add(self._decide_noted(events)),  # noqa: B023
            )
        copies = self._amm_answer(outbox, now) if self.amm.requests else {}
        outbox.add(self._place())  # each task changed in this batch is written once
        if size > LARGE_BATCH_BYTES and gc.get_threshold()[2] >= 1000:  # (tune_gc ran)
            gc.freeze()  # the new graph's objects: never walked by a collection again
        write = self._batch_writes(outbox, guard.take(), [i for i, _ in entries[first:]])
        return self._with_copies(write, copies) if copies else write

    # -- the active memory manager (rdist.scheduler.amm_runner) ----------------------------
    def _amm_run(
        self, outbox: Outbox, now: float, timed: bool = False
    ) -> dict[str, wire.GatherKeys]:
        """One run of the manager (the requests waiting, and when ``timed`` its own):
        its drops decided into ``outbox``, its answers queued there; returns its copies."""
        try:
            beats = worker_memory(self.store.workers.all())
        except ConnectionErrors:  # judged without the heartbeats' figures this once
            beats = {}
        out = self.amm.run(self.state, beats, now, timed)
        if out.events:
            outbox.add(self._decide(out.events))
        outbox.client_messages.extend(out.replies)
        return out.copies

    def _amm_answer(self, outbox: Outbox, now: float) -> dict[str, wire.GatherKeys]:
        """The clients' requests of this batch, answered with its writes."""
        try:
            return self._amm_run(outbox, now)
        except Exception:  # a bug must not stop the cluster (the clients time out)
            log.exception("the active memory manager failed")
            return {}

    def _amm_tick(self, pending: _Write | None) -> _Write | None:
        """The manager's run on its own (every ``amm.interval`` while it is started)."""
        outbox = Outbox()
        try:
            copies = self._amm_run(outbox, time.time(), timed=True)
            outbox.add(self.state.flush())
        except Exception:  # a bug must not stop the cluster
            log.exception("the active memory manager failed")
            return pending

        def write(pipe: Any) -> None:
            if pending is not None:
                pending(pipe)
            outbox.write(pipe, self.store)

        return self._with_copies(write, copies)

    def _with_copies(self, write: _Write, copies: dict[str, wire.GatherKeys]) -> _Write:
        """``write``, then the manager's ``gather-keys`` requests to their targets."""
        store = self.store

        def both(pipe: Any) -> None:
            write(pipe)
            for target, message in copies.items():
                store.streams.to_worker(target, message, pipe)

        return both

    def _idle_deletes(self) -> _Write | None:
        """Handled entries still waiting for their batched delete, once the stream is quiet:
        else the last few hundred (graphs, with their specs) would stay until more work."""
        due = self._deletes.take_due()
        if not due:
            return None
        stream, streams = self.store.keys.sched, self.store.streams
        return lambda pipe: streams.delete_entries(stream, due, pipe)

    def _batch_writes(self, outbox: Outbox, letters: list[DeadLetter], ids: list[bytes]) -> _Write:
        store = self.store
        stream = store.keys.sched
        for offer in outbox.plugin_offers:  # (rare) answered with this batch
            outbox.client_messages.append((offer.client, self.plugins.offered(self, offer)))
        if outbox.shutdown:  # client.shutdown(): the loop ends, then writes this batch
            log.info("scheduler shutting down (a client asked)")
            self.stop_event.set()

        def write(pipe: Any) -> None:
            outbox.write(pipe, store)
            if letters:
                self.guard.write(letters, pipe)
            store.streams.acknowledge(stream, SCHEDULER_GROUP, ids, pipe)
            self._deletes.add(ids)
            due = self._deletes.take_due()
            if due:
                store.streams.delete_entries(stream, due, pipe)

        return write

    def _lost_clients(self) -> list[str]:
        """Known clients whose heartbeat is older than ``client_ttl`` (checked now and then)."""
        now = time.time()
        if now < self._last_client_check + min(5.0, self.client_ttl / 4):
            return []
        self._last_client_check = now
        try:
            # the known clients' records only (one that does not decode is skipped)
            beats = self.store.clients.get_many(list(self.state.clients))
        except ConnectionErrors:
            return []
        return [
            client
            for client, record in beats.items()
            if client in self.state.clients and now - record.last_seen > self.client_ttl
        ]

    def _drop_lost_clients(self, pending: _Write | None) -> _Write | None:
        """Release what lost clients held; the writes join ``pending`` (kept in order)."""
        lost = self._lost_clients()
        if not lost:
            return pending
        now = time.time()
        outbox = Outbox()
        for client in lost:
            log.warning(
                "client %s sent no heartbeat for over %g s: releasing its keys",
                client,
                self.client_ttl,
            )
            try:
                outbox.add(self._decide([ev.ClientLeft(f"client-lost-{now}", now, client)]))
            except Exception:  # a bug must not stop the cluster
                log.exception("failed to release the keys of lost client %s", client)

        def write(pipe: Any) -> None:
            if pending is not None:
                pending(pipe)
            outbox.write(pipe, self.store)
            self.store.clients.remove(lost, pipe)
            self.store.streams.drop_client_streams(lost, pipe)

        return write

    def stop(self) -> None:
        self.stop_event.set()
        try:  # end the serving thread's blocking read now, not after BLOCK_MS
            self.store.streams.to_scheduler(wire.Wake())
        except ConnectionErrors:
            pass  # Redis is away: the read fails and the loop sees the flag


def run_scheduler(url: str, cluster: str = "default", **kwargs: Any) -> None:
    SchedulerServer.from_url(url, cluster, **kwargs).run()
