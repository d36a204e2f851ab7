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
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import psutil

from rdist.comm.tcp import ConnectionPool, Server
from rdist.protocol import messages, serialize, spec, taskstream
from rdist.protocol.messages import MalformedMessage
from rdist.store import RedisStore, connect
from rdist.store.connection import ConnectionErrors, EmptyReadGuard, ResponseError
from rdist.store.keys import PAYLOAD_FIELD, WORKER_GROUP
from rdist.worker.state import Decisions, WorkerState, WTask
from rdist.worker.sizeof import sizeof

log = logging.getLogger("rdist.worker")

#: Results up to this size (serialized) are also stored in Redis.
REDIS_RESULT_BYTES = 64 * 1024
#: Results up to this size travel inside the completion and client notification.
INLINE_BYTES = 16 * 1024
BATCH_ENTRIES = 100
BLOCK_MS = 500
HEARTBEAT_SECONDS = 1.0
HEARTBEATS_MAXLEN = 1000
KNOWN_OPS = frozenset({"batch", "run", "stop"})

_thread_state = threading.local()
_PROCESS = psutil.Process()


def get_worker() -> "Worker":
    """The worker running the current task (as ``distributed.get_worker``)."""
    worker = getattr(_thread_state, "worker", None)
    if worker is None:
        raise ValueError("No worker found: get_worker() works only inside a running task")
    return worker


class Worker:
    def __init__(self, store: RedisStore, nthreads: int = 1, name: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, memory_limit: int = 0,
                 resources: dict[str, float] | None = None,
                 contact_host: str | None = None) -> None:
        self.store = store
        self.nthreads = max(1, nthreads)
        self.memory_limit = memory_limit
        self.resources = dict(resources or {})
        self.state = WorkerState()
        self.lock = threading.RLock()
        self.data: dict[str, Any] = {}
        self.nbytes: dict[str, int] = {}
        self.stop_event = threading.Event()
        #: set when close() has finished, so a second caller can wait for the first
        self.closed = threading.Event()
        self.ready: queue.PriorityQueue[tuple[tuple[Any, ...], int, WTask | None]] = queue.PriorityQueue()
        self.completions: queue.Queue[list[Any] | None] = queue.Queue()
        self.funcs: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()
        self._seq = 0
        self.secret = self._cluster_secret()
        self.server = Server(host, port, self.secret, self._handle_data_request)
        advertised = contact_host or (self.server.host if self.server.host not in ("0.0.0.0", "::") else socket.gethostname())
        self.address = f"tcp://{advertised}:{self.server.port}"
        self.name = name or self.address
        self.peers = ConnectionPool(self.secret)
        self.fetchers = ThreadPoolExecutor(4, thread_name_prefix="rdist-fetch")
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
        return {"address": self.address, "name": self.name, "nthreads": self.nthreads,
                "memory_limit": self.memory_limit, "resources": self.resources,
                "host": socket.gethostname(), "pid": os.getpid(), "status": "running"}

    def start(self) -> None:
        self.server.start()
        self.store.ensure_group(self.stream, WORKER_GROUP, start="0")
        keys = self.store.keys
        info = self.info()
        pipe = self.store.pipeline()
        pipe.xadd(keys.sched, {PAYLOAD_FIELD: messages.encode("worker-join", **info)})
        pipe.hset(keys.workers, self.address, messages.pack({**info, **self._metrics()}))
        pipe.xadd(keys.events, {PAYLOAD_FIELD: messages.encode("worker-joined", worker=self.address, name=self.name)},
                  maxlen=10_000, approximate=True)
        pipe.execute()
        targets: list[tuple[str, Callable[[], None]]] = [
            ("rdist-stream", self._stream_loop), ("rdist-report", self._report_loop),
            ("rdist-heartbeat", self._heartbeat_loop),
        ]
        targets += [(f"rdist-exec-{i}", self._execute_loop) for i in range(self.nthreads)]
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker %s (%s) started with %d threads", self.address, self.name, self.nthreads)

    def close(self) -> None:
        """Leave cleanly: tell the scheduler, stop threads, close the data server."""
        if self.stop_event.is_set():
            if threading.current_thread() not in self._threads:
                self.closed.wait(10)  # e.g. the process exiting while a SIGTERM close runs
            return
        self.stop_event.set()
        keys = self.store.keys
        try:
            pipe = self.store.pipeline()
            pipe.xadd(keys.sched, {PAYLOAD_FIELD: messages.encode("worker-leave", address=self.address)})
            pipe.hdel(keys.workers, self.address)
            pipe.xadd(keys.events, {PAYLOAD_FIELD: messages.encode("worker-left", worker=self.address)},
                      maxlen=10_000, approximate=True)
            pipe.execute()
        except ConnectionErrors:
            log.warning("could not announce departure of %s: redis unavailable", self.address)
        for _ in range(self.nthreads):
            self.ready.put(((float("inf"),), 0, None))
        self.completions.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        try:  # hdel again: a heartbeat racing the first one may have re-added us
            self.store.pipeline().delete(self.stream).hdel(keys.workers, self.address).execute()
        except ConnectionErrors:
            pass
        self.server.close()
        self.peers.close()
        self.fetchers.shutdown(wait=False, cancel_futures=True)
        for store in (self._reader, self._reporter_store):
            store.close()
        self.closed.set()

    def run_forever(self) -> None:
        self.start()
        self.stop_event.wait()

    # -- the stream loop -----------------------------------------------------------------
    def _stream_loop(self) -> None:
        guard = EmptyReadGuard(self.stop_event)
        ack: list[bytes] = []
        while not self.stop_event.is_set():
            started = time.monotonic()

            def before(pipe: Any, ids: list[bytes] = ack) -> None:
                if ids:
                    pipe.xack(self.stream, WORKER_GROUP, *ids)
                    pipe.xdel(self.stream, *ids)

            try:
                entries = self._reader.read_group(self.stream, WORKER_GROUP, self.address,
                                                  BATCH_ENTRIES, BLOCK_MS, before=before)
            except ConnectionErrors as exc:
                if self.stop_event.is_set():
                    return
                log.warning("worker %s: redis unavailable (%s); retrying", self.address, exc)
                self.stop_event.wait(0.5)
                continue
            except ResponseError as exc:
                if self.stop_event.is_set():
                    return
                if "NOGROUP" not in str(exc):
                    raise
                self.store.ensure_group(self.stream, WORKER_GROUP, start="0")
                continue
            guard.after_read(bool(entries), started, BLOCK_MS)
            ack = [entry_id for entry_id, _ in entries]
            if entries:
                self._handle_entries(entries)

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
        if actions:
            self._apply(actions)

    def _apply(self, actions: list[list[Any]]) -> None:
        """Load what the new tasks need from Redis in one round trip, then hand them to the state."""
        specs = self._load_batch(actions)
        out = Decisions()
        with self.lock:
            for action in actions:
                if action[0] == "c":
                    self.state.compute(action[1], action[2], action[3], out, specs.get(action[1]))
                elif action[0] == "f":
                    for key in action[1]:
                        self.state.free(key, out)
        for key in out.drop_data:
            self.data.pop(key, None)
            self.nbytes.pop(key, None)
        if out.already_done:
            self.completions.put([self._done_record(k) for k in out.already_done])
        if out.fetch:
            self._fetch_from_peers(out.fetch)
        self._enqueue(out.ready)

    def _load_batch(self, actions: list[list[Any]]) -> dict[str, Any]:
        """Specs of new tasks and their small dependencies (stored in Redis) in one pipeline."""
        # a key freed and computed again in one batch (released, then resubmitted) needs
        # its spec even though its old result is still here when the batch is loaded
        freed = {key for a in actions if a[0] == "f" for key in a[1]}
        with self.lock:
            new = [a[1] for a in actions if a[0] == "c" and (a[1] in freed or (
                a[1] not in self.state.tasks and a[1] not in self.state.have))]
            small = list({dep for a in actions if a[0] == "c" for dep, info in a[3].items()
                          if info[2] and dep not in self.state.have})
        if not new and not small:
            return {}
        keys = self.store.keys
        pipe = self.store.pipeline()
        if new:
            pipe.hmget(keys.specs, new)
        if small:
            pipe.hmget(keys.results, small)
        replies = pipe.execute()
        if small:
            for key, blob in zip(small, replies[-1]):
                if blob is not None:  # missing ones are fetched from peers (or fail) later
                    with self.lock:
                        self._store_value(key, serialize.from_blob(blob), len(blob))
                        self.state.have.add(key)
                        self.replicas.append(key)
        return self._unpack_specs(new, replies[0]) if new else {}

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
            for func_hash, raw in zip(unknown, self.store.redis.hmget(self.store.keys.funcs, unknown)):
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
        for ts in tasks:
            self._seq += 1
            self.ready.put((ts.priority, self._seq, ts))

    # -- dependencies ----------------------------------------------------------------------
    def _fetch_from_peers(self, wanted: dict[str, tuple[list[str], int, bool]]) -> None:
        """Large inputs come from the peers holding them: one request per peer, in threads."""
        by_holders: dict[tuple[str, ...], list[str]] = {}
        for key, (holders, _, _) in wanted.items():
            by_holders.setdefault(tuple(holders), []).append(key)
        for holders, keys in by_holders.items():
            self.fetchers.submit(self._fetch_from_holders, list(holders), keys)

    def _fetch_from_holders(self, holders: list[str], keys: list[str]) -> None:
        """Ask each holder in turn for what is still missing."""
        missing = list(keys)
        for peer in holders:
            try:
                values = self.get_from_peer(peer, missing)
            except Exception as exc:
                log.warning("worker %s: fetching %s from %s failed: %s", self.address, missing, peer, exc)
                continue
            with self.lock:
                for key, value in values.items():
                    self._store_value(key, value, sizeof(value))
                self.replicas.extend(values)
            self._fetched(list(values), [])
            missing = [k for k in missing if k not in values]
            if not missing:
                return
        self._fetched([], missing)

    def get_from_peer(self, peer: str, keys: list[str]) -> dict[str, Any]:
        if peer == self.address:
            return {k: self.data[k] for k in keys if k in self.data}
        header, frames = self.peers.request(peer, {"op": "get", "keys": keys})
        return decode_items(header, frames)

    def _fetched(self, got: list[str], lost: list[str]) -> None:
        out = Decisions()
        with self.lock:
            self.state.fetched(got, out)
            failed = self.state.fetch_failed(lost) if lost else []
        if failed:
            error = RuntimeError(f"could not fetch dependencies {lost} (the data is gone)")
            self.completions.put([self._error_record(k, error, "", 0.0) for k in failed])
        self._enqueue(out.ready)

    def _store_value(self, key: str, value: Any, nbytes: int) -> None:
        self.data[key] = value
        self.nbytes[key] = nbytes

    # -- execution -----------------------------------------------------------------------
    def _execute_loop(self) -> None:
        _thread_state.worker = self
        while True:
            _, _, ts = self.ready.get()
            if ts is None or self.stop_event.is_set():
                return
            with self.lock:
                if not self.state.start(ts):
                    continue
            record = self._execute(ts)
            if self.ready.empty() and self.completions.empty():
                self._report([record])  # nothing else to batch with: skip the reporter's hop
            else:
                self.completions.put([record])

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
            return self._error_record(ts.key, exc, traceback.format_exc(), duration) if report else []
        duration = time.time() - start
        self.executed += 1
        try:
            record = self._memory_record(ts.key, value, duration)
        except serialize.SerializationError as exc:
            with self.lock:
                report = self.state.finished(ts.key, stored=False)
            error = TypeError(f"result of task {ts.key!r} cannot be serialized: {exc}")
            return self._error_record(ts.key, error, "", duration) if report else []
        with self.lock:
            self._store_value(ts.key, value, record[2])
            if not self.state.finished(ts.key, stored=True):
                self.data.pop(ts.key, None)
                return []
        return record

    def _memory_record(self, key: str, value: Any, duration: float) -> list[Any]:
        """``["m", key, nbytes, blob-or-None, duration, type]``; blob set for small results."""
        estimate = sizeof(value)
        blob = None
        if estimate <= REDIS_RESULT_BYTES:
            blob = serialize.to_blob(value)
            if len(blob) > REDIS_RESULT_BYTES:
                blob = None
        if blob is None:
            # Large results stay in memory, yet must be transferable: fail now (erring the
            # task) rather than at the first fetch. Buffers stay out of band, so arrays cost
            # nothing here.
            serialize.dumps(value)
        nbytes = len(blob) if blob is not None else estimate
        return ["m", key, nbytes, blob, duration, type(value).__name__]

    def _done_record(self, key: str) -> list[Any]:
        return ["m", key, self.nbytes.get(key, 0), None, 0.0, type(self.data.get(key)).__name__]

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

    def _report(self, batch: list[list[Any]]) -> None:
        done, erred, results = [], [], {}
        for group in batch:
            records = group if group and isinstance(group[0], list) else [group]
            for rec in records:
                if not rec:
                    continue
                if rec[0] == "m":
                    _, key, nbytes, blob, duration, type_name = rec
                    in_redis = blob is not None
                    if in_redis:
                        results[key] = blob
                    inline = blob if in_redis and len(blob) <= INLINE_BYTES else None
                    done.append([key, nbytes, in_redis, inline, duration, type_name])
                else:
                    _, key, blob, duration = rec
                    results[key] = blob
                    erred.append([key, blob, duration])
        with self.lock:
            replicated, self.replicas = self.replicas, []
        if not done and not erred and not replicated:
            return
        keys = self.store.keys
        runs = taskstream.encode_batch(self.address, threading.current_thread().name, time.time(),
                                       done, erred) if done or erred else None
        msg = messages.encode("task-done", worker=self.address, done=done, erred=erred,
                              replicated=replicated)
        for attempt in range(30):
            try:
                pipe = self._reporter_store.pipeline()
                if results:
                    pipe.hset(keys.results, mapping=results)
                pipe.xadd(keys.sched, {PAYLOAD_FIELD: msg})
                if runs is not None:  # one entry per batch: the dashboard's task stream
                    pipe.xadd(keys.taskstream, {PAYLOAD_FIELD: runs},
                              maxlen=taskstream.TASKSTREAM_MAXLEN, approximate=True)
                pipe.execute()
                return
            except ConnectionErrors as exc:
                log.warning("worker %s: cannot report (%s); retrying", self.address, exc)
                time.sleep(min(2.0, 0.1 * (attempt + 1)))

    # -- heartbeats --------------------------------------------------------------------------
    def _metrics(self) -> dict[str, Any]:
        proc = _PROCESS  # one object: cpu_percent(None) measures since its previous call
        return {"memory": proc.memory_info().rss, "cpu": proc.cpu_percent(None),
                "executing": sum(1 for t in self.state.tasks.values() if t.state.value == "executing"),
                "stored": len(self.data), "stored_bytes": sum(self.nbytes.values()),
                "executed": self.executed, "last_seen": time.time()}

    def _heartbeat_loop(self) -> None:
        keys = self.store.keys
        store = self.store.clone()
        while not self.stop_event.wait(HEARTBEAT_SECONDS):
            try:
                metrics = self._metrics()
                pipe = store.pipeline()
                pipe.hset(keys.workers, self.address, messages.pack({**self.info(), **metrics}))
                pipe.xadd(keys.heartbeats, {PAYLOAD_FIELD: messages.pack({"worker": self.address, **metrics})},
                          maxlen=HEARTBEATS_MAXLEN, approximate=True)
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
        self.store.redis.xadd(self.store.keys.client_stream(msg["client"]),
                              {PAYLOAD_FIELD: messages.encode("run-result", id=msg["id"],
                                                              worker=self.address, **reply)})

    # -- data server -------------------------------------------------------------------------
    def _handle_data_request(self, header: dict[str, Any], frames: list[bytearray]) -> tuple[dict[str, Any], list[Any]]:
        op = header.get("op")
        if op == "get":
            return encode_items({k: self.data[k] for k in header.get("keys", ()) if k in self.data})
        if op == "put":
            values = decode_items(header, frames)
            with self.lock:
                for key, value in values.items():
                    self._store_value(key, value, sizeof(value))
                    self.state.have.add(key)
            return {"ok": True}, []
        return {"error": f"unknown op {op!r}"}, []


def check_message(msg: dict[str, Any]) -> None:
    """Raise MalformedMessage unless ``msg`` has the shape its op needs (a bad entry must be
    set aside, not kill the stream loop)."""
    op = msg["op"]
    if op == "batch":
        actions = msg.get("a")
        if not isinstance(actions, list) or not all(_valid_action(a) for a in actions):
            raise MalformedMessage(f"batch with malformed actions: {actions!r:.200}")
    elif op == "run":
        if not (isinstance(msg.get("client"), str) and isinstance(msg.get("id"), str)
                and isinstance(msg.get("func"), bytes)):
            raise MalformedMessage("run message needs client, id and func")


def _valid_action(action: Any) -> bool:
    if not isinstance(action, list) or not action:
        return False
    if action[0] == "c":
        return (len(action) >= 4 and isinstance(action[1], str) and isinstance(action[2], list)
                and isinstance(action[3], dict)
                and all(isinstance(v, list) and len(v) == 3 for v in action[3].values()))
    if action[0] == "f":
        return len(action) == 2 and isinstance(action[1], list)
    return False


def encode_items(values: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    items, frames = [], []
    for key, value in values.items():
        # no compression on the data plane: on loopback and LANs lz4 costs more than it saves
        head, parts = serialize.encode_frames(serialize.dumps(value), compress=False)
        items.append([key, head, len(parts)])
        frames.extend(parts)
    return {"items": items}, frames


def decode_items(header: dict[str, Any], frames: list[bytearray]) -> dict[str, Any]:
    out, pos = {}, 0
    for key, head, count in header.get("items", ()):
        parts = serialize.decode_frames(head, frames[pos : pos + count])
        out[key] = serialize.loads(parts)
        pos += count
    return out


def run_worker(url: str, cluster: str = "default", **kwargs: Any) -> None:
    import signal

    worker = Worker(connect(url, cluster), **kwargs)

    def on_term(*_: Any) -> None:
        threading.Thread(target=worker.close, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    worker.start()
    try:
        while not worker.stop_event.wait(1.0):
            pass
    finally:
        worker.close()
    sys.exit(0)
