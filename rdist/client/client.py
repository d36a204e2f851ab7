"""The Client: ``distributed.Client``'s interface, composed of the rooms of this package.

Each room does one thing, and ``Client`` wires them together and keeps the public
methods (most of them one call into a room):

- :mod:`~rdist.client.sender` -- the outbox: messages to the scheduler, batched;
- :mod:`~rdist.client.inbox` and :mod:`~rdist.client.listener` -- reading the client's
  stream, and what each typed message on it means;
- :mod:`~rdist.client.ledger` -- the futures' states and reference counts, and waiting
  on them (the interface every :class:`Future` talks to);
- :mod:`~rdist.client.submit` and :mod:`~rdist.client.collections` -- calls and graphs
  into tasks;
- :mod:`~rdist.client.results` and :mod:`~rdist.client.data` -- values from wherever
  they are, scatter, replicate, rebalance;
- :mod:`~rdist.client.introspection` -- workers, who has what, ``run``, ``story``.

Two threads per client: the sender thread (for what the calling threads do not send
themselves) and the listener blocked on the client's stream.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from rdist import task_context, versions
from rdist.client import asynchronous as async_client
from rdist.client import collections as dask_collections
from rdist.client import (
    default,
    dump,
    inspect_more,
    keynames,
    local_cluster,
    metadata,
    retire,
    validate,
)
from rdist.client import diagnostics as diag
from rdist.client import logs as client_logs
from rdist.client.actor_calls import ActorRelay, actor_call, actor_map
from rdist.client.amm import AMMClientProxy
from rdist.client.answers import Answers
from rdist.client.data import ClientData
from rdist.client.datasets import NO_DEFAULT, DatasetOps, Datasets
from rdist.client.executor import ClientExecutor
from rdist.client.future import ERROR, FINISHED, Future, futures_of, wait
from rdist.client.holders import Holdings
from rdist.client.inbox import Inbox
from rdist.client.introspection import Introspection, StoryEvent
from rdist.client.ledger import Ledger
from rdist.client.listener import Listener, StreamWatch
from rdist.client.options import TaskOptions
from rdist.client.recovery import Journal, Recovery
from rdist.client.reprs import html_table
from rdist.client.results import Results
from rdist.client.sender import Sender
from rdist.client.submit import Submitter
from rdist.client.topics import Topics
from rdist.config import load_config, mask_url
from rdist.exceptions import ClosedClientError
from rdist.plugins.registry import PluginRegistry
from rdist.protocol import wire
from rdist.store import connect
from rdist.store.connection import ConnectionErrors
from rdist.store.epoch import EpochWatch
from rdist.supervise import start_thread

log = logging.getLogger("rdist.client")


def _futures(obj: Any) -> list[Future]:
    return [obj] if isinstance(obj, Future) else futures_of(obj)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def _task_options(
    workers: Any, resources: Any, retries: Any, priority: Any, allow_other_workers: Any
) -> TaskOptions:
    """The scheduling keywords of ``submit``/``map``, checked as dask checks them."""
    options = TaskOptions.of(workers, resources, retries, priority, allow_other_workers)
    if options.loose and options.workers is None:
        raise ValueError("Only use allow_other_workers= if using workers=")
    return options


class Client:
    """Connect to an rdist cluster (``distributed.Client``'s interface)."""

    def __init__(
        self,
        address: Any = None,
        timeout: float | None = None,
        name: str | None = None,
        set_as_default: bool = True,
        cluster_name: str | None = None,
        asynchronous: bool = False,
        direct_to_workers: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self._owned_cluster: local_cluster.ClusterLike | None = None
        #: redis.url, redis.cluster, comm.connect_timeout, client.heartbeat_interval
        config = load_config()
        if address is None:
            address = config.get("redis.url")
            if address is None:  # a cluster of our own (see rdist.client.local_cluster)
                address = self._owned_cluster = local_cluster.start(**kwargs)
        if hasattr(address, "redis_url"):
            self.cluster = address
            url, cluster_name = address.redis_url, cluster_name or address.cluster_name
        else:
            self.cluster = None
            url = str(address)
        self.redis_url = url
        self.cluster_name = cluster_name or config.get("redis.cluster")
        self.id = f"client-{uuid.uuid4().hex[:16]}"
        self.name = name or self.id
        if timeout is None:  # dask's distributed.comm.timeouts.connect, 30 s unless configured
            timeout = float(config.get("comm.connect_timeout"))
        self.timeout = timeout
        self._heartbeat_interval = float(config.get("client.heartbeat_interval"))
        self.status = "connecting"
        try:
            self.store = self._connect(url, timeout)
        except BaseException:
            self.status = "closed"
            if self._owned_cluster is not None:
                self._owned_cluster.close()
            raise
        self.status = "running"
        self._compose()
        try:
            self.recovery.start()  # the cluster epoch we join in
        except ConnectionErrors:
            pass  # the first check reads it
        self._sender.post(wire.ClientJoin(self.id))
        self._threads = [  # supervised: a failing loop starts again (rdist.supervise)
            start_thread("rdist-client-send", self._sender.run, self._stop, self._thread_died),
            start_thread("rdist-client-listen", self._inbox.listen, self._stop, self._thread_died),
        ]
        if task_context.current() is None:  # (a task's own client: its worker prints)
            for topic, handler in client_logs.DEFAULT_TOPICS.items():
                self._topics.subscribe(topic, handler)
        if asynchronous:
            self.asynchronous = True
            async_client.make_awaitable(self)
        if set_as_default:
            default.promote(self)
        dask_collections.prefer_task_shuffle()

    def _connect(self, url: str, timeout: float) -> Any:
        """A store once Redis answers and a scheduler holds the lease, within ``timeout``
        (dask's default, ``distributed.comm.timeouts.connect``: 30 s). A permanent failure
        -- wrong password, TLS verification, a malformed URL -- raises at once, naming the
        URL (password masked) and the fix; Redis unreachable or no scheduler raise
        TimeoutError subclasses once ``timeout`` has passed (see rdist.store.health)."""
        deadline = time.monotonic() + timeout
        store = connect(url, self.cluster_name)
        try:
            store.check(timeout, what=f"client {self.id}")
            store.wait_for_scheduler(max(0.0, deadline - time.monotonic()))
        except BaseException:
            store.close()
            raise
        return store

    def _compose(self) -> None:
        """The rooms, each handed only what it uses."""
        store, timeout = self.store, lambda: self.timeout
        self._stop = threading.Event()
        self._restarted = threading.Event()
        self._answers = Answers()  #: answers awaited by request id
        self._topics = Topics(store, self._stop)
        self._sender = Sender(store, self.id, self._stop)
        #: the futures' states and reference counts: what every Future talks to
        self.ledger = Ledger(
            self.id,
            self._sender,
            lambda done, budget: self._inbox.read_while_waiting(done, budget),
            lambda futures: self._results.values(futures),
            lambda: self.status == "running",
            self._unknown_keys,
        )
        self._submitter = Submitter(self, self._sender, self.ledger, self._place)
        self._introspection = Introspection(
            store, self.id, timeout, self.ledger, self._sender, self._answers
        )
        self._data = ClientData(
            store, self.id, self._sender, self._answers, self._introspection.workers, timeout
        )
        self._results = Results(store, self.ledger, self._data)
        listener = Listener(
            store, self.id, self.ledger, self._answers, self._data.on_relay_reply, self._restarted
        )
        #: what we submitted, to submit again should Redis lose it (``rdist.client.recovery``)
        journal = Journal()
        self._sender.journal, self._sender.held = journal, self.ledger.keys
        self.recovery = Recovery(store, self.id, self._sender, self.ledger, journal, EpochWatch())
        self._inbox = Inbox(
            store,
            self.id,
            listener.on_entry,
            self._heartbeat,
            self._stop,
            idle=self._sender.flush_if_free,
            watch=lambda: self.stream_watch.check(),
            beat_every=self._heartbeat_interval,
            check_epoch=self.recovery.check,
        )
        #: notices that Redis lost our stream, and makes it again (rdist.client.listener)
        self.stream_watch = StreamWatch(
            store, self.id, self.ledger, self._sender.post, self._inbox.kept, self._stop.is_set
        )
        self._sender.waiter_reads = self._inbox.waiter_reads
        #: futures held by queues, variables and datasets (``rdist.client.holders``)
        self.holdings = Holdings(self, self._sender, self.ledger)
        self._datasets = DatasetOps(store, self.holdings)
        #: actor calls through Redis, where workers cannot be reached directly
        self.actor_relay = ActorRelay(store, self.id, self._answers)
        self._plugins = PluginRegistry(store, self.id, self._answers, self._sender.post, timeout)

    def _thread_died(self, name: str, exc: BaseException | None) -> None:
        """One of our threads died for good: rather than live on half-dead in the user's
        process (futures never told, messages never sent), the client closes itself."""
        log.critical("client %s: thread %s died (%r): closing the client", self.id, name, exc)
        threading.Thread(target=self.close, name="rdist-client-close", daemon=True).start()

    def _heartbeat(self) -> wire.ClientRecord:
        return wire.ClientRecord(self.name, time.time())

    def _unknown_keys(self, keys: list[str]) -> list[str]:
        """Which of ``keys`` no task has, once the scheduler handled what we sent before."""
        self._data.barrier()
        records = self.store.tasks.get_many(keys)
        return [k for k in keys if k not in records]

    def _place(self, values: list[Any], workers: list[str] | None) -> list[Future]:
        """Scatter large arguments (``rdist.client.large``) before the tasks needing them;
        data this client holds already (the same array passed again) is not sent twice."""
        held = [Future._named(v.name, self) for v in values if self.ledger.holds(v.name)]
        new = [v for v in values if not self.ledger.holds(v.name)]
        if not new:
            return held
        targets = self._introspection.targets(workers, None)
        placed = self._data.scatter_serialized(new, targets)
        return held + self._settle_scattered(placed)

    def _settle_scattered(self, placed: list[wire.KeyInMemory]) -> list[Future]:
        """Futures of data we placed, finished at once; the scheduler is told where it is."""
        futures = []
        for where in placed:
            future = Future._named(where.key, self)
            self.ledger.finish(future._state, where)
            futures.append(future)
        rows = [wire.ScatterItem(w.key, w.who_has, w.nbytes, w.in_redis) for w in placed]
        self._sender.post(wire.Scatter(self.id, rows))
        return futures

    def _check_open(self, call: str) -> None:
        if self.status != "running":
            raise ClosedClientError(
                f"client {self.id} is {self.status}: cannot {call}. Create a new Client"
            )

    # -- lifetime --------------------------------------------------------------------------
    #: whether the waiting methods return awaitables (dask asks before it uses a client as
    #: its scheduler: an asynchronous one cannot serve plain ``x.compute()``)
    asynchronous = False

    def __await__(self) -> Any:
        """``client = await Client(..., asynchronous=True)``: connected already, as soon as
        it is made; awaiting gives the client itself."""

        async def ready() -> Client:
            return self

        return ready().__await__()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await async_client.in_thread(lambda: Client.close(self))

    @classmethod
    def current(cls, allow_global: bool = True) -> Client:
        """The client of an ``as_current()`` block, else (``allow_global``) the default one;
        ``ValueError`` when there is none."""
        client = default.current(allow_global)
        if client is None:
            raise ValueError("No client found: create one with rdist.Client(...)")
        return client

    def as_current(self) -> AbstractContextManager[Client]:
        """``with client.as_current():`` -- this client is ``Client.current()`` (and the one
        ``default_client()`` returns) in the block, in this thread or asyncio task."""
        return default.as_current(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        Client.close(self)

    def close(self, timeout: float | None = None) -> None:
        if self.status == "closed":
            return
        self._sender.post(wire.ClientLeave(self.id))
        self.status = "closing"
        self._sender.flush()
        self.status = "closed"
        default.forget(self)
        self.ledger.close()  # waiters wake and raise ClosedClientError
        self._stop.set()
        self._sender.wake()
        try:  # wake the listener from its blocking read so close() returns at once
            self._inbox.wake()
        except ConnectionErrors:
            pass
        for thread in self._threads:
            thread.join(timeout=2)
        try:
            pipe = self.store.pipeline()
            self.store.streams.drop_client_streams([self.id], pipe=pipe)
            self.store.clients.remove([self.id], pipe=pipe)
            pipe.execute()
        except ConnectionErrors:
            pass
        self._data.close()
        self._inbox.close()
        self.store.close()
        if self._owned_cluster is not None:
            self._owned_cluster.close()

    def __del__(self) -> None:
        if getattr(self, "status", "closed") == "running":
            try:
                Client.close(self, timeout=1)
            except Exception:
                pass

    def __repr__(self) -> str:
        return (
            f"<Client: {mask_url(self.redis_url)} cluster={self.cluster_name!r} "
            f"status={self.status}>"
        )

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard of this client's LocalCluster (None for a cluster reached by URL
        whose dashboard runs elsewhere, or one started with ``dashboard_address=None``)."""
        return getattr(self.cluster, "dashboard_link", None)

    def _repr_html_(self) -> str:
        """Jupyter's view of the client (no secret in it)."""
        return html_table(
            "Client",
            [
                ("Redis", mask_url(self.redis_url)),
                ("Cluster", self.cluster_name),
                ("Client id", self.id),
                ("Status", self.status),
            ],
            self.dashboard_link,
        )

    # -- submitting --------------------------------------------------------------------------
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
        """Run ``func(*args, **kwargs)`` on the cluster; returns a pending Future at once
        (``actor=True``: ``func`` is a class, the future's result an Actor on a worker).

        Arguments are checked here (TypeError/ValueError naming the one at fault); one
        larger than 1 MiB serialized is scattered to a worker first (rdist.client.large)."""
        self._check_open("submit")
        if actor or actors:
            func, args, key = actor_call(func, args, key)
            pure = False
        options = _task_options(workers, resources, retries, priority, allow_other_workers)
        return self._submitter.submit(func, args, kwargs, key, validate.pure(pure), options)

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
        """``submit`` over zipped iterables, in one message to the scheduler (a few for a
        big map)."""
        self._check_open("map")
        if actor or actors:
            func, iterables, key = actor_map(func, iterables, key)
            pure = False
        options = _task_options(workers, resources, retries, priority, allow_other_workers)
        return self._submitter.map(func, iterables, kwargs, key, validate.pure(pure), options)

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
        self._check_open("get")
        futures = dask_collections.submit_graph(
            self._submitter,
            dsk,
            list(dict.fromkeys(dask_collections.flatten_keys(keys))),
            workers=workers,
            resources=resources,
            retries=retries,
            priority=priority,
            allow_other_workers=allow_other_workers,
        )
        values = Client.gather(self, list(futures.values()))
        return dask_collections.shape_like(keys, dict(zip(futures, values)))

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
        self._check_open("compute")
        futures = dask_collections.compute(
            self._submitter,
            collections,
            optimize_graph,
            workers=workers,
            allow_other_workers=allow_other_workers,
            resources=resources,
            retries=retries,
            priority=priority,
        )
        return Client.gather(self, futures) if sync else futures

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
        self._check_open("persist")
        return dask_collections.persist(
            self._submitter,
            collections,
            optimize_graph,
            workers=workers,
            allow_other_workers=allow_other_workers,
            resources=resources,
            retries=retries,
            priority=priority,
        )

    def get_executor(self, **kwargs: Any) -> ClientExecutor:
        """A ``concurrent.futures.Executor`` on this client; ``kwargs`` (``workers=``,
        ``resources=``, ``retries=``, ...) apply to every task it submits."""
        return ClientExecutor(self, **kwargs)

    def get_futures(self) -> dict[Any, Future]:
        futures = [Future._named(k, self, self.ledger.register(k)) for k in self.ledger.keys()]
        return {f.key: f for f in futures}

    @property
    def futures(self) -> dict[Any, Future]:
        """Key -> a Future of it, for every key this client holds a future of."""
        return Client.get_futures(self)

    def normalize_collection(self, collection: Any) -> Any:
        """``collection`` with its graph's tasks replaced by this client's futures where
        it holds them (nothing is computed twice), as dask's."""
        return inspect_more.normalize_collection(self, collection)

    def recreate_error_locally(self, future: Future) -> None:
        """Run the task blamed for ``future``'s failure here, on its inputs: the error is
        raised in this process (for pdb), as dask's."""
        self._check_open("recreate_error_locally")
        inspect_more.recreate_error_locally(self, future)

    # -- results and data --------------------------------------------------------------------
    def gather(
        self,
        futures: Any,
        errors: str = "raise",
        direct: bool | None = None,
        asynchronous: bool | None = None,
    ) -> Any:
        """Values of the futures in ``futures``, keeping its structure (lists, dicts, ...)."""
        self._check_open("gather")
        return self._results.gather(futures, errors)

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
        self._check_open("scatter")
        broadcast = validate.flag(broadcast, "broadcast")
        hash = validate.flag(hash, "hash")
        items: list[tuple[str | None, Any]]
        if isinstance(data, dict):
            items = [(keynames.check_key(k, "a key of scatter's data"), x) for k, x in data.items()]
        elif isinstance(data, (list, tuple, set, frozenset)):
            items = [(None, x) for x in data]
        else:
            items = [(None, data)]
        targets = self._introspection.targets(validate.workers(workers), timeout)
        placed = self._data.scatter(items, targets, broadcast, hash)
        futures = self._settle_scattered(placed)
        if isinstance(data, dict):
            return {k: f for k, f in zip(data, futures)}
        if isinstance(data, (list, tuple)):
            return type(data)(futures)
        return futures if isinstance(data, (set, frozenset)) else futures[0]

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
        self._check_open("replicate")
        found = _futures(futures)
        wait(found)
        keys = list(dict.fromkeys(f._name for f in found if f.status == FINISHED))
        self._data.replicate(keys, n, workers)

    def rebalance(self, futures: Any = None, workers: Any = None, **kwargs: Any) -> None:
        """Move data (of ``futures``, default all) between ``workers`` (default all) so each
        holds about the same number of bytes. Blocks until done."""
        self._check_open("rebalance")
        keys = None
        if futures is not None:
            found = _futures(futures)
            wait(found)
            keys = list(dict.fromkeys(f._name for f in found if f.status == FINISHED))
        self._data.rebalance(keys, workers)

    # -- control -----------------------------------------------------------------------------
    def cancel(self, futures: Any, force: bool = False, reason: str | None = None) -> None:
        """Cancel these futures (and their dependents); waits for the scheduler to confirm."""
        self._check_open("cancel")
        found = _futures(futures)
        keys = list(dict.fromkeys(f._name for f in found))
        if keys:
            self.ledger.cancel(found, keys, force, self.timeout)

    def retry(self, futures: Any) -> None:
        """Run erred futures again."""
        self._check_open("retry")
        self.ledger.retry([f for f in _futures(futures) if f.status == ERROR])

    def restart(self, timeout: float | None = None, wait_for_workers: bool = True) -> None:
        """Cancel every future of every client and restart all workers; returns once the
        workers are back (promptly: a task that is still running is not waited for)."""
        self._check_open("restart")
        timeout = timeout or self.timeout * 2
        deadline = time.monotonic() + timeout
        n_workers = len(self._introspection.workers())
        started = time.time()
        self._restarted.clear()
        self._sender.post(wire.Restart(self.id))
        if not self._restarted.wait(timeout):
            raise TimeoutError(f"the scheduler did not restart the cluster within {timeout} s")
        self.ledger.cancel_everything()
        if not wait_for_workers:
            return
        while sum(w.started >= started for w in self._introspection.workers().values()) < n_workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers did not come back within {timeout} s")
            self._stop.wait(0.05)  # a restart is rare: a short timed wait is fine

    # -- introspection -----------------------------------------------------------------------
    def scheduler_info(self, n_workers: int = -1, **kwargs: Any) -> dict[str, Any]:
        self._check_open("ask for scheduler_info")
        return self._introspection.scheduler_info(self.cluster_name, mask_url(self.redis_url))

    def nthreads(self, workers: Any = None) -> dict[str, int]:
        self._check_open("ask for nthreads")
        return self._introspection.nthreads(workers)

    ncores = nthreads

    def who_has(self, futures: Any = None) -> dict[Any, list[str]]:
        """Key -> addresses of the workers holding its data (keys as the futures have them)."""
        self._check_open("ask who_has")
        keys = self.ledger.keys() if futures is None else [f._name for f in _futures(futures)]
        found = self._introspection.who_has(keys)
        return {keynames.user_key(k): holders for k, holders in found.items()}

    def has_what(self, workers: Any = None) -> dict[str, list[Any]]:
        """Worker address -> the keys it holds."""
        self._check_open("ask has_what")
        found = self._introspection.has_what(workers)
        return {w: [keynames.user_key(k) for k in keys] for w, keys in found.items()}

    def processing(self, workers: Any = None) -> dict[str, list[Any]]:
        """Worker address -> the keys processing (assigned, not finished) there."""
        self._check_open("ask what is processing")
        return inspect_more.processing(self, workers)

    def nbytes(self, keys: Any = None, summary: bool = False, **kwargs: Any) -> dict[Any, int]:
        """Bytes of each result in memory (``summary=True``: per task group)."""
        self._check_open("ask for nbytes")
        return inspect_more.nbytes(self, keys, summary)

    def retire_workers(
        self,
        workers: Any = None,
        close_workers: bool = True,
        remove: bool = True,
        **kwargs: Any,
    ) -> dict[str, dict[str, Any]]:
        """Retire workers gracefully (default: the idle, cheap ones): the results only they
        hold move to the workers that stay first, then they leave and are not replaced by
        their nannies; returns address -> worker info of the workers retired."""
        self._check_open("retire workers")
        return retire.retire_workers(self, workers, close_workers, remove, kwargs.get("timeout"))

    @property
    def amm(self) -> AMMClientProxy:
        """The scheduler's Active Memory Manager: ``start()``, ``stop()``, ``running()``,
        ``run_once()`` (dask's ``client.amm``; see :mod:`rdist.client.amm`)."""
        return AMMClientProxy(self)

    def shutdown(self) -> None:
        """Stop the cluster -- its workers (no nanny restarts them) and the scheduler --
        and close this client, as dask's. Other clients of the cluster lose it too."""
        self._check_open("shut the cluster down")
        cluster = self.cluster or self._owned_cluster
        if cluster is None:
            retire.shutdown(self)
        self.close()
        if cluster is not None:
            cluster.close()

    def run_on_scheduler(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Not in rdist, on purpose: the scheduler never runs (or unpickles) user code."""
        raise NotImplementedError(
            "rdist's scheduler never runs user code, so there is no run_on_scheduler: use "
            "client.run(function) to run it on the workers, client.scheduler_info() / "
            "client.story(key) to look at the scheduler, or a SchedulerPlugin (loaded by "
            "`rdist scheduler --plugin`, or from clients with --accept-client-plugins)"
        )

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
        self._check_open("run")
        return self._introspection.run(function, args, kwargs, workers, wait, on_error)

    def get_versions(
        self, check: bool = False, packages: list[str] | None = None
    ) -> dict[str, Any]:
        """The Python and package versions of ``client``, ``scheduler`` and each of the
        ``workers`` (by address), as dask's; ``check=True`` raises ValueError naming every
        required package (and Python's minor version) that differs between them."""
        self._check_open("get_versions")
        answer = {
            "scheduler": self.store.meta.scheduler_versions(),
            "workers": Client.run(self, versions.get_versions, packages),
            "client": versions.get_versions(packages),
        }
        if check:
            found = versions.mismatches(answer, packages)
            if found:
                raise ValueError(versions.mismatch_message(found))
        return answer

    def set_metadata(self, key: Any, value: Any) -> None:
        """Keep ``value`` (msgpack data) at ``key`` -- a str, or a list of str as a path
        into nested dicts -- for every client of the cluster, as dask's."""
        self._check_open("set_metadata")
        metadata.set_metadata(self.store, key, value)

    def get_metadata(self, keys: Any, default: Any = metadata.MISSING) -> Any:
        """The value at ``keys`` (a str or a path); ``default`` if absent, else KeyError."""
        return metadata.get_metadata(self.store, keys, default)

    # -- events on topics (rdist.client.topics) ------------------------------------------------
    def log_event(self, topic: str | list[str], msg: Any) -> None:
        """Log ``msg`` (msgpack data) on ``topic`` (or each topic of a list), as dask's."""
        self._check_open("log_event")
        self._topics.log_event(topic, msg)

    def get_events(self, topic: str | None = None) -> Any:
        """The ``(time, msg)`` events of ``topic``, oldest first (``None``: a dict of every
        topic's)."""
        return self._topics.get_events(topic)

    def subscribe_topic(self, topic: str, handler: Callable[[tuple[float, Any]], Any]) -> None:
        """Call ``handler((time, msg))`` for each event logged on ``topic`` from now on."""
        self._check_open("subscribe_topic")
        self._topics.subscribe(topic, handler)

    def unsubscribe_topic(self, topic: str) -> None:
        self._topics.unsubscribe(topic)

    # -- logs (rdist.client.logs, rdist.client.dump) ---------------------------------------------
    def get_worker_logs(
        self, n: int | None = None, workers: Any = None, nanny: bool = False
    ) -> dict[str, list[tuple[str, str]]]:
        """``{address: [(level, line), ...]}``: the last ``n`` lines (None: all kept) of each
        worker's log (``nanny``: its nanny's), oldest first, as dask's."""
        self._check_open("get_worker_logs")
        return client_logs.worker_logs(self.store, n, workers, nanny)

    def get_scheduler_logs(self, n: int | None = None) -> list[tuple[str, str]]:
        """The last ``n`` lines (None: all kept) of the scheduler's log, oldest first."""
        self._check_open("get_scheduler_logs")
        return client_logs.scheduler_logs(self.store, n)

    def forward_logging(self, logger_name: str | None = None, level: int = logging.NOTSET) -> None:
        """Records of ``logger_name`` (None: the root logger) at ``level`` and above,
        logged on the workers (by tasks), are handled again by this client's logger of the
        same name, as dask's."""
        self._check_open("forward_logging")
        topic = client_logs.forwarding_topic(logger_name)
        self._topics.subscribe(topic, client_logs.re_emit)
        plugin = client_logs.ForwardLogging(logger_name, level, topic)
        self._plugins.register(plugin, topic, None)

    def unforward_logging(self, logger_name: str | None = None) -> None:
        """Stop what :meth:`forward_logging` of ``logger_name`` started."""
        topic = client_logs.forwarding_topic(logger_name)
        self._topics.unsubscribe(topic)
        self._plugins.unregister(topic)

    def dump_cluster_state(
        self,
        filename: str = "dump",
        write_from_scheduler: bool | None = None,
        exclude: Iterable[str] = (),
        format: str = "msgpack",
    ) -> str:
        """Write the scheduler's state (from Redis) and every worker's (asked of it) to
        ``filename`` + ``.msgpack.gz`` or ``.yaml``, for a bug report; returns the path.
        dask's signature: ``write_from_scheduler`` changes nothing here (the scheduler
        runs no such code: the client always writes the file)."""
        self._check_open("dump_cluster_state")
        state = dump.cluster_state(self.store, lambda f: Client.run(self, f, on_error="return"))
        return dump.write(state, filename, format, exclude)

    def wait_for_workers(self, n_workers: int = 1, timeout: float | None = None) -> None:
        """Block until ``n_workers`` workers are running (woken by join events, no polling)."""
        self._check_open("wait_for_workers")
        self._introspection.wait_for_workers(n_workers, timeout)

    # -- diagnostics (rdist.client.diagnostics) ------------------------------------------------
    def get_task_stream(
        self,
        start: Any = None,
        stop: Any = None,
        count: int | None = None,
        plot: bool | str = False,
        filename: str = "task-stream.html",
    ) -> Any:
        """The task-stream records of ``[start, stop]`` (epoch seconds, datetimes, or
        durations ago like ``"10s"``), the last ``count`` only when given, as dask's; with
        ``plot``, ``(records, filename)`` after writing them as an HTML page there."""
        begin, end = diag.time_bound(start), diag.time_bound(stop)
        records = diag.task_records(*diag.task_stream(self.store, begin, end), count)
        if not plot:
            return records
        diag.write_task_stream(filename, records)
        return records, filename

    def profile(
        self,
        key: str | None = None,
        start: Any = None,
        stop: Any = None,
        workers: Any = None,
        filename: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The sampling profiler's call tree of ``[start, stop]`` as dask's profile dict
        (of the task group ``key`` only, e.g. ``"inc"``, when given); with ``filename``,
        an HTML flame graph is written there too."""
        begin, end = diag.time_bound(start), diag.time_bound(stop)
        chosen = None if workers is None else [str(w) for w in _as_list(workers)]
        state = diag.profile(self.store, key, begin, end, chosen)
        if filename is not None:
            diag.write_profile(filename, state, f"rdist profile{f' of {key}' if key else ''}")
        return state

    def story(
        self, *keys_or_stimuli: Any, on_error: str = "raise", timeout: float | None = None
    ) -> list[StoryEvent]:
        """What happened to these keys (or stimulus ids), as dask's ``Client.story``: the
        transition records of the scheduler and of every worker, merged in time order,
        each a :class:`~rdist.client.introspection.StoryEvent` naming its ``source``.

        Every process is asked on its stream and answers on this client's; one that does
        not answer within ``timeout`` (default: the client's) raises TimeoutError naming
        it, or with ``on_error="ignore"`` is logged and left out."""
        self._check_open("ask for a story")
        return self._introspection.story(keys_or_stimuli, on_error, timeout)

    # -- published datasets (rdist.client.datasets) ------------------------------------------
    def publish_dataset(
        self, *args: Any, name: Any = None, override: bool = False, **kwargs: Any
    ) -> None:
        """Publish named datasets (futures, persisted collections, any object) for every
        client: ``publish_dataset(x=df)``, ``publish_dataset(df, name="x")`` or
        ``publish_dataset({"x": df})``; KeyError if a name exists unless ``override``.
        Their futures stay computed until unpublished, whoever leaves."""
        self._datasets.publish(args, name, override, kwargs)

    def get_dataset(self, name: Any, default: Any = NO_DEFAULT, **kwargs: Any) -> Any:
        """A published dataset (a list of them for a list of names); KeyError if it does
        not exist, unless a ``default`` is given."""
        return self._datasets.get(name, default)

    def unpublish_dataset(self, name: Any, **kwargs: Any) -> None:
        """Remove published datasets (a name or a list of names); unknown names are fine."""
        self._datasets.unpublish(name)

    def list_datasets(self, **kwargs: Any) -> list[str]:
        """The names of the published datasets, sorted."""
        return self._datasets.names()

    @property
    def datasets(self) -> Datasets:
        """The published datasets as a mapping: ``client.datasets["x"] = df``, ``del``,
        ``in``, iteration, ``len``."""
        return Datasets(self)

    # -- plugins (rdist.plugins) ---------------------------------------------------------------
    def register_plugin(
        self, plugin: Any, name: str | None = None, idempotent: bool | None = None
    ) -> dict[str, Any]:
        """Register a WorkerPlugin (set up on every worker, present and future), a
        NannyPlugin (every nanny) or a SchedulerPlugin (accepted only by a scheduler
        started with ``--accept-client-plugins``). A failing ``setup`` raises here."""
        return self._plugins.register(plugin, name, idempotent)

    def upload_file(self, filename: str, load: bool = True) -> dict[str, Any]:
        """Send a ``.py``, ``.zip`` or ``.egg`` file to every worker, now and every worker
        that joins later, and put it on their import path (``load``: import it at once) --
        dask's ``upload_file``, as an ``UploadFile`` worker plugin; uploading a file of the
        same name again replaces it."""
        from rdist.plugins import UploadFile

        if not os.path.isfile(filename):
            raise FileNotFoundError(f"upload_file(filename={filename!r}): no such file")
        name = f"upload-file-{os.path.basename(filename)}"
        return Client.register_plugin(self, UploadFile(filename, load=load), name=name)

    def register_worker_plugin(
        self, plugin: Any = None, name: str | None = None, nanny: bool | None = None
    ) -> dict[str, Any]:
        """dask's older spelling of :meth:`register_plugin` for worker/nanny plugins."""
        return self._plugins.register(plugin, name)

    def register_scheduler_plugin(
        self, plugin: Any, name: str | None = None, idempotent: bool | None = None
    ) -> dict[str, Any]:
        """dask's older spelling of :meth:`register_plugin` for scheduler plugins."""
        return self._plugins.register(plugin, name, idempotent)

    def unregister_worker_plugin(self, name: str, nanny: bool | None = None) -> dict[str, Any]:
        """Tear a worker (``nanny=True``: nanny) plugin down everywhere and forget it."""
        return self._plugins.unregister(name, nanny)
