"""A worker's heartbeats: its record in the ``workers`` hash (identity and latest metrics)
rewritten, and a sample on the capped ``heartbeats`` stream, every second."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import psutil

from rdist.comm import buffers
from rdist.protocol.wire import Heartbeat, WorkerRecord
from rdist.store import RedisStore
from rdist.store.connection import ConnectionErrors
from rdist.store.health import Backoff
from rdist.worker.state import WTaskState

if TYPE_CHECKING:
    from rdist.worker.server import Worker

log = logging.getLogger("rdist.worker")

HEARTBEAT_SECONDS = 1.0

#: One object: ``cpu_percent(None)`` measures since its previous call.
_PROCESS = psutil.Process()


def metrics(worker: Worker) -> Heartbeat:
    with worker.lock:
        executing = worker.state.count(WTaskState.EXECUTING, WTaskState.LONG_RUNNING)
    data = worker.data
    return Heartbeat(
        worker.address,
        _PROCESS.memory_info().rss,
        _PROCESS.cpu_percent(None),
        executing,
        len(data),
        data.memory_bytes,
        data.spilled_bytes,
        worker.executed,
        time.time(),
    )


def record(worker: Worker, beat: Heartbeat | None = None) -> WorkerRecord:
    """The worker's record: what it announced on joining, and its latest metrics."""
    info, beat = worker.info(), beat or metrics(worker)
    return WorkerRecord(
        info.address,
        info.name,
        info.nthreads,
        info.memory_limit,
        info.resources,
        info.host,
        info.pid,
        info.status,
        info.started,
        info.transfer,
        beat.memory,
        beat.cpu,
        beat.executing,
        beat.stored,
        beat.stored_bytes,
        beat.spilled_bytes,
        beat.executed,
        beat.last_seen,
    )


def run(worker: Worker, store: RedisStore) -> None:
    """Beat until the worker stops (on a connection of its own)."""
    backoff = Backoff(f"worker {worker.address}: heartbeat", store.url, log)
    while not worker.stop_event.wait(HEARTBEAT_SECONDS):
        buffers.POOL.trim()  # receive buffers idle for a while go back to the system
        try:
            beat = metrics(worker)
            pipe = store.pipeline()
            store.workers.put(record(worker, beat), pipe)
            store.streams.heartbeat(beat, pipe)
            pipe.execute()
            backoff.succeeded()
        except ConnectionErrors as exc:
            backoff.failed(exc)  # beats keep their pace; a permanent error raises
    store.close()
