"""rdist: Dask-style distributed futures, coordinated through Redis."""

from rdist.actors import Actor, ActorFuture
from rdist.client import Client, Future, as_completed, fire_and_forget, wait
from rdist.client.default import default_client
from rdist.client.future import futures_of
from rdist.cluster import LocalCluster
from rdist.exceptions import CancelledError, KilledWorker
from rdist.plugins import (
    Environ,
    NannyPlugin,
    PipInstall,
    SchedulerPlugin,
    UploadDirectory,
    UploadFile,
    WorkerPlugin,
)
from rdist.primitives import Event, Lock, MultiLock, Queue, Semaphore, Variable
from rdist.worker import get_worker
from rdist.worker.execution import get_client, rejoin, secede, worker_client

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "ActorFuture",
    "CancelledError",
    "Client",
    "Environ",
    "Event",
    "Future",
    "KilledWorker",
    "LocalCluster",
    "Lock",
    "MultiLock",
    "NannyPlugin",
    "PipInstall",
    "Queue",
    "SchedulerPlugin",
    "Semaphore",
    "UploadDirectory",
    "UploadFile",
    "Variable",
    "WorkerPlugin",
    "as_completed",
    "default_client",
    "fire_and_forget",
    "futures_of",
    "get_client",
    "get_worker",
    "rejoin",
    "secede",
    "wait",
    "worker_client",
]
