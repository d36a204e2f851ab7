"""The Client: builds graphs, holds futures, listens on its own notification stream.

Two threads per client: a *sender* that drains everything submitted since its last round
trip into one pipeline (specs, functions, one message per kind), and a *listener* blocked
on the client's stream that settles futures as notifications arrive.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rdist.client import graph
from rdist.client.data import DATA_REPLY_OPS, ClientData
from rdist.client.future import (
    CANCELLED,
    ERROR,
    FINISHED,
    LOST,
    PENDING,
    Future,
    FutureState,
    futures_of,
    wait,
)
from rdist.client.inbox import Inbox
from rdist.comm.pool import ConnectionPool
from rdist.config import redis_url_from_env
from rdist.exceptions import DataUnavailable
from rdist.protocol import messages, serialize, spec
from rdist.store import connect
from rdist.store.connection import ConnectionErrors
from rdist.store.keys import PAYLOAD_FIELD

log = logging.getLogger("rdist.client")

#: map() sends its tasks in chunks growing from the first to the largest size
MAP_FIRST_CHUNK, MAP_MAX_CHUNK = 256, 4096
RELEASE_DELAY = 0.005  #: seconds a lone release waits for a submission to travel with
#: Messages sent together go in one stream entry up to this size; a big graph is better
#: read (and written out by the scheduler) in slices of its own.
BUNDLE_BYTES = 1 << 20
CLIENT_OPS = frozenset({"notify", "run-result", "restarted"}) | DATA_REPLY_OPS
_STATUS = {"memory": FINISHED, "erred": ERROR, "cancelled": CANCELLED, "lost": LOST}

_default_client: weakref.ref[Client] | None = None


def default_client() -> Client:
    client = _default_client() if _default_client is not None else None
    if client is None or client.status != "running":
        raise ValueError("No client found: create a Client first")
    return client


class Client:
    """Connect to an rdist cluster (``distributed.Client``'s interface)."""

    def __init__(
        self,
        address: Any = None,
        timeout: float = 30,
        name: str | None = None,
        set_as_default: bool = True,
        cluster_name: str | None = None,
        direct_to_workers: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self._owned_cluster = None
        if address is None:
            address = redis_url_from_env()
            if address is None:
                from rdist.cluster import LocalCluster

                address = self._owned_cluster = LocalCluster(**kwargs)
        if hasattr(address, "redis_url"):
            self.cluster = address
            url, cluster_name = address.redis_url, cluster_name or address.cluster_name
        else:
            self.cluster = None
            url = str(address)
        self.redis_url = url
        self.cluster_name = cluster_name or os.environ.get("RDIST_CLUSTER", "default")
        self.id = f"client-{uuid.uuid4().hex[:16]}"
        self.name = name or self.id
        self.timeout = timeout
        self.store = connect(url, self.cluster_name)
        self._stream = self.store.keys.client_stream(self.id)
        self._states: dict[str, FutureState] = {}
        self._refs: dict[str, int] = {}
        self._lock = threading.RLock()
        self._outbox: deque[tuple[str, Any]] = deque()
        self._outbox_cv = threading.Condition(threading.RLock())
        self._sent_funcs: set[bytes] = set()
        self._func_cache: dict[int, tuple[Any, bytes, bytes]] = {}
        self._runs: dict[str, tuple[threading.Event, dict[str, Any], int]] = {}
        self._cancel_waiters: list[tuple[set[str], threading.Event]] = []
        self._restarted = threading.Event()
        self._peers: ConnectionPool | None = None
        self._data = ClientData(self)  #: results from workers, scatter, replicate, rebalance
        self.status = "running"
        self._on_worker = False  #: created by get_client() inside a task
        self._stop = threading.Event()
        self._send_lock = threading.Lock()  #: held while a batch is drained and sent (keeps order)
        self._inbox = Inbox(
            self.store,
            self._stream,
            self._handle,
            self._heartbeat,
            self._stop,
            idle=self._flush_if_free,
        )
        self._post("client-join", {"client": self.id})
        self._threads = [
            threading.Thread(target=self._send_loop, name="rdist-client-send", daemon=True),
            threading.Thread(target=self._inbox.listen, name="rdist-client-listen", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if set_as_default:
            global _default_client
            _default_client = weakref.ref(self)
        from rdist.client.collections import prefer_task_shuffle

        prefer_task_shuffle()

    # -- lifetime --------------------------------------------------------------------------
    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> None:
        if self.status == "closed":
            return
        self._post("client-leave", {"client": self.id})
        self.status = "closing"
        self._flush()
        self.status = "closed"
        self._stop.set()
        with self._outbox_cv:
            self._outbox_cv.notify_all()
        try:  # wake the listener from its blocking read so close() returns at once
            self._inbox.wake()
        except ConnectionErrors:
            pass
        for thread in self._threads:
            thread.join(timeout=2)
        try:
            self.store.redis.delete(self._stream)
            self.store.redis.hdel(self.store.keys.clients, self.id)
        except ConnectionErrors:
            pass
        if self._peers is not None:
            self._peers.close()
        self._inbox.close()
        self.store.close()
        if self._owned_cluster is not None:
            self._owned_cluster.close()

    def __del__(self) -> None:
        if getattr(self, "status", "closed") == "running":
            try:
                self.close(timeout=1)
            except Exception:
                pass

    def __repr__(self) -> str:
        return f"<Client: {self.redis_url} cluster={self.cluster_name!r} status={self.status}>"

    # -- futures bookkeeping ---------------------------------------------------------------
    def _register(self, key: str) -> FutureState:
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = FutureState(key)
            self._refs[key] = self._refs.get(key, 0) + 1
            return state

    def _release_ref(self, key: str) -> None:
        with self._lock:
            count = self._refs.get(key, 0) - 1
            if count > 0:
                self._refs[key] = count
                return
            self._refs.pop(key, None)
            self._states.pop(key, None)
        if self.status == "running":
            self._post("release-keys", {"client": self.id, "keys": [key]}, lazy=True)

    def _wait_all(self, futures: list[Future], timeout: float | None = None) -> bool:
        """Block until every future is done, woken once at the end (not once per future:
        a thread hand-off per key would cost more than the rest of gathering it)."""
        pending = [f._state for f in futures if not f._state.done()]
        if not pending:
            return True
        if self._on_worker:
            from rdist.worker.execution import secede_before_waiting

            secede_before_waiting()
        remaining = [len(pending)]
        lock, all_done = threading.Lock(), threading.Event()

        def one_done() -> None:
            with lock:
                remaining[0] -= 1
                if not remaining[0]:
                    all_done.set()

        for state in pending:
            self._add_callback(state, one_done)
        return all_done.wait(timeout)

    def _add_callback(self, state: FutureState, fn: Callable[[], None]) -> None:
        with self._lock:
            if not state.done():
                state.callbacks.append(fn)
                return
        fn()

    # -- sending -----------------------------------------------------------------------------
    def _post(self, op: str, payload: Any, direct: bool = False, lazy: bool = False) -> None:
        """Queue a message; with ``direct`` the calling thread sends it when nobody else is
        sending (one thread hop less on the submit path), else the sender thread batches it.
        A ``lazy`` one (a release) wakes nobody while a thread waits on a result: the next
        submission or the idle listener takes it along within a few milliseconds."""
        with self._outbox_cv:
            self._outbox.append((op, payload))
            if not (direct and self._send_lock.acquire(blocking=False)):
                if not (lazy and self._inbox.waiter_reads()):
                    self._outbox_cv.notify()
                return
            items = list(self._outbox)
            self._outbox.clear()
        try:
            self._send(items)
        finally:
            self._send_lock.release()

    def _flush(self) -> None:
        with self._send_lock:
            with self._outbox_cv:
                items = list(self._outbox)
                self._outbox.clear()
            if items:
                self._send(items)

    def _flush_if_free(self) -> None:
        """Send what waits in the outbox unless another thread is sending."""
        if self._outbox and self._send_lock.acquire(blocking=False):
            try:
                with self._outbox_cv:
                    items = list(self._outbox)
                    self._outbox.clear()
                if items:
                    self._send(items)
            finally:
                self._send_lock.release()

    def _send_loop(self) -> None:
        while True:
            with self._outbox_cv:
                while not self._outbox and not self._stop.is_set():
                    self._outbox_cv.wait()
                if not self._outbox:
                    return
                if all(op == "release-keys" for op, _ in self._outbox) and not self._stop.is_set():
                    # releases are never urgent: let the next submission carry them rather
                    # than contend with it for the connection
                    self._outbox_cv.wait(RELEASE_DELAY)
            self._flush()

    def _send(self, items: list[tuple[str, Any]]) -> None:
        """One pipeline: specs and functions first, then the messages in order."""
        keys = self.store.keys
        funcs: dict[bytes, bytes] = {}
        msgs: list[bytes] = []
        merged: tuple[str, dict[str, Any]] | None = None
        for op, payload in items:
            if op == "update-graph":
                funcs.update(payload.pop("funcs"))
            if merged is not None and merged[0] == op and op in ("update-graph", "release-keys"):
                for field, values in payload.items():
                    if isinstance(values, dict):
                        merged[1].setdefault(field, {}).update(values)
                    elif field != "client":
                        merged[1].setdefault(field, []).extend(values)
                continue
            if merged is not None:
                msgs.append(messages.encode(merged[0], **merged[1]))
            merged = (op, payload)
        if merged is not None:
            msgs.append(messages.encode(merged[0], **merged[1]))
        if len(msgs) > 1 and sum(map(len, msgs)) <= BUNDLE_BYTES:
            msgs = [messages.bundle(msgs)]  # one entry: the scheduler sees them in one batch
        for attempt in range(60):
            try:
                pipe = self.store.raw_pipeline()
                if funcs:
                    pipe.hset(keys.funcs, mapping=funcs)
                for msg in msgs:
                    pipe.xadd(keys.sched, {PAYLOAD_FIELD: msg})
                pipe.execute()
                return
            except ConnectionErrors as exc:
                log.warning("client %s: redis unavailable (%s); retrying", self.id, exc)
                self._stop.wait(min(2.0, 0.1 * (attempt + 1)))

    # -- listening ---------------------------------------------------------------------------
    def _heartbeat(self) -> tuple[str, bytes]:
        return self.id, messages.pack({"name": self.name, "last_seen": time.time()})

    def _read_while_waiting(self, state: FutureState, budget: float) -> None:
        self._inbox.read_while_waiting(state.done, budget)

    def _handle(self, entry_id: bytes, payload: bytes | None) -> None:
        try:
            msg = messages.decode(payload, CLIENT_OPS)
        except messages.MalformedMessage as exc:
            log.error("client %s: ignoring malformed entry %s: %s", self.id, entry_id, exc)
            return
        if msg["op"] == "notify":
            self._settle(msg["items"])
        elif msg["op"] == "restarted":
            self._restarted.set()
        elif msg["op"] == "run-result":
            waiter = self._runs.get(msg["id"])
            if waiter is not None:
                event, results, expected = waiter
                results[msg["worker"]] = (msg["ok"], msg["value"])
                if len(results) >= expected:
                    event.set()
        elif msg["op"] in DATA_REPLY_OPS:
            self._data.on_message(msg)

    def _settle(self, items: list[list[Any]]) -> None:
        callbacks: list[Callable[[], None]] = []
        cancelled: set[str] = set()
        with self._lock:
            for key, status, info in items:
                if status == "barrier":  # the scheduler's answer to ClientData.barrier
                    self._data.on_message(info)
                    continue
                state = self._states.get(key)
                if status == "cancelled":
                    cancelled.add(key)
                if state is None:
                    continue
                if status == "memory" and state.status == CANCELLED:
                    continue
                if status == "lost":  # the only copy died: pending until recomputed
                    if state.status == FINISHED:
                        state.reset()
                    continue
                callbacks.extend(state.settle(_STATUS.get(status, LOST), info))
            if cancelled:
                for keys, event in self._cancel_waiters:
                    keys.difference_update(cancelled)
                    if not keys:
                        event.set()
        for fn in callbacks:
            fn()

    # -- submitting --------------------------------------------------------------------------
    def _function(self, func: Callable[..., Any]) -> tuple[bytes, bytes]:
        cached = self._func_cache.get(id(func))
        if cached is not None and cached[0] is func:
            return cached[1], cached[2]
        data = graph.function_bytes(func)
        func_hash = spec.function_hash(data)
        if len(self._func_cache) > 1000:
            self._func_cache.clear()
        self._func_cache[id(func)] = (func, func_hash, data)
        return func_hash, data

    def submit(
        self,
        func: Callable[..., Any],
        *args: Any,
        key: str | None = None,
        workers: Any = None,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        priority: int = 0,
        fifo_timeout: Any = None,
        allow_other_workers: bool = False,
        actor: bool = False,
        actors: bool = False,
        pure: bool = True,
        **kwargs: Any,
    ) -> Future:
        """Run ``func(*args, **kwargs)`` on the cluster; returns a pending Future at once."""
        if not callable(func):
            raise TypeError("First input to submit must be a callable function")
        func_hash, func_bytes = self._function(func)
        blob, deps, mode = graph.pack_arguments(args, kwargs, futures_of, Future)
        if key is None:
            key = graph.task_key(graph.funcname(func), func_hash, blob, pure)
        task = (key, spec.pack_spec(func_hash, blob, mode), deps)
        return self._submit(
            [task],
            {func_hash: func_bytes},
            workers,
            resources,
            retries,
            priority,
            allow_other_workers,
        )[0]

    def map(
        self,
        func: Callable[..., Any],
        *iterables: Iterable[Any],
        key: Any = None,
        workers: Any = None,
        retries: int | None = None,
        resources: dict[str, float] | None = None,
        priority: int = 0,
        allow_other_workers: bool = False,
        fifo_timeout: Any = None,
        actor: bool = False,
        actors: bool = False,
        pure: bool = True,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[Future]:
        """``submit`` over zipped iterables, in one message to the scheduler."""
        if not callable(func):
            raise TypeError("First input to map must be a callable function")
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        arg_tuples = list(zip(*iterables))
        if isinstance(key, (list, tuple)) and len(key) < len(arg_tuples):
            raise ValueError(f"map got {len(key)} keys for {len(arg_tuples)} tasks")
        func_hash, func_bytes = self._function(func)
        prefix = key if isinstance(key, str) else graph.funcname(func)
        with _gc_paused():  # a big map makes millions of objects: no collections meanwhile
            return self._map(
                func_hash,
                func_bytes,
                prefix,
                arg_tuples,
                key,
                kwargs,
                workers,
                resources,
                retries,
                priority,
                allow_other_workers,
                pure,
            )

    def _map(
        self,
        func_hash: bytes,
        func_bytes: bytes,
        prefix: str,
        arg_tuples: list[Any],
        key: Any,
        kwargs: dict[str, Any],
        workers: Any,
        resources: Any,
        retries: Any,
        priority: int,
        allow_other_workers: bool,
        pure: bool,
    ) -> list[Future]:
        tasks: list[tuple[str, bytes, list[str]]] = []
        futures: list[Future] = []
        chunk = MAP_FIRST_CHUNK
        for i, args in enumerate(arg_tuples):
            blob, deps, mode = graph.pack_arguments(args, kwargs, futures_of, Future)
            task_key = (
                key[i]
                if isinstance(key, (list, tuple))
                else graph.task_key(prefix, func_hash, blob, pure)
            )
            tasks.append((task_key, spec.pack_spec(func_hash, blob, mode), deps))
            if len(tasks) >= chunk:
                # send as we go: the cluster starts on the first tasks while we pack the rest
                futures += self._submit(
                    tasks,
                    {func_hash: func_bytes},
                    workers,
                    resources,
                    retries,
                    priority,
                    allow_other_workers,
                )
                tasks, chunk = [], min(chunk * 2, MAP_MAX_CHUNK)
        if tasks:
            futures += self._submit(
                tasks,
                {func_hash: func_bytes},
                workers,
                resources,
                retries,
                priority,
                allow_other_workers,
            )
        return futures

    def _submit(
        self,
        tasks: list[tuple[str, bytes, list[str]]],
        funcs: dict[bytes, bytes],
        workers: Any,
        resources: dict[str, float] | None,
        retries: int | None,
        priority: int,
        loose: bool,
        wanted: list[str] | None = None,
    ) -> list[Future]:
        """Send tasks in one message; the client wants ``wanted`` (default: every task)."""
        restrictions = _worker_list(workers)
        futures = [Future(k, self) for k, _, _ in tasks] if wanted is None else []
        wanted = [f.key for f in futures] if wanted is None else wanted
        new_funcs = {h: b for h, b in funcs.items() if h and h not in self._sent_funcs}
        self._sent_funcs.update(new_funcs)
        with self._lock:
            for f in futures:  # a cancelled key submitted again starts over
                if f._state.status == CANCELLED:
                    f._state.reset()
        payload = {
            "client": self.id,
            "tasks": [
                [k, deps, priority, restrictions, loose, retries or 0, resources]
                for k, _, deps in tasks
            ],
            "wanted": wanted,
            "specs": {k: s for k, s, _ in tasks},
            "funcs": new_funcs,
        }
        self._post("update-graph", payload, direct=True)
        return futures

    def _fire_and_forget(self, keys: list[str]) -> None:
        self._post(
            "update-graph",
            {"client": self.id, "tasks": [], "wanted": [], "faf": keys, "specs": {}, "funcs": {}},
        )

    # -- results -----------------------------------------------------------------------------
    def gather(
        self,
        futures: Any,
        errors: str = "raise",
        direct: bool | None = None,
        asynchronous: bool | None = None,
    ) -> Any:
        """Values of the futures in ``futures``, keeping its structure (lists, dicts, ...)."""
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        if isinstance(futures, Iterable) and not isinstance(
            futures, (list, tuple, set, dict, str, bytes, Future)
        ):
            futures = list(futures)
        found = futures_of(futures)
        self._wait_all(found)
        if errors == "raise":
            for f in found:
                if f.status in (ERROR, CANCELLED, LOST):
                    f.result()  # raises the task's own exception
        finished = [f for f in found if f.status == FINISHED]
        try:
            values = self._fetch_values(finished)
        except DataUnavailable as exc:  # a holder died: those wait for their recomputation
            missing = set(exc.keys)
            values = self._fetch_values([f for f in finished if f.key not in missing])
            values.update({f.key: f.result() for f in finished if f.key in missing})
        return _rebuild(futures, values)

    def _fetch_values(self, futures: list[Future]) -> dict[str, Any]:
        """Inline results first, then one HMGET for small ones, then one request per worker."""
        values: dict[str, Any] = {}
        from_redis: list[str] = []
        by_worker: dict[str, list[str]] = {}
        infos = {}
        for f in futures:
            if f.key in values:
                continue
            info = f._state.info
            infos[f.key] = info
            if info.get("inline") is not None:
                values[f.key] = serialize.from_blob(info["inline"])
            elif info.get("redis"):
                from_redis.append(f.key)
            else:
                by_worker.setdefault((info.get("who_has") or [""])[0], []).append(f.key)
        if from_redis:
            for key, blob in zip(
                from_redis, self.store.redis.hmget(self.store.keys.results, from_redis)
            ):
                if blob is None:
                    by_worker.setdefault((infos[key].get("who_has") or [""])[0], []).append(key)
                else:
                    values[key] = serialize.from_blob(blob)
        for address, keys in by_worker.items():
            values.update(self._fetch_from_workers(address, keys, infos))
        return values

    def _fetch_from_workers(
        self, address: str, keys: list[str], infos: dict[str, Any]
    ) -> dict[str, Any]:
        """Straight from the holders, or through Redis (transfer mode, ``rdist.client.data``)."""
        holders = {k: list(dict.fromkeys([address, *infos[k].get("who_has", ())])) for k in keys}
        got, missing = self._data.fetch(keys, holders)
        if missing:
            raise DataUnavailable(missing)
        return got

    def _await_recovery(self, futures: list[Future], infos: dict[str, Any]) -> None:
        """Their data could not be fetched: make them pending again (unless a newer
        notification already arrived), so callers wait for the scheduler to recompute."""
        with self._lock:
            for f in futures:
                if f._state.status == FINISHED and f._state.info is infos.get(f.key):
                    f._state.reset()

    def _peer_pool(self) -> ConnectionPool:
        if self._peers is None:
            raw = self.store.redis.hget(self.store.keys.meta, "secret")
            if raw is None:
                raise RuntimeError("cluster secret missing from Redis: is a scheduler running?")
            self._peers = ConnectionPool(bytes.fromhex(raw.decode()))
        return self._peers

    # -- data --------------------------------------------------------------------------------
    def scatter(
        self,
        data: Any,
        workers: Any = None,
        broadcast: bool = False,
        direct: bool | None = None,
        hash: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """Put local data on workers; returns finished futures in the shape of ``data``."""
        if isinstance(data, dict):
            items = list(data.items())
        elif isinstance(data, (list, tuple, set, frozenset)):
            items = [(None, x) for x in data]
        else:
            items = [(None, data)]
        targets = self._scatter_targets(workers, timeout)
        placed = self._data.scatter(items, targets, broadcast, hash)
        small = {k: blob for k, _, _, blob in placed if blob is not None}
        if small:
            self.store.redis.hset(self.store.keys.results, mapping=small)
        scatter_items = [[k, holders, nbytes, k in small] for k, holders, nbytes, _ in placed]
        futures = []
        for k, holders, nbytes, _ in placed:
            f = Future(k, self)
            with self._lock:
                f._state.settle(
                    FINISHED, {"nbytes": nbytes, "redis": k in small, "who_has": holders}
                )
            futures.append(f)
        self._post("scatter", {"client": self.id, "items": scatter_items})
        if isinstance(data, dict):
            return (
                {k: f for (k, _), f in zip(items, futures)}
                if all(k is not None for k, _ in items)
                else futures
            )
        if isinstance(data, (list, tuple, set, frozenset)):
            return type(data)(futures) if not isinstance(data, (set, frozenset)) else futures
        return futures[0]

    def _scatter_targets(self, workers: Any, timeout: float | None) -> list[str]:
        info = self._workers_info()
        if not info:
            self.wait_for_workers(1, timeout=timeout or self.timeout)
            info = self._workers_info()
        wanted = _worker_list(workers)
        if wanted:
            chosen = [a for a, w in info.items() if a in wanted or w.get("name") in wanted]
            if not chosen:
                raise ValueError(f"no worker matches {wanted}; known workers: {sorted(info)}")
            return sorted(chosen)
        return sorted(info)

    def replicate(
        self,
        futures: Any,
        n: int | None = None,
        workers: Any = None,
        branching_factor: int = 2,
        **kwargs: Any,
    ) -> None:
        """Copy the futures' data until each is on ``n`` workers (default: all of
        ``workers``, default all); extra copies beyond ``n`` are dropped. Blocks until done."""
        found = futures_of(futures) if not isinstance(futures, Future) else [futures]
        wait(found)
        keys = list(dict.fromkeys(f.key for f in found if f.status == FINISHED))
        self._data.replicate(keys, n, workers)

    def rebalance(self, futures: Any = None, workers: Any = None, **kwargs: Any) -> None:
        """Move data (of ``futures``, default all) between ``workers`` (default all) so each
        holds about the same number of bytes. Blocks until done."""
        keys = None
        if futures is not None:
            found = futures_of(futures) if not isinstance(futures, Future) else [futures]
            wait(found)
            keys = list(dict.fromkeys(f.key for f in found if f.status == FINISHED))
        self._data.rebalance(keys, workers)

    # -- control -----------------------------------------------------------------------------
    def cancel(self, futures: Any, force: bool = False, reason: str | None = None) -> None:
        """Cancel these futures (and their dependents); waits for the scheduler to confirm."""
        found = futures_of(futures) if not isinstance(futures, Future) else [futures]
        keys = list(dict.fromkeys(f.key for f in found))
        if not keys:
            return
        event = threading.Event()
        waiter = (set(keys), event)
        with self._lock:
            self._cancel_waiters.append(waiter)
        callbacks = []
        with self._lock:
            for f in found:
                if f._state.status == PENDING:
                    callbacks.extend(f._state.settle(CANCELLED, {}))
        for fn in callbacks:
            fn()
        self._post("cancel", {"client": self.id, "keys": keys, "force": force})
        event.wait(self.timeout)
        with self._lock:
            self._cancel_waiters.remove(waiter)

    def restart(self, timeout: float | None = None, wait_for_workers: bool = True) -> None:
        """Cancel every future of every client and restart all workers; returns once the
        workers are back (promptly: a task that is still running is not waited for)."""
        timeout = timeout or self.timeout * 2
        deadline = time.monotonic() + timeout
        n_workers = len(self._workers_info())
        started = time.time()
        self._restarted.clear()
        self._post("restart", {"client": self.id})
        if not self._restarted.wait(timeout):
            raise TimeoutError(f"the scheduler did not restart the cluster within {timeout} s")
        callbacks = []
        with self._lock:  # the scheduler cancelled them all; make sure none is left pending
            for state in self._states.values():
                if state.status in (PENDING, FINISHED):
                    callbacks.extend(state.settle(CANCELLED, {}))
        for fn in callbacks:
            fn()
        if wait_for_workers:
            while (
                sum(
                    1
                    for w in self._workers_info().values()
                    if float(w.get("started", 0)) >= started
                )
                < n_workers
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers did not come back within {timeout} s")
                self._stop.wait(0.05)  # a restart is rare: a short timed wait is fine

    def retry(self, futures: Any) -> None:
        """Run erred futures again."""
        found = futures_of(futures) if not isinstance(futures, Future) else [futures]
        keys = [f.key for f in found if f.status == ERROR]
        with self._lock:
            for f in found:
                if f.status == ERROR:
                    f._state.reset()
        if keys:
            self._post("retry", {"client": self.id, "keys": keys})

    # -- raw graphs --------------------------------------------------------------------------
    def get(
        self,
        dsk: Any,
        keys: Any,
        workers: Any = None,
        allow_other_workers: bool = False,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        priority: int = 0,
        sync: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Compute a task graph -- a dict of tuple tasks or dask task-spec nodes, or what
        ``dask.compute(x, scheduler=client.get)`` hands over -- and return the values of
        ``keys`` in their shape."""
        from rdist.client import collections

        futures = collections.submit_graph(
            self,
            dsk,
            list(dict.fromkeys(_flatten_keys(keys))),
            workers=workers,
            resources=resources,
            retries=retries,
            priority=priority,
            allow_other_workers=allow_other_workers,
        )
        values = self.gather(list(futures.values()))
        by_key = dict(zip(futures, values))
        return _shape(keys, by_key)

    def compute(
        self,
        collections: Any,
        sync: bool = False,
        optimize_graph: bool = True,
        workers: Any = None,
        allow_other_workers: bool = False,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> Any:
        """A future for each dask collection's value (``sync=True``: the values)."""
        from rdist.client import collections as coll

        futures = coll.compute(
            self,
            collections,
            optimize_graph,
            workers=workers,
            allow_other_workers=allow_other_workers,
            resources=resources,
            retries=retries,
            priority=priority,
        )
        return self.gather(futures) if sync else futures

    def persist(
        self,
        collections: Any,
        optimize_graph: bool = True,
        workers: Any = None,
        allow_other_workers: bool = False,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> Any:
        """The dask collection(s) computed on the cluster and backed by futures."""
        from rdist.client import collections as coll

        return coll.persist(
            self,
            collections,
            optimize_graph,
            workers=workers,
            allow_other_workers=allow_other_workers,
            resources=resources,
            retries=retries,
            priority=priority,
        )

    # -- introspection -----------------------------------------------------------------------
    def _workers_info(self) -> dict[str, dict[str, Any]]:
        raw = self.store.redis.hgetall(self.store.keys.workers)
        info = {}
        for address, blob in raw.items():
            try:
                record = messages.unpack(blob)
            except Exception:
                continue
            if record.get("status", "running") in ("running", "paused"):
                info[address.decode()] = record
        return info

    def scheduler_info(self, n_workers: int = -1, **kwargs: Any) -> dict[str, Any]:
        workers = self._workers_info()
        for address, record in workers.items():
            record.setdefault("id", record.get("name", address))
            record["nthreads"] = int(record.get("nthreads", 1))
        return {
            "type": "Scheduler",
            "id": self.cluster_name,
            "address": self.redis_url,
            "workers": dict(sorted(workers.items())),
        }

    def nthreads(self, workers: Any = None) -> dict[str, int]:
        wanted = _worker_list(workers)
        return {
            a: int(w.get("nthreads", 1))
            for a, w in sorted(self._workers_info().items())
            if not wanted or a in wanted or w.get("name") in wanted
        }

    ncores = nthreads

    def _task_records(self, keys: list[str] | None) -> dict[str, dict[str, Any]]:
        tasks_key = self.store.keys.tasks
        if keys is None:
            raw = self.store.redis.hgetall(tasks_key)
            return {k.decode(): messages.unpack(v) for k, v in raw.items()}
        if not keys:
            return {}
        return {
            k: messages.unpack(v)
            for k, v in zip(keys, self.store.redis.hmget(tasks_key, keys))
            if v is not None
        }

    def who_has(self, futures: Any = None) -> dict[str, list[str]]:
        if futures is None:
            with self._lock:
                keys = list(self._states)
        else:
            keys = [
                f.key
                for f in (futures_of(futures) if not isinstance(futures, Future) else [futures])
            ]
        records = self._task_records(keys)
        local = self._local_who_has()
        # a worker notifies the client before the scheduler records the holder: what the
        # client was told answers until the record catches up
        return {k: list(records.get(k, {}).get("wh") or local.get(k, [])) for k in keys}

    def _local_who_has(self) -> dict[str, list[str]]:
        """Holders this client was told of (scatter placements, completions): they answer for
        keys the scheduler has not recorded yet, as scatter returns before it has."""
        with self._lock:
            return {
                k: list(s.info.get("who_has", ()))
                for k, s in self._states.items()
                if s.status == FINISHED
            }

    def has_what(self, workers: Any = None) -> dict[str, list[str]]:
        wanted = _worker_list(workers)
        out: dict[str, list[str]] = {a: [] for a in self._workers_info()}
        records = self._task_records(None)
        for key, record in records.items():
            if record.get("s") != "memory":
                continue
            for address in record.get("wh", ()):
                out.setdefault(address, []).append(key)
        for key, holders in self._local_who_has().items():
            if records.get(key, {}).get("s") != "memory":  # the record has not caught up
                for address in holders:
                    if address in out:
                        out[address].append(key)
        return {a: sorted(ks) for a, ks in out.items() if not wanted or a in wanted}

    def run(
        self,
        function: Callable[..., Any],
        *args: Any,
        workers: Any = None,
        wait: bool = True,
        nanny: bool = False,
        on_error: str = "raise",
        **kwargs: Any,
    ) -> Any:
        """``function(*args, **kwargs)`` on every worker (or ``workers``): ``{address: result}``."""
        targets = self._scatter_targets(workers, None) if workers else sorted(self._workers_info())
        if not targets:
            return {}
        request = uuid.uuid4().hex
        event = threading.Event()
        results: dict[str, Any] = {}
        self._runs[request] = (event, results, len(targets))
        blob = serialize.to_blob((function, args, kwargs))
        pipe = self.store.pipeline()
        for address in targets:
            pipe.xadd(
                self.store.keys.worker_stream(address),
                {PAYLOAD_FIELD: messages.encode("run", client=self.id, id=request, func=blob)},
            )
        pipe.execute()
        if not wait:
            return None
        try:
            if not event.wait(self.timeout * 4):
                raise TimeoutError(f"run: {len(targets) - len(results)} workers did not answer")
        finally:
            self._runs.pop(request, None)
        out = {}
        for address, (ok, value) in sorted(results.items()):
            loaded = serialize.from_blob(value)
            if not ok:
                if on_error == "raise":
                    raise loaded[0]
                loaded = loaded[0]
            out[address] = loaded
        return out

    def wait_for_workers(self, n_workers: int = 1, timeout: float | None = None) -> None:
        """Block until ``n_workers`` workers are running (woken by join events, no polling)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events_key = self.store.keys.events
        last: bytes | str = "$"
        reader = self.store.clone()
        try:
            while len(self._workers_info()) < n_workers:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"only {len(self._workers_info())} of {n_workers} workers "
                        f"arrived within {timeout} s"
                    )
                block = int(1000 * min(1.0, remaining if remaining is not None else 1.0)) or 1
                got = reader.read(events_key, last, 100, block)
                if got:
                    last = got[-1][0]
                elif reader.url.startswith("fakeredis://"):
                    time.sleep(0.01)
        finally:
            reader.close()

    def get_futures(self) -> dict[str, Future]:
        with self._lock:
            return {k: Future(k, self, self._register(k)) for k in list(self._states)}


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _worker_list(workers: Any) -> list[str] | None:
    if workers is None:
        return None
    if isinstance(workers, str):
        return [workers]
    return [str(w) for w in workers] or None


def _rebuild(obj: Any, values: dict[str, Any]) -> Any:
    """``obj`` with futures replaced by values; failed futures dropped (errors='skip')."""
    if isinstance(obj, Future):
        return values.get(obj.key)
    if isinstance(obj, (list, tuple, set, frozenset)):
        kind = type(obj)
        items = [_rebuild(x, values) for x in obj if not isinstance(x, Future) or x.key in values]
        return kind(items) if kind is not list else items
    if isinstance(obj, dict):
        return {
            k: _rebuild(v, values)
            for k, v in obj.items()
            if not isinstance(v, Future) or v.key in values
        }
    return obj


def _flatten_keys(keys: Any) -> list[Hashable]:
    if isinstance(keys, list):
        return [k for item in keys for k in _flatten_keys(item)]
    return [keys]


def _shape(keys: Any, by_key: Mapping[str, Any]) -> Any:
    if isinstance(keys, list):
        return [_shape(k, by_key) for k in keys]
    return by_key[graph.key_name(keys)]
