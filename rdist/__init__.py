"""rdist: Dask-style distributed futures, coordinated through Redis."""

from rdist.client import Client, Future, as_completed, fire_and_forget, wait
from rdist.client.default import default_client
from rdist.client.future import futures_of
from rdist.cluster import LocalCluster
from rdist.exceptions import CancelledError, KilledWorker
from rdist.worker import get_worker
from rdist.worker.execution import get_client, rejoin, secede, worker_client

__version__ = "0.1.0"

__all__ = [
    "CancelledError",
    "Client",
    "Future",
    "KilledWorker",
    "LocalCluster",
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
