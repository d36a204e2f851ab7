"""The scheduler process: a thin shell around :class:`SchedulerState`.

One loop: read a batch from the ``sched`` stream, turn entries into events, let the state
machine decide, then send every consequence of the batch -- task records, one message per
worker, one per client, the acknowledgement -- in one pipeline, together with the next
blocking read.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rdist.protocol import messages
from rdist.protocol.messages import MalformedMessage
from rdist.scheduler import events as ev
from rdist.scheduler.state import SchedulerState
from rdist.store import RedisStore, connect
from rdist.store.connection import BatchedDeletes, ConnectionErrors, EmptyReadGuard
from rdist.store.keys import PAYLOAD_FIELD, SCHEDULER_GROUP
from rdist.store.lease import Lease

log = logging.getLogger("rdist.scheduler")

BATCH_ENTRIES = 500
#: After a batch of more than this many payload bytes (big graphs), read few entries at a
#: time: a batch's writes go out in one pipeline, and one of hundreds of MB would hold
#: Redis (and the GIL, parsing it) for seconds -- longer than the leader's lease lives.
LARGE_BATCH_BYTES = 4 << 20
FEW_ENTRIES = 4
BLOCK_MS = 500
EVENTS_MAXLEN = 10_000
#: A client whose heartbeat (``clients`` hash, every few seconds) is older than this is
#: considered lost: the scheduler drops it and releases every key it held.
CLIENT_TTL_SECONDS = 30.0
#: A worker silent for this long is removed (its nanny reports deaths sooner).
WORKER_TTL_SECONDS = 15.0
LEASE_TTL_MS = 2000
#: How often the scheduler also reads its own pending (delivered, unacknowledged) entries.
#: Each batch is acknowledged in the round trip of the next read, so at a read the pending
#: list holds only entries whose delivery was lost with a reply: cheap to look, rare to find.
PENDING_CHECK_SECONDS = 2.0


def _tasks(msg: dict[str, Any]) -> list[ev.TaskSpecMeta]:
    out = []
    specs = msg.get("specs") or {}
    for key, deps, priority, workers, loose, retries, resources in msg["tasks"]:
        out.append(
            ev.TaskSpecMeta(
                str(key),
                list(deps or ()),
                int(priority or 0),
                list(workers) if workers else None,
                bool(loose),
                int(retries or 0),
                resources or None,
                specs.get(key),
            )
        )
    return out


def _finished(msg: dict[str, Any]) -> list[ev.FinishedTask]:
    return [
        ev.FinishedTask(str(k), int(nb), bool(r), inline, float(d), str(t or ""))
        for k, nb, r, inline, d, t in msg.get("done", ())
    ]


_Write = Callable[[Any], None]  #: writes of one batch, queued on a pipeline
_Decoder = Callable[[dict[str, Any], str, float], list[ev.Event]]

DECODERS: dict[str, _Decoder] = {
    "update-graph": lambda m, s, t: [
        ev.GraphSubmitted(
            s, t, m["client"], _tasks(m), list(m.get("wanted", ())), list(m.get("faf", ()))
        )
    ],
    "release-keys": lambda m, s, t: [ev.KeysReleased(s, t, m["client"], list(m["keys"]))],
    "cancel": lambda m, s, t: [
        ev.KeysCancelled(s, t, m["client"], list(m["keys"]), bool(m.get("force")))
    ],
    "retry": lambda m, s, t: [ev.RetryRequested(s, t, m["client"], list(m["keys"]))],
    "client-join": lambda m, s, t: [ev.ClientJoined(s, t, m["client"])],
    "client-leave": lambda m, s, t: [ev.ClientLeft(s, t, m["client"])],
    "scatter": lambda m, s, t: [
        ev.DataScattered(
            s, t, m["client"], [(str(k), list(w), int(n), bool(r)) for k, w, n, r in m["items"]]
        )
    ],
    "worker-join": lambda m, s, t: [
        ev.WorkerJoined(
            s,
            t,
            m["address"],
            m.get("name", ""),
            int(m["nthreads"]),
            int(m.get("memory_limit", 0)),
            m.get("resources"),
        )
    ],
    "worker-leave": lambda m, s, t: [ev.WorkerLeft(s, t, m["address"])],
    "worker-lost": lambda m, s, t: [ev.WorkerLeft(s, t, m["address"], lost=True)],
    "restart": lambda m, s, t: [ev.RestartRequested(s, t, m["client"])],
    "add-keys": lambda m, s, t: [ev.DataReplicated(s, t, m["worker"], list(m["keys"]))],
    "worker-status": lambda m, s, t: [
        ev.WorkerStatusChanged(s, t, str(m["address"]), str(m["status"]))
    ],
    "drop-replicas": lambda m, s, t: [
        ev.DropReplicas(
            s,
            t,
            str(m["client"]),
            {str(k): [str(w) for w in v] for k, v in dict(m["keys"]).items()},
        )
    ],
    "barrier": lambda m, s, t: [ev.Barrier(s, t, str(m["client"]), str(m["id"]))],
    "task-done": lambda m, s, t: _task_done(m, s, t),
}


def _task_done(m: dict[str, Any], s: str, t: float) -> list[ev.Event]:
    out: list[ev.Event] = []
    worker = m["worker"]
    if m.get("done"):
        out.append(ev.TasksFinished(s, t, worker, _finished(m)))
    for key, error, duration in m.get("erred", ()):
        out.append(ev.TaskErred(s, t, worker, str(key), bytes(error), float(duration)))
    if m.get("replicated"):
        out.append(ev.DataReplicated(s, t, worker, list(m["replicated"])))
    for key, deps, tried in m.get("missing", ()):
        out.append(ev.MissingData(s, t, worker, str(key), list(deps), list(tried)))
    for key in m.get("seceded", ()):
        out.append(ev.TaskSeceded(s, t, worker, str(key)))
    for key, ok in m.get("stolen", ()):
        out.append(ev.StealResponse(s, t, worker, str(key), bool(ok)))
    return out


KNOWN_OPS = frozenset(DECODERS)
#: several messages sent together in one entry (see ``messages.bundle``)
ENTRY_OPS = KNOWN_OPS | {messages.BUNDLE_OP}


def decode_entry(entry_id: bytes, payload: bytes | None, now: float) -> list[ev.Event]:
    """Stream entry -> events; raises MalformedMessage for anything unexpected (in a
    bundle, one bad message sets the whole entry aside)."""
    msg = messages.decode(payload, ENTRY_OPS)
    stream_id = entry_id.decode()
    if msg["op"] != messages.BUNDLE_OP:
        return _events(msg, stream_id, now)
    parts = messages.unbundle(msg, KNOWN_OPS)
    return [e for n, part in enumerate(parts) for e in _events(part, f"{stream_id}.{n}", now)]


def _events(msg: dict[str, Any], stimulus: str, now: float) -> list[ev.Event]:
    try:
        return DECODERS[msg["op"]](msg, stimulus, now)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"bad {msg['op']} message: {exc!r}") from None


class Outbox:
    """Instructions of one batch, grouped into the fewest Redis commands."""

    def __init__(self) -> None:
        self.worker_actions: dict[str, list[list[Any]]] = defaultdict(list)
        self.client_items: dict[str, list[list[Any]]] = defaultdict(list)
        self.records: dict[str, bytes] = {}
        self.specs: dict[str, bytes] = {}
        self.restarts: list[ev.RestartWorkers] = []
        self.forget: list[str] = []
        self.drop_results: list[str] = []
        self.log: list[bytes] = []

    def add(self, instructions: list[ev.Instruction]) -> None:
        for ins in instructions:
            kind = type(ins)
            if kind is ev.Compute:
                deps = {k: [h, n, r] for k, (h, n, r) in ins.deps.items()}  # type: ignore[attr-defined]
                # a spec submitted in this very batch travels with the task: the worker
                # then needs no round trip to load it
                self.worker_actions[ins.worker].append(  # type: ignore[attr-defined]
                    [
                        "c",
                        ins.key,
                        ins.priority,
                        deps,
                        ins.resources,  # type: ignore[attr-defined]
                        ins.spec or self.specs.get(ins.key),
                        ins.clients,
                    ]
                )  # type: ignore[attr-defined]
            elif kind is ev.FreeKeys:
                self.worker_actions[ins.worker].append(["f", ins.keys])  # type: ignore[attr-defined]
            elif kind is ev.StealRequest:
                self.worker_actions[ins.worker].append(["s", ins.key])  # type: ignore[attr-defined]
            elif kind is ev.Notify:
                self.client_items[ins.client].append([ins.key, ins.status, ins.info])  # type: ignore[attr-defined]
            elif kind is ev.PersistTask:
                self.records[ins.key] = messages.pack(ins.record)  # type: ignore[attr-defined]
            elif kind is ev.StoreSpec:
                self.specs[ins.key] = ins.spec  # type: ignore[attr-defined]
            elif kind is ev.ForgetTask:
                self.records.pop(ins.key, None)  # type: ignore[attr-defined]
                self.specs.pop(ins.key, None)  # type: ignore[attr-defined]
                self.forget.append(ins.key)  # type: ignore[attr-defined]
            elif kind is ev.RestartWorkers:
                self.restarts.append(ins)  # type: ignore[arg-type]
            elif kind is ev.DropResult:
                self.drop_results.append(ins.key)  # type: ignore[attr-defined]
            elif kind is ev.LogEvent:
                self.log.append(messages.encode(ins.kind, **ins.info))  # type: ignore[attr-defined]

    def write(self, pipe: Any, store: RedisStore) -> None:
        keys = store.keys
        if self.forget:
            pipe.hdel(keys.tasks, *self.forget)
            pipe.hdel(keys.specs, *self.forget)
            pipe.hdel(keys.results, *self.forget)
        if self.drop_results:
            pipe.hdel(keys.results, *self.drop_results)
        if self.specs:  # before the worker messages that will need them
            pipe.hset(keys.specs, mapping=self.specs)
        if self.records:
            pipe.hset(keys.tasks, mapping=self.records)
        for worker, actions in self.worker_actions.items():
            pipe.xadd(
                keys.worker_stream(worker), {PAYLOAD_FIELD: messages.encode("batch", a=actions)}
            )
        for client, items in self.client_items.items():
            pipe.xadd(
                keys.client_stream(client), {PAYLOAD_FIELD: messages.encode("notify", items=items)}
            )
        for restart in self.restarts:  # after the cancellations above reached the clients
            for worker in restart.workers:
                pipe.xadd(keys.worker_stream(worker), {PAYLOAD_FIELD: messages.encode("restart")})
            pipe.xadd(
                keys.client_stream(restart.client), {PAYLOAD_FIELD: messages.encode("restarted")}
            )
        for entry in self.log:
            pipe.xadd(keys.events, {PAYLOAD_FIELD: entry}, maxlen=EVENTS_MAXLEN, approximate=True)


class SchedulerServer:
    """Reads the ``sched`` stream, runs the state machine, writes what it decided."""

    def __init__(
        self,
        store: RedisStore,
        name: str | None = None,
        worker_ttl: float | None = None,
        lease_ttl_ms: int = LEASE_TTL_MS,
    ) -> None:
        self.store = store
        self._batch_entries = BATCH_ENTRIES  #: entries per read (fewer after a big batch)
        self.state = SchedulerState()
        #: one consumer name for every scheduler of the cluster: a successor then sees the
        #: entries its predecessor left unacknowledged as its own pending entries
        self.consumer = name or "leader"
        self.stop_event = threading.Event()
        self._deletes = BatchedDeletes()  #: handled entries of the sched stream
        self.batches = 0
        self.client_ttl = float(os.environ.get("RDIST_CLIENT_TTL", CLIENT_TTL_SECONDS))
        self.worker_ttl = (
            worker_ttl
            if worker_ttl is not None
            else float(os.environ.get("RDIST_WORKER_TTL", WORKER_TTL_SECONDS))
        )
        self._last_client_check = 0.0
        self._last_worker_check = 0.0
        self.lease = Lease(store.clone(), lease_ttl_ms)
        self.is_leader = threading.Event()
        self.started_serving = 0.0  #: monotonic time the last leadership began

    @classmethod
    def from_url(cls, url: str, cluster: str = "default") -> SchedulerServer:
        return cls(connect(url, cluster))

    def prepare(self) -> None:
        keys = self.store.keys
        self.store.ensure_group(keys.sched, SCHEDULER_GROUP, start="0")
        self.store.redis.hsetnx(keys.meta, "secret", secrets.token_hex(32))
        self.store.redis.hset(keys.meta, mapping={"version": "1", "scheduler": self.lease.token})

    def run(self) -> None:
        """Wait for the lease (standby), lead until it is lost or :meth:`stop`; repeat."""
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
        while not self.stop_event.is_set():
            if not self._wait_for_lease():
                break
            renewer = threading.Thread(target=self._renew_lease, name="rdist-lease", daemon=True)
            self.is_leader.set()
            renewer.start()
            try:
                self.prepare()
                self._restore()
                self._serve()
            except ConnectionErrors as exc:
                log.warning("lost redis while leading (%s); standing by", exc)
            finally:
                self.is_leader.clear()
                renewer.join()
        try:
            self.lease.release()
        except ConnectionErrors:
            pass

    def _wait_for_lease(self) -> bool:
        waited = False
        while not self.stop_event.is_set():
            try:
                if self.lease.try_acquire():
                    if waited:
                        log.warning("scheduler %s took over as leader", self.lease.token)
                    self.started_serving = time.monotonic()
                    return True
                if not waited:
                    log.info("standing by: the lease is held by %s", self.lease.holder())
                waited = True
            except ConnectionErrors as exc:
                log.warning("redis unavailable (%s); retrying", exc)
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
                log.warning("could not renew the lease: %s", exc)

    def _restore(self) -> None:
        """Rebuild the state from Redis: records, live workers, stored errors."""
        keys, redis = self.store.keys, self.store.redis
        self.state = SchedulerState()
        records = {
            k.decode(): messages.unpack(v) for k, v in redis.hscan_iter(keys.tasks, count=10_000)
        }
        now = time.time()
        workers = {}
        for address, blob in redis.hgetall(keys.workers).items():
            info = messages.unpack(blob)
            if now - float(info.get("last_seen", 0)) <= self.worker_ttl:
                workers[address.decode()] = info
        blamed = sorted(
            {str(r["b"]) for r in records.values() if r.get("s") == "erred" and r.get("b")}
        )
        errors = dict(zip(blamed, redis.hmget(keys.results, blamed))) if blamed else {}
        errors = {k: v for k, v in errors.items() if v is not None}
        if not records and not workers:
            return
        event = ev.StateRestored(f"restore-{now}", now, records, workers, errors)
        outbox = Outbox()
        outbox.add(self.state.handle(event))
        pipe = self.store.pipeline()
        outbox.write(pipe, self.store)
        pipe.execute()
        log.info("restored %d tasks and %d workers from redis", len(records), len(workers))

    def _serve(self) -> None:
        guard = EmptyReadGuard(self.stop_event)
        pending_write: Callable[[Any], None] | None = None
        read_pending = True  # first drain what an earlier scheduler left unacknowledged
        next_pending_check = time.monotonic() + PENDING_CHECK_SECONDS
        while not self.stop_event.is_set() and self.is_leader.is_set():
            started = time.monotonic()
            if started >= next_pending_check:
                # entries delivered by a read whose reply was lost (Redis restarting as it
                # answered, the client retrying without telling us) sit in our pending list
                # and never come from ">" again: a lost task-done would hang its task
                read_pending, next_pending_check = True, started + PENDING_CHECK_SECONDS
            try:
                entries = self.store.read_group(
                    self.store.keys.sched,
                    SCHEDULER_GROUP,
                    self.consumer,
                    self._batch_entries,
                    BLOCK_MS,
                    before=pending_write,
                    pending=read_pending,
                )
            except ConnectionErrors as exc:
                if self.stop_event.is_set():
                    break
                log.warning("redis unavailable (%s); retrying", exc)
                self.stop_event.wait(0.5)
                read_pending = True  # the failed read may have been served: see above
                continue
            pending_write = None
            if read_pending and not entries:
                read_pending = False
                continue
            guard.after_read(bool(entries), started, 0 if read_pending else BLOCK_MS)
            if entries:
                pending_write = self.process(entries)
                self.batches += 1
            pending_write = self._drop_lost_clients(pending_write)
            pending_write = self._drop_lost_workers(pending_write)
        if pending_write is not None and self.is_leader.is_set():
            try:
                pipe = self.store.pipeline()
                pending_write(pipe)
                pipe.execute()
            except ConnectionErrors:
                log.warning(
                    "scheduler stopped before its last batch was written; "
                    "its entries stay pending for the next scheduler"
                )

    def _drop_lost_workers(self, pending: _Write | None) -> _Write | None:
        """Workers silent for over ``worker_ttl``: reschedule their work, drop their stream."""
        now = time.time()
        if now < self._last_worker_check + min(1.0, self.worker_ttl / 4):
            return pending
        self._last_worker_check = now
        try:
            beats = self.store.redis.hgetall(self.store.keys.workers)
        except ConnectionErrors:
            return pending
        lost = []
        for address in list(self.state.workers):
            blob = beats.get(address.encode())
            last_seen = float(messages.unpack(blob).get("last_seen", 0)) if blob else 0.0
            if now - last_seen > self.worker_ttl:
                lost.append(address)
        if not lost:
            return pending
        outbox = Outbox()
        for address in lost:
            log.warning(
                "worker %s sent no heartbeat for over %g s: removing it", address, self.worker_ttl
            )
            outbox.add(
                self.state.handle(ev.WorkerLeft(f"worker-lost-{now}", now, address, lost=True))
            )
        keys = self.store.keys

        def write(pipe: Any) -> None:
            if pending is not None:
                pending(pipe)
            outbox.write(pipe, self.store)
            pipe.hdel(keys.workers, *lost)
            pipe.delete(*(keys.worker_stream(a) for a in lost))

        return write

    def process(self, entries: list[tuple[bytes, bytes | None]]) -> Callable[[Any], None]:
        """Decide on one batch; returns the writes to send (before the next read)."""
        size = sum(len(payload or b"") for _, payload in entries)
        self._batch_entries = FEW_ENTRIES if size > LARGE_BATCH_BYTES else BATCH_ENTRIES
        now = time.time()
        outbox = Outbox()
        bad: list[tuple[bytes, bytes | None, str]] = []
        done_bytes, first = 0, 0
        for n, (entry_id, payload) in enumerate(entries):
            done_bytes += len(payload or b"")
            if done_bytes > LARGE_BATCH_BYTES and n > first:
                # a big batch goes out in slices: no pipeline of hundreds of MB
                outbox.add(self.state.flush())
                pipe = self.store.pipeline()
                self._batch_writes(outbox, bad, [i for i, _ in entries[first:n]])(pipe)
                pipe.execute()
                outbox, bad, done_bytes, first = Outbox(), [], len(payload or b""), n
            try:
                events = decode_entry(entry_id, payload, now)
            except MalformedMessage as exc:
                log.error("setting aside malformed entry %s: %s", entry_id, exc)
                bad.append((entry_id, payload, str(exc)))
                continue
            try:
                outbox.add(self.state.handle(*events, flush=False))
            except Exception as exc:  # a bug must not stop the cluster: log, set aside
                log.exception("failed to handle entry %s", entry_id)
                bad.append((entry_id, payload, f"handler error: {exc!r}"))
        outbox.add(self.state.flush())  # each task changed in this batch is written once
        if size > LARGE_BATCH_BYTES and gc.get_threshold()[2] >= 1000:  # (tune_gc ran)
            gc.freeze()  # the new graph's objects: never walked by a collection again
        return self._batch_writes(outbox, bad, [entry_id for entry_id, _ in entries[first:]])

    def _batch_writes(
        self, outbox: Outbox, bad: list[tuple[bytes, bytes | None, str]], ids: list[bytes]
    ) -> Callable[[Any], None]:
        keys = self.store.keys

        def write(pipe: Any) -> None:
            outbox.write(pipe, self.store)
            for entry_id, payload, reason in bad:
                pipe.xadd(
                    keys.deadletter,
                    {
                        "stream": keys.sched,
                        "id": entry_id,
                        "reason": reason[:500],
                        "raw": (payload or b"")[:4096],
                    },
                    maxlen=10_000,
                    approximate=True,
                )
            pipe.xack(keys.sched, SCHEDULER_GROUP, *ids)
            self._deletes.add(ids)
            due = self._deletes.take_due()
            if due:
                pipe.xdel(keys.sched, *due)

        return write

    def _lost_clients(self) -> list[str]:
        """Known clients whose heartbeat is older than ``client_ttl`` (checked now and then)."""
        now = time.time()
        if now < self._last_client_check + min(5.0, self.client_ttl / 4):
            return []
        self._last_client_check = now
        try:
            beats = self.store.redis.hgetall(self.store.keys.clients)
        except ConnectionErrors:
            return []
        lost: list[str] = []
        for raw_id, blob in beats.items():
            client = raw_id.decode()
            try:
                last_seen = float(messages.unpack(blob)["last_seen"])
            except Exception:
                continue
            if client in self.state.clients and now - last_seen > self.client_ttl:
                lost.append(client)
        return lost

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
                outbox.add(self.state.handle(ev.ClientLeft(f"client-lost-{now}", now, client)))
            except Exception:  # a bug must not stop the cluster
                log.exception("failed to release the keys of lost client %s", client)
        keys = self.store.keys

        def write(pipe: Any) -> None:
            if pending is not None:
                pending(pipe)
            outbox.write(pipe, self.store)
            pipe.hdel(keys.clients, *lost)
            pipe.delete(*(keys.client_stream(client) for client in lost))

        return write

    def stop(self) -> None:
        self.stop_event.set()


def run_scheduler(url: str, cluster: str = "default") -> None:
    server = SchedulerServer.from_url(url, cluster)
    log.info("scheduler serving cluster %r on %s", cluster, url)
    server.run()
