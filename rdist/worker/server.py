"""The worker process: reads its stream, gathers inputs, runs tasks, reports in batches.

Threads: the stream loop (assignments), ``nthreads`` executors, one reporter (batches
completions into one pipeline), a heartbeat, the data server, and a few dependency fetchers.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import psutil

from rdist.comm import buffers
from rdist.comm.transfer import decode_items, encode_items  # noqa: F401  (re-exported)
from rdist.protocol import messages, serialize, spec, taskstream
from rdist.protocol.messages import MalformedMessage
from rdist.store import RedisStore, connect
from rdist.store.connection import BatchedDeletes, ConnectionErrors, EmptyReadGuard, ResponseError
from rdist.store.keys import PAYLOAD_FIELD, WORKER_GROUP
from rdist.worker import execution, handoff
from rdist.worker.dataplane import DATA_OPS, DataPlane, check_data_message, listen_address_of
from rdist.worker.memory import MemoryFractions, MemoryMonitor, SpillBuffer, return_freed_memory
from rdist.worker.sizeof import sizeof
from rdist.worker.state import Decisions, WorkerState, WTask

log = logging.getLogger("rdist.worker")

#: Results up to this size (serialized) are also stored in Redis.
REDIS_RESULT_BYTES = 64 * 1024
#: Results up to this size travel inside the completion and client notification.
INLINE_BYTES = 16 * 1024
BATCH_ENTRIES = 100
BLOCK_MS = 500
#: How often the stream loop also reads its own pending (delivered, unacknowledged)
#: entries: a read whose reply was lost (Redis restarting as it answered; the client may
#: retry it without telling us) delivered entries that never come from ">" again.
PENDING_CHECK_SECONDS = 2.0
HEARTBEAT_SECONDS = 1.0
HEARTBEATS_MAXLEN = 1000
KNOWN_OPS = frozenset({"batch", "run", "stop", "restart"}) | DATA_OPS

_thread_state = threading.local()
_PROCESS = psutil.Process()


def get_worker() -> Worker:
    """The worker running the current task (as ``distributed.get_worker``)."""
    worker = getattr(_thread_state, "worker", None)
    if worker is None:
        raise ValueError("No worker found: get_worker() works only inside a running task")
    return worker


class Worker:
    def __init__(
        self,
        store: RedisStore,
        nthreads: int = 1,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        memory_limit: int = 0,
        resources: dict[str, float] | None = None,
        contact_host: str | None = None,
        listen_address: str | None = None,
        contact_address: str | None = None,
        transfer: str | None = None,
        memory_fractions: MemoryFractions | None = None,
        spill_directory: str | None = None,
    ) -> None:
        self.started = time.time()  #: start (or last restart) time, for client.restart()
        self.under_nanny = False  #: set by run_worker: a nanny restarts us when we exit
        self.handoff_on_close = True  #: hand unique data to peers when leaving
        self.store = store
        self.nthreads = max(1, nthreads)
        self.memory_limit = memory_limit
        self.resources = dict(resources or {})
        self.state = WorkerState()
        self.lock = threading.RLock()
        fractions = memory_fractions or MemoryFractions.from_env()
        #: key -> value, spilling least recently used data to disk past the target fraction
        self.data = SpillBuffer(int(fractions.target * memory_limit), spill_directory)
        self.nbytes = self.data.nbytes
        self.monitor = MemoryMonitor(self.data, memory_limit, fractions, self._set_paused)
        self.status = "running"  #: "paused" while memory is past the pause fraction
        self.running = threading.Event()  #: clear while paused: no new tasks, no new fetches
        self.running.set()
        self.stop_event = threading.Event()
        #: set when close() has finished, so a second caller can wait for the first
        self.closed = threading.Event()
        self.ready = execution.ReadyQueue(self.nthreads, self.resources)
        self.durations: dict[str, float] = {}  #: key prefix -> last duration (inline runs)
        self._client: Any = None  #: get_client() inside tasks
        self._stream_owner: int | None = None  #: the thread reading our stream
        #: entries handled but not acknowledged yet (by a stream thread that seceded, too):
        #: in our pending list, yet not lost
        self._in_hand: set[bytes] = set()
        self.completions: queue.Queue[list[Any] | None] = queue.Queue()
        self.funcs: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()
        self._seq = 0
        self.secret = self._cluster_secret()
        self.dataplane = DataPlane(
            self,
            listen_address_of(host, port, listen_address),
            contact_address or contact_host,
            transfer,
        )
        self.server, self.peers = self.dataplane.listener, self.dataplane.pool
        self.address = self.dataplane.address
        self.name = name or self.address
        self.stream = store.keys.worker_stream(self.address)
        self.executed = 0
        #: dependencies copied here since the last report; the scheduler records the
        #: replicas (who_has) so that it frees them when the key is released
        self.replicas: list[str] = []
        self._threads: list[threading.Thread] = []
        self._reader = store.clone()
        self._reporter_store = store.clone()

    # -- life cycle ----------------------------------------------------------------------
    def _cluster_secret(self) -> bytes:
        meta = self.store.keys.meta
        self.store.redis.hsetnx(meta, "secret", secrets.token_hex(32))
        return bytes.fromhex(self.store.redis.hget(meta, "secret").decode())

    def info(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "name": self.name,
            "nthreads": self.nthreads,
            "memory_limit": self.memory_limit,
            "resources": self.resources,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "status": self.status,
            "started": self.started,
            "transfer": self.dataplane.mode,
        }

    def start(self) -> None:
        self.server.start()
        self._announce()
        targets: list[tuple[str, Callable[[], None]]] = [
            ("rdist-stream", self._stream_loop),
            ("rdist-report", self._report_loop),
            ("rdist-heartbeat", self._heartbeat_loop),
        ]
        targets += [(f"rdist-exec-{i}", self._execute_loop) for i in range(self.nthreads)]
        if self.memory_limit:
            targets.append(("rdist-memory", lambda: self.monitor.run(self.stop_event)))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker %s (%s) started with %d threads", self.address, self.name, self.nthreads)

    def _announce(self) -> None:
        self.store.ensure_group(self.stream, WORKER_GROUP, start="0")
        keys = self.store.keys
        info = self.info()
        pipe = self.store.pipeline()
        pipe.xadd(keys.sched, {PAYLOAD_FIELD: messages.encode("worker-join", **info)})
        pipe.hset(keys.workers, self.address, messages.pack({**info, **self._metrics()}))
        pipe.execute()

    def _restart(self) -> None:
        """``client.restart()``: under a nanny, leave and let it start a fresh process;
        otherwise drop every task and all data and join again (a task still running is
        abandoned: its result is discarded when it ends)."""
        self.started = time.time()
        if self.under_nanny:
            self.handoff_on_close = False
            threading.Thread(target=self.close, daemon=True).start()
            return
        self._start_afresh()

    def _rejoin(self) -> None:
        """Our stream is gone: the scheduler declared us dead (e.g. we stalled past the
        heartbeat timeout) and rescheduled our work. Start afresh and join again."""
        log.warning(
            "worker %s was removed by the scheduler: dropping its state and rejoining", self.address
        )
        self._start_afresh()

    def _start_afresh(self) -> None:
        """Forget every task and all data, then join the cluster again."""
        with self.lock:
            self.state = WorkerState()
            self.data.clear()
            self.nbytes.clear()
            self.replicas = []
        self._announce()

    def close(self) -> None:
        """Leave cleanly: tell the scheduler, stop threads, close the data server."""
        if self.stop_event.is_set():
            if threading.current_thread() not in self._threads:
                self.closed.wait(10)  # e.g. the process exiting while a SIGTERM close runs
            return
        self.stop_event.set()
        keys = self.store.keys
        try:
            moved = handoff.hand_off(self) if self.handoff_on_close else {}
            pipe = self.store.pipeline()
            for peer, peer_keys in moved.items():  # before we leave, so nothing counts as lost
                pipe.xadd(
                    keys.sched,
                    {PAYLOAD_FIELD: messages.encode("add-keys", worker=peer, keys=peer_keys)},
                )
            pipe.xadd(
                keys.sched, {PAYLOAD_FIELD: messages.encode("worker-leave", address=self.address)}
            )
            pipe.hdel(keys.workers, self.address)
            pipe.execute()
        except ConnectionErrors:
            log.warning("could not announce departure of %s: redis unavailable", self.address)
        self.ready.close()
        self.running.set()  # wake threads waiting out a pause
        self.completions.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        try:  # hdel again: a heartbeat racing the first one may have re-added us
            self.store.pipeline().delete(self.stream).hdel(keys.workers, self.address).execute()
        except ConnectionErrors:
            pass
        self.dataplane.close()
        self.data.close()  # removes the spill directory
        for store in (self._reader, self._reporter_store):
            store.close()
        self.closed.set()

    def run_forever(self) -> None:
        self.start()
        self.stop_event.wait()

    # -- the stream loop -----------------------------------------------------------------
    def _stream_loop(self, reader: RedisStore | None = None) -> None:
        guard = EmptyReadGuard(self.stop_event)
        ack: list[bytes] = []
        reports: list[list[Any]] = []  #: outcomes of tasks run here, sent with the next read
        reader = reader or self._reader
        me = self._stream_owner = threading.get_ident()
        _thread_state.worker = self  # quick tasks run on this thread too
        read_pending, pending_due = False, time.monotonic() + PENDING_CHECK_SECONDS
        deletes = BatchedDeletes()  #: handled (acknowledged) entries of our stream
        while not self.stop_event.is_set():
            if self._stream_owner != me:  # a task run here seceded: another thread reads now
                if reports:
                    self._report(reports)
                if ack:
                    reader.pipeline().xack(self.stream, WORKER_GROUP, *ack).xdel(
                        self.stream, *ack
                    ).execute()
                    self._in_hand.difference_update(ack)
                reader.close()
                return
            started = time.monotonic()
            if started >= pending_due:
                read_pending, pending_due = True, started + PENDING_CHECK_SECONDS

            def before(pipe: Any, ids: list[bytes] = ack, done: list[list[Any]] = reports) -> None:
                if done:
                    self._report(done, into=pipe)
                if ids:
                    pipe.xack(self.stream, WORKER_GROUP, *ids)
                    deletes.add(ids)
                due = deletes.take_due()
                if due:
                    pipe.xdel(self.stream, *due)

            try:
                entries = reader.read_group(
                    self.stream,
                    WORKER_GROUP,
                    self.address,
                    BATCH_ENTRIES,
                    BLOCK_MS,
                    before=before,
                    pending=read_pending,
                )
            except ConnectionErrors as exc:
                if self.stop_event.is_set():
                    return
                log.warning("worker %s: redis unavailable (%s); retrying", self.address, exc)
                self.stop_event.wait(0.5)
                read_pending = True  # the failed read may have been served: see above
                continue
            except ResponseError as exc:
                if self.stop_event.is_set():
                    return
                if "NOGROUP" not in str(exc):
                    raise
                self._rejoin()
                continue
            self._in_hand.difference_update(ack)  # acknowledged by this round trip
            if read_pending:
                read_pending = False
                entries = [e for e in entries if e[0] not in self._in_hand]
            guard.after_read(bool(entries), started, BLOCK_MS)
            ack = [entry_id for entry_id, _ in entries]
            self._in_hand.update(ack)
            reports = []
            if entries:
                try:
                    self._handle_entries(entries)
                except ConnectionErrors as exc:
                    # a batch loads its specs and inputs before it changes anything: left
                    # pending, it comes back with the next read of our pending entries
                    log.warning("worker %s: redis unavailable (%s); retrying", self.address, exc)
                    self._in_hand.difference_update(ack)
                    ack, read_pending = [], True
                    self.stop_event.wait(0.5)
                    continue
                reports = self._run_inline()

    def _handle_entries(self, entries: list[tuple[bytes, bytes | None]]) -> None:
        actions: list[list[Any]] = []
        for entry_id, payload in entries:
            try:
                msg = messages.decode(payload, KNOWN_OPS)
                check_message(msg)
            except MalformedMessage as exc:
                log.error("worker %s: setting aside entry %s: %s", self.address, entry_id, exc)
                self.store.set_aside(self.stream, entry_id, payload, str(exc))
                continue
            op = msg["op"]
            if op == "batch":
                actions.extend(msg["a"])
            elif op == "run":
                threading.Thread(target=self._run_function, args=(msg,), daemon=True).start()
            elif op == "stop":
                threading.Thread(target=self.close, daemon=True).start()
            elif op == "restart":
                self._restart()
            elif op in DATA_OPS:
                self.dataplane.handle_message(msg)
        if actions:
            self._apply(actions)

    def _apply(self, actions: list[list[Any]]) -> None:
        """Load what new tasks need from Redis in one round trip, then hand them to the state."""
        specs = self._load_batch(actions)
        out = Decisions()
        stolen: list[list[Any]] = []
        with self.lock:
            for action in actions:
                if action[0] == "c":
                    self.state.compute(
                        action[1],
                        action[2],
                        action[3],
                        out,
                        specs.get(action[1]),
                        action[6] if len(action) > 6 else None,
                        action[4],
                    )
                elif action[0] == "f":
                    for key in action[1]:
                        self.state.free(key, out)
                elif action[0] == "s":
                    stolen.append(["t", action[1], self.state.steal(action[1])])
        if stolen:
            self.completions.put(stolen)
        for key in out.drop_data:
            self.data.discard(key)
        if out.already_done:
            clients = {a[1]: a[6] for a in actions if a[0] == "c" and len(a) > 6}
            self.completions.put([self._done_record(k, clients.get(k)) for k in out.already_done])
        if out.fetch:
            self._fetch_from_peers(out.fetch)
        self._queue_ready_here(out.ready)

    def _load_batch(self, actions: list[list[Any]]) -> dict[str, Any]:
        """Specs of new tasks and their small dependencies (stored in Redis) in one pipeline."""
        # a key freed and computed again in one batch (released, then resubmitted) needs
        # its spec even though its old result is still here when the batch is loaded
        freed = {key for a in actions if a[0] == "f" for key in a[1]}
        with self.lock:
            needed = [
                a
                for a in actions
                if a[0] == "c"
                and (
                    a[1] in freed or (a[1] not in self.state.tasks and a[1] not in self.state.have)
                )
            ]
            small = list(
                {
                    dep
                    for a in actions
                    if a[0] == "c"
                    for dep, info in a[3].items()
                    if info[2] and dep not in self.state.have
                }
            )
        raw: dict[str, bytes | None] = {a[1]: a[5] for a in needed if len(a) > 5 and a[5]}
        new = [a[1] for a in needed if a[1] not in raw]
        if new or small:
            keys = self.store.keys
            pipe = self.store.raw_pipeline()
            if new:
                pipe.hmget(keys.specs, new)
            if small:
                pipe.hmget(keys.results, small)
            replies = pipe.execute()
            if new:
                raw.update(zip(new, replies[0]))
            if small:
                for key, blob in zip(small, replies[-1]):
                    if blob is not None:  # missing ones are fetched from peers (or fail) later
                        with self.lock:
                            self._store_value(key, serialize.from_blob(blob), len(blob))
                            self.state.have.add(key)
                            self.replicas.append(key)
        return self._unpack_specs(list(raw), list(raw.values())) if raw else {}

    def _unpack_specs(self, keys: list[str], raws: list[bytes | None]) -> dict[str, Any]:
        """key -> (function, args blob, mode), or the error that running it should raise."""
        specs: dict[str, Any] = {}
        unpacked = []
        for key, raw in zip(keys, raws):
            if raw is None:
                specs[key] = RuntimeError(f"task {key!r} has no spec in Redis (was it released?)")
                continue
            try:
                unpacked.append((key, spec.unpack_spec(raw)))
            except Exception as exc:
                specs[key] = RuntimeError(f"task {key!r} has a corrupt spec: {exc}")
        unknown = list({h for _, (h, _, _) in unpacked if h and h not in self.funcs})
        if unknown:
            for func_hash, raw in zip(
                unknown, self.store.redis.hmget(self.store.keys.funcs, unknown)
            ):
                self._remember_function(func_hash, raw)
        for key, (func_hash, args_blob, mode) in unpacked:
            func = self.funcs.get(func_hash) if func_hash else None
            if func_hash and func is None:
                specs[key] = RuntimeError(f"the function of task {key!r} cannot be loaded")
            else:
                specs[key] = (func, args_blob, mode)
        return specs

    def _remember_function(self, func_hash: bytes, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            self.funcs[func_hash] = serialize.loads([raw])
        except serialize.SerializationError as exc:
            log.error("worker %s: cannot unpickle a task function: %s", self.address, exc)
            return
        if len(self.funcs) > 1000:
            self.funcs.popitem(last=False)

    def _enqueue(self, tasks: list[WTask]) -> None:
        self.ready.put(tasks)

    # -- dependencies ----------------------------------------------------------------------
    def _fetch_from_peers(self, wanted: dict[str, tuple[list[str], int, bool]]) -> None:
        """Large inputs come from the peers holding them, in batches (``dataplane``); each
        batch ends in :meth:`_fetched`."""
        self.dataplane.fetch(wanted)

    def wait_until_running(self) -> None:
        """Block while the worker is paused (memory); returns at once when it runs."""
        self.running.wait()

    def _set_paused(self, paused: bool) -> None:
        """The memory monitor's verdict: a paused worker starts nothing new, and the
        scheduler assigns it nothing new, until memory is back under the pause fraction."""
        self.status = "paused" if paused else "running"
        (self.running.clear if paused else self.running.set)()
        keys = self.store.keys
        try:
            pipe = self.store.pipeline()
            pipe.xadd(
                keys.sched,
                {
                    PAYLOAD_FIELD: messages.encode(
                        "worker-status", address=self.address, status=self.status
                    )
                },
            )
            pipe.hset(keys.workers, self.address, messages.pack({**self.info(), **self._metrics()}))
            pipe.execute()
        except ConnectionErrors as exc:
            log.warning("worker %s: cannot report status %s: %s", self.address, self.status, exc)

    def _fetched(self, got: list[str], lost: list[str], tried: list[str] = ()) -> None:  # type: ignore[assignment]
        out = Decisions()
        with self.lock:
            self.state.fetched(got, out)
            failed = self.state.fetch_failed(lost) if lost else []
        if failed:  # not the task's fault: the scheduler finds (or recomputes) the data
            self.completions.put([["x", k, lost, list(tried)] for k in failed])
        self._enqueue(out.ready)

    def _store_value(
        self, key: str, value: Any, nbytes: int, frames: list[Any] | None = None
    ) -> None:
        self.data.set(key, value, nbytes, frames)

    # -- execution -----------------------------------------------------------------------
    def _execute_loop(self) -> None:
        _thread_state.worker = self
        while True:
            self.wait_until_running()
            ts = self.ready.get()
            if ts is None or self.stop_event.is_set():
                return
            record, context = self._run_one(ts)
            if not len(self.ready) and self.completions.empty():
                self._report([record])  # nothing else to batch with: skip the reporter's hop
            else:
                self.completions.put([record])
            if context.replaced:  # it seceded: a replacement thread took its place
                return

    def _run_one(self, ts: WTask) -> tuple[list[Any], execution.TaskContext]:
        """Run a task the ready queue handed out (holding a slot) and give the slot back."""
        context = execution.TaskContext(self, ts)
        record: list[Any] = []
        with self.lock:
            started = self.state.start(ts)
        if started:
            execution.set_current(context)
            try:
                record = self._execute(ts)
            finally:
                execution.set_current(None)
            if record and record[0] == "m":
                self.durations[ts.key.rpartition("-")[0]] = record[4]
                woken = Decisions()
                with self.lock:  # tasks co-assigned here that waited for this result
                    if ts.key in self.state.have and ts.key in self.state.waiting_for:
                        self.state.fetched([ts.key], woken)
                # an executor takes them: the stream thread reports what it ran only when
                # it reads again, and a chain's next link waits on the scheduler hearing
                self._enqueue(woken.ready)
        self.ready.done(ts, seceded=context.seceded)
        return record, context

    def _queue_ready_here(self, tasks: list[WTask]) -> None:
        """Queue tasks made ready by the stream thread, which runs the quick ones itself
        right after (see _run_inline): those wake no executor thread."""
        if not self.running.is_set():  # paused: nothing runs inline
            self._enqueue(tasks)
            return
        quick: list[WTask] = []
        other: list[WTask] = []
        for ts in tasks:
            (quick if self._is_fast(ts) else other).append(ts)
        self.ready.put(quick, wake=False)
        self._enqueue(other)

    def _is_fast(self, ts: WTask) -> bool:
        duration = self.durations.get(ts.key.rpartition("-")[0])
        return duration is not None and duration < execution.INLINE_SECONDS

    def _run_inline(self) -> list[list[Any]]:
        """Run ready tasks known to be quick on this (the stream) thread while a slot is
        free: no hand-off to an executor thread, one report for all of them (sent with the
        next read, in the same round trip)."""
        records: list[list[Any]] = []
        deadline = time.monotonic() + (execution.INLINE_BUDGET if self.running.is_set() else 0)
        try:
            while time.monotonic() < deadline:
                ts = self.ready.try_get(self._is_fast)
                if ts is None:
                    break
                record, context = self._run_one(ts)
                records.append(record)
                if context.replaced:  # it seceded: this thread must go back to reading
                    break
        finally:
            self.ready.wake()  # what is left (budget spent, slow or paused) goes to executors
        return records

    def _seceded(self, ts: WTask) -> None:
        """``secede()`` in ``ts``: free its slot, start a replacement thread, tell the
        scheduler (it no longer counts the task against our threads)."""
        context = execution.current()
        if context is not None:
            context.replaced = True
        if self._stream_owner == threading.get_ident():  # seceded on the stream thread
            self._stream_owner = None
            reader = self._reader.clone()
            thread = threading.Thread(
                target=self._stream_loop, args=(reader,), name="rdist-stream", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self.ready.release_slot()
        thread = threading.Thread(target=self._execute_loop, name="rdist-exec-x", daemon=True)
        thread.start()
        self._threads.append(thread)
        self.completions.put([["s", ts.key]])

    def task_client(self) -> Any:
        """The client tasks on this worker use (``get_client()``), created on first use."""
        with self.lock:
            if self._client is None:
                from rdist.client.client import Client

                self._client = Client(
                    self.store.url,
                    cluster_name=self.store.keys.cluster,
                    set_as_default=False,
                    name=f"worker-{self.name}",
                )
                self._client._on_worker = True
            return self._client

    def _execute(self, ts: WTask) -> list[Any]:
        start = time.time()
        _thread_state.key = ts.key
        try:
            if isinstance(ts.spec, Exception):
                raise ts.spec
            func, args_blob, mode = ts.spec
            value = spec.run_spec(func, args_blob, mode, self.data)
        except BaseException as exc:  # the task's failure is data, not ours
            duration = time.time() - start
            with self.lock:
                report = self.state.finished(ts.key, stored=False)
            return (
                self._error_record(ts.key, exc, traceback.format_exc(), duration) if report else []
            )
        duration = time.time() - start
        self.executed += 1
        try:
            record, frames = self._memory_record(ts.key, value, duration)
            record.append(ts.clients)
        except serialize.SerializationError as exc:
            with self.lock:
                report = self.state.finished(ts.key, stored=False)
            error = TypeError(f"result of task {ts.key!r} cannot be serialized: {exc}")
            return self._error_record(ts.key, error, "", duration) if report else []
        self._store_value(ts.key, value, record[2], frames)  # may spill: not under the lock
        with self.lock:
            if not self.state.finished(ts.key, stored=True):
                self.data.discard(ts.key)
                return []
        return record

    def _memory_record(
        self, key: str, value: Any, duration: float
    ) -> tuple[list[Any], list[Any] | None]:
        """``["m", key, nbytes, blob-or-None, duration, type]``; blob set for small results.
        Also the serialized frames of a large result, kept for its first transfer or spill."""
        estimate = sizeof(value)
        blob = None
        if estimate <= REDIS_RESULT_BYTES:
            blob = serialize.to_blob(value)
            if len(blob) > REDIS_RESULT_BYTES:
                blob = None
        frames = None
        if blob is None:
            # Large results stay in memory, yet must be transferable: fail now (erring the
            # task) rather than at the first fetch. The frames are kept, so this is the only
            # pickling (buffers stay out of band: for arrays they are views, free).
            frames = serialize.dumps(value)
        nbytes = len(blob) if blob is not None else estimate
        return ["m", key, nbytes, blob, duration, type(value).__name__], frames

    def _done_record(self, key: str, clients: list[str] | None = None) -> list[Any]:
        return [
            "m",
            key,
            self.nbytes.get(key, 0),
            None,
            0.0,
            type(self.data.get(key)).__name__,
            clients,
        ]

    def _error_record(self, key: str, exc: BaseException, tb: str, duration: float) -> list[Any]:
        try:
            blob = serialize.to_blob((exc, tb))
        except serialize.SerializationError:
            blob = serialize.to_blob((RuntimeError(f"{type(exc).__name__}: {exc}"), tb))
        return ["e", key, blob, duration]

    # -- reporting -------------------------------------------------------------------------
    def _report_loop(self) -> None:
        """Drain completions into one pipeline: results to Redis, one message to the scheduler."""
        while True:
            first = self.completions.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    item = self.completions.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.completions.put(None)
                    break
                batch.append(item)
            self._report(batch)

    def _report(self, batch: list[list[Any]], into: Any = None) -> None:
        done, erred, results, missing = [], [], {}, []
        notify: dict[str, list[list[Any]]] = {}  #: client -> items it is told directly
        seceded: list[str] = []
        stolen: list[list[Any]] = []
        for group in batch:
            records = group if group and isinstance(group[0], list) else [group]
            for rec in records:
                if not rec:
                    continue
                if rec[0] == "m":
                    _, key, nbytes, blob, duration, type_name, clients = rec
                    in_redis = blob is not None
                    if in_redis:
                        results[key] = blob
                    inline = blob if in_redis and len(blob) <= INLINE_BYTES else None
                    done.append([key, nbytes, in_redis, inline, duration, type_name])
                    if clients:
                        info = {
                            "nbytes": nbytes,
                            "redis": in_redis,
                            "who_has": [self.address],
                            "type": type_name,
                        }
                        if inline is not None:
                            info["inline"] = inline
                        for client in clients:
                            notify.setdefault(client, []).append([key, "memory", info])
                elif rec[0] == "x":
                    missing.append(rec[1:])
                elif rec[0] == "s":
                    seceded.append(rec[1])
                elif rec[0] == "t":
                    stolen.append(rec[1:])
                else:
                    _, key, blob, duration = rec
                    results[key] = blob
                    erred.append([key, blob, duration])
        with self.lock:
            replicated, self.replicas = self.replicas, []
        if not (done or erred or replicated or missing or seceded or stolen):
            return
        keys = self.store.keys
        runs = (
            taskstream.encode_batch(
                self.address, threading.current_thread().name, time.time(), done, erred
            )
            if done or erred
            else None
        )
        msg = messages.encode(
            "task-done",
            worker=self.address,
            done=done,
            erred=erred,
            replicated=replicated,
            missing=missing,
            seceded=seceded,
            stolen=stolen,
        )

        def queue(pipe: Any) -> None:
            if results:  # before the notifications: a client may read them at once
                pipe.hset(keys.results, mapping=results)
            # clients first: they wait on this; the scheduler copes with a client message
            # about a key (release, dependents) arriving before the key's completion
            for client, items in notify.items():
                pipe.xadd(
                    keys.client_stream(client),
                    {PAYLOAD_FIELD: messages.encode("notify", items=items)},
                )
            pipe.xadd(keys.sched, {PAYLOAD_FIELD: msg})
            if runs is not None:  # one entry per batch: the dashboard's task stream
                pipe.xadd(
                    keys.taskstream,
                    {PAYLOAD_FIELD: runs},
                    maxlen=taskstream.TASKSTREAM_MAXLEN,
                    approximate=True,
                )

        if into is not None:  # the caller sends it (with its next read)
            queue(into)
            return
        for attempt in range(30):
            try:
                pipe = self._reporter_store.raw_pipeline()
                queue(pipe)
                pipe.execute()
                return
            except ConnectionErrors as exc:
                log.warning("worker %s: cannot report (%s); retrying", self.address, exc)
                time.sleep(min(2.0, 0.1 * (attempt + 1)))

    # -- heartbeats --------------------------------------------------------------------------
    def _metrics(self) -> dict[str, Any]:
        proc = _PROCESS  # one object: cpu_percent(None) measures since its previous call
        return {
            "memory": proc.memory_info().rss,
            "cpu": proc.cpu_percent(None),
            "executing": sum(1 for t in self.state.tasks.values() if t.state.value == "executing"),
            "stored": len(self.data),
            "stored_bytes": self.data.memory_bytes,
            "spilled_bytes": self.data.spilled_bytes,
            "executed": self.executed,
            "last_seen": time.time(),
        }

    def _heartbeat_loop(self) -> None:
        keys = self.store.keys
        store = self.store.clone()
        while not self.stop_event.wait(HEARTBEAT_SECONDS):
            buffers.POOL.trim()  # receive buffers idle for a while go back to the system
            try:
                metrics = self._metrics()
                pipe = store.pipeline()
                pipe.hset(keys.workers, self.address, messages.pack({**self.info(), **metrics}))
                pipe.xadd(
                    keys.heartbeats,
                    {PAYLOAD_FIELD: messages.pack({"worker": self.address, **metrics})},
                    maxlen=HEARTBEATS_MAXLEN,
                    approximate=True,
                )
                pipe.execute()
            except ConnectionErrors as exc:
                log.warning("worker %s: heartbeat failed: %s", self.address, exc)
        store.close()

    # -- client.run --------------------------------------------------------------------------
    def _run_function(self, msg: dict[str, Any]) -> None:
        _thread_state.worker = self
        try:
            func, args, kwargs = serialize.from_blob(msg["func"])
            value = func(*args, **kwargs)
            reply = {"ok": True, "value": serialize.to_blob(value)}
        except BaseException as exc:
            reply = {"ok": False, "value": serialize.to_blob((exc, traceback.format_exc()))}
        self.store.redis.xadd(
            self.store.keys.client_stream(msg["client"]),
            {
                PAYLOAD_FIELD: messages.encode(
                    "run-result", id=msg["id"], worker=self.address, **reply
                )
            },
        )


def check_message(msg: dict[str, Any]) -> None:
    """Raise MalformedMessage unless ``msg`` has the shape its op needs (a bad entry must be
    set aside, not kill the stream loop)."""
    op = msg["op"]
    if op == "batch":
        actions = msg.get("a")
        if not isinstance(actions, list) or not all(_valid_action(a) for a in actions):
            raise MalformedMessage(f"batch with malformed actions: {actions!r:.200}")
    elif op == "run":
        if not (
            isinstance(msg.get("client"), str)
            and isinstance(msg.get("id"), str)
            and isinstance(msg.get("func"), bytes)
        ):
            raise MalformedMessage("run message needs client, id and func")
    elif op in DATA_OPS:
        check_data_message(msg)


def _valid_action(action: Any) -> bool:
    if not isinstance(action, list) or not action:
        return False
    if action[0] == "c":
        return (
            len(action) >= 4
            and isinstance(action[1], str)
            and isinstance(action[2], list)
            and isinstance(action[3], dict)
            and all(isinstance(v, list) and len(v) == 3 for v in action[3].values())
        )
    if action[0] == "f":
        return len(action) == 2 and isinstance(action[1], list)
    if action[0] == "s":
        return len(action) == 2 and isinstance(action[1], str)
    return False


def run_worker(
    url: str, cluster: str = "default", nanny_fd: int | None = None, **kwargs: Any
) -> None:
    import signal

    from rdist.procs import tune_gc

    return_freed_memory()  # before the worker allocates anything
    worker = Worker(connect(url, cluster), **kwargs)
    worker.under_nanny = nanny_fd is not None
    tune_gc()

    def on_term(*_: Any) -> None:
        threading.Thread(target=worker.close, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    worker.start()
    if nanny_fd is not None:  # tell the nanny who we are, so it can report our death
        os.write(nanny_fd, f"{worker.address}\n".encode())
        os.close(nanny_fd)
    try:
        while not worker.stop_event.wait(1.0):
            pass
    finally:
        worker.close()
    sys.exit(0)
