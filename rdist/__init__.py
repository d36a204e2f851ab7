"""rdist: Dask-style distributed futures, coordinated through Redis.

The public names load on first use (PEP 562): ``from rdist import Client`` imports the
client then, and ``python -m rdist worker`` -- or the nanny, which only watches a child --
does not pay for the client, actors and plugins it never touches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rdist.client import diagnostics as client_diagnostics
from rdist.client import local_cluster
from rdist.lazy import exports

if TYPE_CHECKING:
    from rdist.actors import Actor, ActorFuture
    from rdist.client import Client, Future, as_completed, fire_and_forget, wait
    from rdist.client.default import default_client
    from rdist.client.future import futures_of
    from rdist.client.spans import span
    from rdist.cluster import LocalCluster
    from rdist.diagnostics import get_task_stream, performance_report, progress
    from rdist.exceptions import CancelledError, KilledWorker, Reschedule
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
    from rdist.worker.tasklog import print, warn  # noqa: A004  (dask's names)

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
    "Reschedule",
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
    "get_task_stream",
    "get_worker",
    "performance_report",
    "print",
    "progress",
    "rejoin",
    "secede",
    "span",
    "wait",
    "warn",
    "worker_client",
]

#: where each public name lives
_HOMES = {
    "Actor": "rdist.actors",
    "ActorFuture": "rdist.actors",
    "CancelledError": "rdist.exceptions",
    "Client": "rdist.client",
    "Environ": "rdist.plugins",
    "Event": "rdist.primitives",
    "Future": "rdist.client",
    "KilledWorker": "rdist.exceptions",
    "LocalCluster": "rdist.cluster",
    "Lock": "rdist.primitives",
    "MultiLock": "rdist.primitives",
    "NannyPlugin": "rdist.plugins",
    "PipInstall": "rdist.plugins",
    "Queue": "rdist.primitives",
    "Reschedule": "rdist.exceptions",
    "SchedulerPlugin": "rdist.plugins",
    "Semaphore": "rdist.primitives",
    "UploadDirectory": "rdist.plugins",
    "UploadFile": "rdist.plugins",
    "Variable": "rdist.primitives",
    "WorkerPlugin": "rdist.plugins",
    "as_completed": "rdist.client",
    "default_client": "rdist.client.default",
    "fire_and_forget": "rdist.client",
    "futures_of": "rdist.client.future",
    "get_client": "rdist.worker.execution",
    "get_task_stream": "rdist.diagnostics.report",
    "get_worker": "rdist.worker",
    "performance_report": "rdist.diagnostics.report",
    "progress": "rdist.diagnostics.progressbar",
    "print": "rdist.worker.tasklog",
    "rejoin": "rdist.worker.execution",
    "secede": "rdist.worker.execution",
    "span": "rdist.client.spans",
    "wait": "rdist.client",
    "warn": "rdist.worker.tasklog",
    "worker_client": "rdist.worker.execution",
}

# ``Client()`` without an address starts rdist.cluster's LocalCluster, loaded by name then:
# the client below may not import the cluster above it (see rdist.client.local_cluster)
local_cluster.register_module("rdist.cluster")
# ``client.profile(filename=...)`` writes its page with the diagnostics package, above the
# client (rdist.client.diagnostics): named here, loaded when a page is written
client_diagnostics.register_renderer("rdist.diagnostics.html")


__getattr__ = exports(__name__, _HOMES)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
