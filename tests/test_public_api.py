"""The public surface of ``import rdist`` is small, sorted and pinned here."""

from __future__ import annotations

import rdist

EXPECTED = [
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


def test_all_is_sorted():
    assert rdist.__all__ == sorted(rdist.__all__)


def test_all_is_exactly_the_expected_public_names():
    assert rdist.__all__ == EXPECTED


def test_every_public_name_is_importable_from_the_package():
    for name in rdist.__all__:
        assert getattr(rdist, name) is not None, name


def test_exceptions_are_the_ones_users_catch():
    import concurrent.futures

    assert issubclass(rdist.CancelledError, concurrent.futures.CancelledError)
    assert issubclass(rdist.KilledWorker, Exception)
