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

The rest of dask's methods are functions of the client, grouped by concern and set on
the class under their names (signatures and docstrings with them):
:mod:`~rdist.client.graph_calls` (``get``, ``compute``, ``persist``),
:mod:`~rdist.client.data_calls` (``scatter``, ``replicate``, ``rebalance``),
:mod:`~rdist.client.cluster_calls` (who has what, ``run``, ``restart``, retiring),
:mod:`~rdist.client.observing` (logs, topics, task stream, profile, ``story``) and
:mod:`~rdist.client.sharing` (datasets, plugins).

Two threads per client: the sender thread (for what the calling threads do not send
themselves) and the listener blocked on the client's stream.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

from rdist import task_context
from rdist.client import asynchronous as async_client
from rdist.client import (
    cluster_calls,
    data_calls,
    default,
    graph_calls,
    local_cluster,
    observing,
    sharing,
    validate,
)
from rdist.client import collections as dask_collections
from rdist.client import logs as client_logs
from rdist.client.actor_calls import ActorRelay, actor_call, actor_map
from rdist.client.answers import Answers
from rdist.client.data import ClientData
from rdist.client.datasets import DatasetOps
from rdist.client.executor import ClientExecutor
from rdist.client.future import ERROR, Future, futures_of
from rdist.client.holders import Holdings
from rdist.client.inbox import Inbox
from rdist.client.introspection import Introspection
from rdist.client.ledger import Ledger
from rdist.client.listener import Listener, StreamWatch
from rdist.client.options import call_options
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
        self._submitter = Submitter(
            self, self._sender, self.ledger, partial(data_calls.place, self)
        )
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
        self._sender.waited_since = self._inbox.waited_since
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
        options = call_options(workers, resources, retries, priority, allow_other_workers)
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
        options = call_options(workers, resources, retries, priority, allow_other_workers)
        return self._submitter.map(func, iterables, kwargs, key, validate.pure(pure), options)

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

    # -- control -----------------------------------------------------------------------------
    def cancel(self, futures: Any, force: bool = False, reason: str | None = None) -> None:
        """Cancel these futures (and their dependents); waits for the scheduler to confirm."""
        self._check_open("cancel")
        found = futures_of(futures)
        keys = list(dict.fromkeys(f._name for f in found))
        if keys:
            self.ledger.cancel(found, keys, force, self.timeout)

    def retry(self, futures: Any) -> None:
        """Run erred futures again."""
        self._check_open("retry")
        self.ledger.retry([f for f in futures_of(futures) if f.status == ERROR])

    # -- the rest of dask's Client: functions of the client in rooms of their own ----------
    # (each is the method itself: ``Client.run is cluster_calls.run``, dask's signature
    # and docstring included; see the module named for where each one's work is done)

    #: task graphs and dask collections
    get = graph_calls.get
    compute = graph_calls.compute
    persist = graph_calls.persist
    normalize_collection = graph_calls.normalize_collection
    recreate_error_locally = graph_calls.recreate_error_locally

    #: data put on workers and moved between them
    scatter = data_calls.scatter
    replicate = data_calls.replicate
    rebalance = data_calls.rebalance

    #: workers and their data, ``run``, versions, metadata, the workers' lifetime
    scheduler_info = cluster_calls.scheduler_info
    nthreads = cluster_calls.nthreads
    ncores = cluster_calls.nthreads
    who_has = cluster_calls.who_has
    has_what = cluster_calls.has_what
    processing = cluster_calls.processing
    nbytes = cluster_calls.nbytes
    wait_for_workers = cluster_calls.wait_for_workers
    run = cluster_calls.run
    run_on_scheduler = cluster_calls.run_on_scheduler
    get_versions = cluster_calls.get_versions
    set_metadata = cluster_calls.set_metadata
    get_metadata = cluster_calls.get_metadata
    restart = cluster_calls.restart
    retire_workers = cluster_calls.retire_workers
    shutdown = cluster_calls.shutdown
    amm = property(cluster_calls.amm)

    #: events on topics, logs, the task stream, the profiler, stories, cluster dumps
    log_event = observing.log_event
    get_events = observing.get_events
    subscribe_topic = observing.subscribe_topic
    unsubscribe_topic = observing.unsubscribe_topic
    get_worker_logs = observing.get_worker_logs
    get_scheduler_logs = observing.get_scheduler_logs
    forward_logging = observing.forward_logging
    unforward_logging = observing.unforward_logging
    dump_cluster_state = observing.dump_cluster_state
    get_task_stream = observing.get_task_stream
    profile = observing.profile
    story = observing.story

    #: published datasets and plugins
    publish_dataset = sharing.publish_dataset
    get_dataset = sharing.get_dataset
    unpublish_dataset = sharing.unpublish_dataset
    list_datasets = sharing.list_datasets
    datasets = property(sharing.datasets)
    register_plugin = sharing.register_plugin
    upload_file = sharing.upload_file
    register_worker_plugin = sharing.register_worker_plugin
    register_scheduler_plugin = sharing.register_scheduler_plugin
    unregister_worker_plugin = sharing.unregister_worker_plugin
