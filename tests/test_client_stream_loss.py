"""Redis losing a client's stream must not lose the client's futures (real tier).

Senders never re-create a client's stream (``XADD NOMKSTREAM``), so once the stream is
deleted -- or trimmed while notifications sit unread -- what the scheduler says about a key
vanishes. The client's stream watch (``rdist.client.listener.StreamWatch``) notices its
marker entry gone, makes the stream again and asks the scheduler once more about every
key it waits on: the futures finish.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rdist import Client
from tests import resilience_tasks as rt
from tests.client_helpers import wait_until

pytestmark = pytest.mark.real


def _raw(client: Client) -> Any:
    return client.store.redis


def _unread_notification_of(client: Client, key: str, timeout: float) -> bool:
    """Whether a notification naming ``key`` sits in the client's stream within ``timeout``."""
    stream = client.store.keys.client_stream(client.id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _entry_id, fields in _raw(client).xrange(stream):
            if any(key.encode() in value for value in fields.values()):
                return True
        time.sleep(0.02)
    return False


def test_deleted_client_stream_is_made_again_and_pending_futures_finish(
    client: Client, subprocess_pythonpath: None
) -> None:
    # given a task that is running
    future = client.submit(rt.slow_inc, 1, 1.0, pure=False)
    time.sleep(0.4)
    stream = client.store.keys.client_stream(client.id)
    assert _raw(client).exists(stream)
    # when Redis loses the client's stream before the task reports
    _raw(client).delete(stream)
    # then the client notices, and the result still arrives
    assert future.result(timeout=20) == 2
    assert client.stream_watch.recoveries >= 1
    assert _raw(client).exists(stream)
    # and the client works on as before
    assert client.submit(rt.slow_inc, 10, pure=False).result(timeout=20) == 11


def test_notification_trimmed_unread_is_asked_for_again(
    client: Client, subprocess_pythonpath: None
) -> None:
    # given the listener busy in a done-callback, so the next notification stays unread
    # (held until the stream is trimmed: a hold of 2 s raced a loaded machine's task)
    busy, release = threading.Event(), threading.Event()

    def hold_the_listener(_future: Any) -> None:
        busy.set()
        release.wait(60)

    first = client.submit(rt.slow_inc, 1, 0.0, pure=False)
    first.add_done_callback(hold_the_listener)
    second = client.submit(rt.slow_inc, 2, 0.3, pure=False)
    try:
        assert busy.wait(20)
        stream = client.store.keys.client_stream(client.id)
        assert _unread_notification_of(client, second.key, timeout=20)
        assert second.status == "pending"
        # when the stream is trimmed to nothing before the listener reads it
        _raw(client).xtrim(stream, maxlen=0, approximate=False)
    finally:
        release.set()
    # then the second future still finishes
    assert second.result(timeout=20) == 3
    assert client.stream_watch.recoveries >= 1


def test_closed_client_does_not_make_its_stream_again(redis_url: str, cluster: Any) -> None:
    with Client(cluster, timeout=30) as c:
        c.wait_for_workers(1, timeout=20)
        stream = c.store.keys.client_stream(c.id)
        watch = c.stream_watch
    time.sleep(3.0)  # longer than the watch's period
    from rdist.store import connect

    store = connect(redis_url, cluster.cluster_name)
    try:
        assert not store.redis.exists(stream)
    finally:
        store.close()
    assert watch.recoveries == 0


@pytest.mark.timeout(180)
def test_redis_restarted_empty_loses_no_future_of_a_running_graph() -> None:
    from tests.proc_cluster import ProcCluster

    procs = ProcCluster(n_workers=2, persistence=False, worker_ttl=10.0)
    try:
        procs.wait_for_workers()
        with Client(procs.url, cluster_name=procs.cluster, timeout=60) as client:
            client.wait_for_workers(2, timeout=30)
            # given a task running
            future = client.submit(rt.slow_inc, 1, 2.0, pure=False)
            time.sleep(0.5)
            # when Redis restarts with nothing (no persistence): the client's stream is gone
            procs.redis.restart()
            # then the client makes its stream again and the result arrives
            assert future.result(timeout=60) == 2
            # (the result may come before the watch's next look: it notices the lost
            # marker on its own schedule, so wait for it rather than race it)
            wait_until(
                lambda: client.stream_watch.recoveries >= 1,
                timeout=30,
                what="the client's watch to notice its stream was lost",
            )
            assert client.submit(rt.slow_inc, 5, pure=False).result(timeout=60) == 6
    finally:
        procs.close()
