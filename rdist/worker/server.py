"""The worker process: a state machine (:mod:`rdist.worker.state`) in a thin shell.

The shell turns stream entries (:mod:`rdist.worker.stream`) and thread completions
(:mod:`rdist.worker.execution`, the data plane's fetches) into events, and the machine's
instructions into I/O: running tasks, fetching data, dropping data, reports
(:mod:`rdist.worker.reporting`). This module composes them and owns the life cycle:
joining, heartbeats, pausing for memory, restarting, leaving.

Threads: the stream reader, ``nthreads`` executors (one more per seceded task), one
reporter, a heartbeat, the memory monitor, the data server and a few dependency fetchers.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from typing import Any

from rdist.actors.host import ActorHost
from rdist.client.client import Client
from rdist.comm.security import Security
from rdist.comm.transfer import decode_items, encode_items  # noqa: F401  (re-exported)
from rdist.config import load_config, mask_url
from rdist.logbuffer import ProcessLog, rdist_version
from rdist.plugins.worker_side import TaskViews, WorkerPlugins
from rdist.procs import EXIT_RETIRED
from rdist.protocol import serialize
from rdist.protocol.wire import (
    AddKeys,
    Run,
    RunResult,
    Stop,
    StoryReply,
    StoryRequest,
    TransferRun,
    WorkerJoin,
    WorkerLeave,
    WorkerStatus,
)
from rdist.store import RedisStore, connect
from rdist.store.connection import ConnectionErrors
from rdist.store.epoch import EpochWatch
from rdist.store.keys import WORKER_GROUP
from rdist.supervise import OnDeath, exit_process, start_thread
from rdist.worker import handoff, heartbeats, tracing
from rdist.worker.context import bind_worker, get_worker  # noqa: F401  (re-exported)
from rdist.worker.dataplane import DataPlane, listen_address_of
from rdist.worker.events import (
    Event,
    Execute,
    GatherDep,
    GatherDepFailed,
    GatherDepSuccess,
    Instruction,
    Pause,
    RejoinGranted,
    ReleaseData,
    ReportReplicas,
    ResetState,
    SendReport,
    Unpause,
)
from rdist.worker.execution import Executor
from rdist.worker.memory import MemoryFractions, MemoryMonitor, SpillBuffer, return_freed_memory
from rdist.worker.profiler import Profiler, interval_from_env
from rdist.worker.reporting import Reporter
from rdist.worker.state import WorkerState
from rdist.worker.stream import StreamReader

log = logging.getLogger("rdist.worker")

#: Peer fetches kept for the next report's task-stream entry (older ones are dropped).
MAX_TRANSFERS_KEPT = 2_000
#: How long leaving waits for the client of our tasks to say goodbye.
TASK_CLIENT_CLOSE_SECONDS = 2.0


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
        security: Security | None = None,
        heartbeat_interval: float | None = None,
    ) -> None:
        self.started = time.time()  #: start (or last restart) time, for client.restart()
        self.under_nanny = False  #: set by run_worker: a nanny restarts us when we exit
        self.handoff_on_close = True  #: hand unique data to peers when leaving
        #: retired (``client.retire_workers``): hand data only to these peers, and exit
        #: with EXIT_RETIRED so that a nanny does not start a new worker
        self.retired_for: list[str] | None = None
        self.store = store
        #: seconds between heartbeats (``worker.heartbeat_interval`` unless given)
        self.heartbeat_interval = (
            heartbeat_interval
            if heartbeat_interval is not None
            else float(load_config().get("worker.heartbeat_interval"))
        )
        self.nthreads = max(1, nthreads)
        self.memory_limit = memory_limit
        self.resources = dict(resources or {})
        self.state = WorkerState(self.nthreads, self.resources)
        self.lock = threading.RLock()  #: held around the state machine
        fractions = memory_fractions or MemoryFractions.from_env()
        #: key -> value, spilling least recently used data to disk past the target fraction
        self.data = SpillBuffer(int(fractions.target * memory_limit), spill_directory)
        self.nbytes = self.data.nbytes
        self.monitor = MemoryMonitor(self.data, memory_limit, fractions, self._set_paused)
        self.status = "running"  #: "paused" while memory is past the pause fraction
        self.running = threading.Event()  #: clear while paused: no new fetches
        self.running.set()
        self.stop_event = threading.Event()
        #: set when close() has finished, so a second caller can wait for the first
        self.closed = threading.Event()
        self._client: Client | None = None  #: get_client() inside tasks
        self._stimuli = itertools.count()
        self.secret = store.meta.cluster_secret()
        #: the cluster epoch seen last (heartbeats): a new one means Redis lost data
        self.epoch_watch = EpochWatch()
        self.dataplane = DataPlane(
            self,
            listen_address_of(host, port, listen_address),
            contact_address or contact_host,
            transfer,
            security,
        )
        self.server, self.peers = self.dataplane.listener, self.dataplane.pool
        self.address = self.dataplane.address
        self.name = name or self.address
        self.stream = store.keys.worker_stream(self.address)
        self.executed = 0
        #: inputs copied here since the last report; the scheduler records the replicas
        #: (who_has) so that it frees them when the key is released
        self._replicas: list[str] = []
        self.threads: list[threading.Thread] = []
        #: what happens when one of our supervised threads dies anyway (see rdist.supervise):
        #: the process exits non-zero, and a nanny starts a fresh worker
        self.on_thread_death: OnDeath = exit_process
        self.reader_store = store.clone()
        self.reporter = Reporter(self, store.clone())
        #: samples the running tasks' stacks (rdist.worker.profiler); off with
        #: RDIST_PROFILE_INTERVAL=0
        interval = interval_from_env()
        self.profiler = Profiler(
            self.address, store.clone() if interval else store, self.stop_event, interval
        )
        #: task runs as OpenTelemetry spans, when opentelemetry-api is installed
        self.tracer = tracing.task_tracer(self.address)
        #: peer fetches since the last report, for the task stream (rdist.worker.reporting)
        self.transfers: deque[TransferRun] = deque(maxlen=MAX_TRANSFERS_KEPT)
        #: key -> ``[span id, *names]`` of the tasks run here inside an ``rdist.span``,
        #: until their report (rdist.worker.reporting)
        self.task_spans: dict[str, list[str]] = {}
        self.executor = Executor(self)
        self.stream_reader = StreamReader(self)
        #: the actors made here (``submit(cls, actor=True)``) and their calls
        self.actors = ActorHost(self.address, lambda: bind_worker(self))
        #: registered worker plugins (``client.register_plugin``), set up at start
        self.plugins = WorkerPlugins(self, store)
        self._local_directory: str | None = None
        #: this process's last log lines, published to ``logs:worker:<address>``
        self.logs = ProcessLog(store, "worker", self.address)

    # -- the state machine ---------------------------------------------------------------------
    def stimulus(self, cause: str) -> str:
        """A stimulus id for an event that no stream entry caused."""
        return f"{cause}-{next(self._stimuli)}"

    def handle(self, *events: Event) -> tuple[list[Execute], list[SendReport]]:
        """Feed events to the state machine and carry out its instructions, except the two
        kinds whose thread matters: the tasks to run and the report items, returned."""
        with self.lock:
            plugins = self.plugins
            if plugins.watching:  # (a plugin's transition hook: the log's new entries)
                log_ = self.state.log
                last = log_[-1] if log_ else None
                instructions = self.state.handle_stimulus(*events)
                plugins.note_failures(events)
                plugins.transitions(log_, last)
            else:
                instructions = self.state.handle_stimulus(*events)
        executes: list[Execute] = []
        reports: list[SendReport] = []
        for ins in instructions:
            if type(ins) is Execute:
                executes.append(ins)
            elif isinstance(ins, SendReport):
                if isinstance(ins, ReportReplicas):
                    with self.lock:  # they ride the next report, whoever sends it
                        self._replicas += ins.keys
                else:
                    reports.append(ins)
            else:
                self._carry_out(ins)
        return executes, reports

    def _carry_out(self, ins: Instruction) -> None:
        if isinstance(ins, ReleaseData):
            self.data.discard_many(ins.keys)
            self.actors.discard(ins.keys)
        elif isinstance(ins, GatherDep):
            self.dataplane.fetch(ins.wanted)
        elif isinstance(ins, RejoinGranted):
            self.executor.granted(ins.key)

    def dispatch(self, *events: Event) -> None:
        """Handle events from a thread that neither runs tasks nor reports itself."""
        executes, reports = self.handle(*events)
        self.executor.submit(executes)
        self.reporter.put(reports)

    def take_replicas(self) -> list[str]:
        with self.lock:
            replicas, self._replicas = self._replicas, []
        return replicas

    def fetched(self, got: list[str], lost: list[str], tried: list[str] | None = None) -> None:
        """A batch of inputs was fetched (``got``, stored already) or could not be."""
        now, events = time.time(), list[Event]()
        if got:
            events.append(GatherDepSuccess(self.stimulus("gather-dep"), now, got))
        if lost:
            events.append(GatherDepFailed(self.stimulus("gather-dep"), now, lost, tried or []))
        self.dispatch(*events)

    def _is_fast(self, ts: Any) -> bool:
        return self.state.is_quick(ts.key)

    # -- life cycle ----------------------------------------------------------------------------
    def info(self) -> WorkerJoin:
        return WorkerJoin(
            self.address,
            self.name,
            self.nthreads,
            self.memory_limit,
            self.resources,
            socket.gethostname(),
            os.getpid(),
            self.status,
            self.started,
            self.dataplane.mode,
        )

    def start(self) -> None:
        self.logs.start()
        self.server.start()
        self._announce()
        beats = self.store.clone()
        targets = [
            ("rdist-report", self.reporter.run),
            ("rdist-heartbeat", lambda: heartbeats.run(self, beats)),
        ]
        if self.profiler.enabled:
            targets.append(("rdist-profile", self.profiler.run))
        if self.memory_limit:
            targets.append(("rdist-memory", lambda: self.monitor.run(self.stop_event)))
        for name, target in targets:
            self.threads.append(start_thread(name, target, self.stop_event, self.on_thread_death))
        # before the first task (and after we are known: a registration made meanwhile
        # reaches us on our stream); heartbeats go on while a slow setup runs
        self.plugins.setup_registered()
        self.stream_reader.start(self.reader_store)
        for i in range(self.nthreads):
            self.executor.start_thread(f"rdist-exec-{i}")
        log.info(
            "rdist %s worker %s (name %r, pid %d) started with %d threads, %s data transfer, "
            "in cluster %r on %s",
            rdist_version(),
            self.address,
            self.name,
            os.getpid(),
            self.nthreads,
            self.dataplane.mode,
            self.store.keys.cluster,
            mask_url(self.store.url),
        )

    def _announce(self) -> None:
        self.store.ensure_group(self.stream, WORKER_GROUP, start="0")
        pipe = self.store.pipeline()
        self.store.streams.to_scheduler(self.info(), pipe)
        self.store.workers.put(heartbeats.record(self), pipe)
        self.store.epoch.read(pipe)
        self.epoch_watch.start(pipe.execute()[-1])  # the epoch we join in

    def restart(self) -> None:
        """``client.restart()``: under a nanny, leave and let it start a fresh process;
        otherwise drop every task and all data and join again (a task still running is
        abandoned: its result is discarded when it ends)."""
        self.started = time.time()
        if self.under_nanny:
            self.handoff_on_close = False
            threading.Thread(target=self.close, daemon=True).start()
            return
        self._start_afresh()

    def retire(self, peers: list[str]) -> None:
        """Leave for good (``client.retire_workers``): results only we hold go to
        ``peers`` (the workers that stay), then we close."""
        self.retired_for = list(peers)
        self.handoff_on_close = True  # even under a nanny: this worker is not coming back
        self.close()

    def rejoin_cluster(self) -> None:
        """Our stream is gone: the scheduler declared us dead (e.g. we stalled past the
        heartbeat timeout) and rescheduled our work. Start afresh and join again."""
        log.warning(
            "worker %s was removed by the scheduler: dropping its state and rejoining", self.address
        )
        self._start_afresh()

    def _start_afresh(self) -> None:
        """Forget every task and all data, then join the cluster again."""
        self.dispatch(ResetState(self.stimulus("reset"), time.time()))
        self.data.clear()
        self.actors.clear()
        self.take_replicas()
        self._announce()

    def close(self) -> None:
        """Leave cleanly: tell the scheduler, stop threads, close the data server."""
        if self.stop_event.is_set():
            if threading.current_thread() not in self.threads:
                self.closed.wait(10)  # e.g. the process exiting while a SIGTERM close runs
            return
        self.stop_event.set()
        self.profiler.stop()
        self._wake_reader()
        store = self.store
        try:
            moved = handoff.hand_off(self) if self.handoff_on_close else {}
            pipe = store.pipeline()
            for peer, peer_keys in moved.items():  # before we leave, so nothing counts as lost
                store.streams.to_scheduler(AddKeys(peer, peer_keys), pipe)
            store.streams.to_scheduler(WorkerLeave(self.address), pipe)
            store.workers.remove([self.address], pipe)
            pipe.execute()
        except ConnectionErrors:
            log.warning("could not announce departure of %s: redis unavailable", self.address)
        self.executor.close()
        self._close_task_client()
        self.plugins.teardown_all()
        self.running.set()  # wake threads waiting out a pause
        self.reporter.stop()
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        try:  # removed again: a heartbeat racing the first removal may have re-added us
            pipe = store.pipeline()
            store.streams.drop_worker_streams([self.address], pipe)
            store.workers.remove([self.address], pipe)
            pipe.execute()
        except ConnectionErrors:
            pass
        self.dataplane.close()
        self.actors.close()
        self.data.close()  # removes the spill directory
        if self._local_directory is not None:
            shutil.rmtree(self._local_directory, ignore_errors=True)
        self.profiler.stop()
        if self.profiler.store is not store:
            self.profiler.store.close()
        self.logs.close()  # (its last lines: the departure)
        for connection in (self.reader_store, self.reporter.store):
            connection.close()
        self.closed.set()

    def _close_task_client(self) -> None:
        """The client of our tasks (``get_client()``) leaves with us, as any client that
        closes: left open, the scheduler would find it silent later and log it as lost."""
        with self.lock:
            client, self._client = self._client, None
        if client is None:
            return

        def close() -> None:
            try:
                client.close()
            except Exception:  # leaving goes on; its heartbeat lapses at the scheduler
                log.exception("worker %s: closing the client of its tasks failed", self.address)

        # bounded: with Redis away, the client's last send would retry for a while
        closing = threading.Thread(target=close, name="rdist-close-task-client", daemon=True)
        closing.start()
        closing.join(TASK_CLIENT_CLOSE_SECONDS)

    def _wake_reader(self) -> None:
        """An entry on our own stream ends the stream thread's blocking read at once (it
        sees the stop flag and leaves), instead of after its block time."""
        try:
            self.store.streams.to_worker(self.address, Stop())
        except ConnectionErrors:
            pass

    def log_event(self, topic: str | list[str], msg: Any) -> None:
        """Log ``msg`` on ``topic`` from a task (``get_worker().log_event``), as dask's."""
        from rdist.client.topics import log_event

        log_event(self.store, topic, msg)

    def run_forever(self) -> None:
        self.start()
        self.stop_event.wait()

    @property
    def local_directory(self) -> str:
        """A directory of this worker's own (uploaded files go there), removed at close."""
        if self._local_directory is None:
            self._local_directory = tempfile.mkdtemp(prefix="rdist-worker-files-")
        return self._local_directory

    @property
    def tasks(self) -> TaskViews:
        """The tasks here, as plugins see them (dask's ``worker.tasks[key]``: ``state``,
        and ``exception`` / ``traceback`` of a task that failed here)."""
        return TaskViews(self.state.tasks, self.plugins.errors)

    # -- memory --------------------------------------------------------------------------------
    def wait_until_running(self) -> None:
        """Block while the worker is paused (memory); returns at once when it runs."""
        self.running.wait()

    def _set_paused(self, paused: bool) -> None:
        """The memory monitor's verdict: a paused worker starts nothing new, and the
        scheduler assigns it nothing new, until memory is back under the pause fraction."""
        self.status = "paused" if paused else "running"
        (self.running.clear if paused else self.running.set)()
        event = Pause if paused else Unpause
        self.dispatch(event(self.stimulus(self.status), time.time()))
        try:
            pipe = self.store.pipeline()
            self.store.streams.to_scheduler(WorkerStatus(self.address, self.status), pipe)
            self.store.workers.put(heartbeats.record(self), pipe)
            pipe.execute()
        except ConnectionErrors as exc:
            log.warning("worker %s: cannot report status %s: %s", self.address, self.status, exc)

    # -- requests on our stream ----------------------------------------------------------------
    def run_function(self, msg: Run) -> None:
        """``client.run``: call the function here and answer the client."""
        bind_worker(self)
        try:
            func, args, kwargs = serialize.from_blob(msg.func)
            if _takes_dask_worker(func):  # dask's convention: the worker itself
                kwargs = {**kwargs, "dask_worker": self}
            result = func(*args, **kwargs)
            if inspect.iscoroutine(result):  # an ``async def``: on the worker's event loop
                result = self.actors.run_coroutine(_bound(self, result))
            ok, value = True, serialize.to_blob(result)
        except BaseException as exc:
            ok, value = False, serialize.to_blob((exc, traceback.format_exc()))
        self.store.streams.to_client(msg.client, RunResult(msg.id, self.address, ok, value))

    def tell_story(self, msg: StoryRequest) -> None:
        """``client.story``: the transitions our state machine logged for the keys."""
        with self.lock:
            records = self.state.story(*msg.keys)
        self.store.streams.to_client(msg.client, StoryReply(msg.id, self.address, records))

    def task_client(self) -> Client:
        """The client tasks on this worker use (``get_client()``), created on first use."""
        with self.lock:
            if self._client is None:
                self._client = Client(
                    self.store.url,
                    cluster_name=self.store.keys.cluster,
                    set_as_default=False,
                    name=f"worker-{self.name}",
                )
            return self._client


def _takes_dask_worker(func: Any) -> bool:
    try:
        return "dask_worker" in inspect.signature(func).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


async def _bound(worker: Worker, coroutine: Any) -> Any:
    """``coroutine`` awaited on the worker's loop thread, where ``get_worker()`` works."""
    bind_worker(worker)
    return await coroutine


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
    sys.exit(EXIT_RETIRED if worker.retired_for is not None else 0)
