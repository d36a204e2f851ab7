"""The worker's shell on the fakeredis tier: its stream (story requests, bad entries), its
close, and the state-machine check every fakeredis cluster runs at teardown."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rdist.protocol import wire
from rdist.store import connect
from rdist.worker import stream
from tests.client_helpers import wait_until
from tests.conftest import FakeCluster, fake_cluster


def inc(x: int) -> int:
    return x + 1


def read_client_stream(store: Any, client: str, timeout: float = 5.0) -> list[wire.Message]:
    stream = store.keys.client_stream(client)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = store.redis.xrange(stream)
        if entries:
            return [m for _, fields in entries for m in wire.CLIENT.decode(fields[b"m"])]
        time.sleep(0.02)
    return []


def open_client_stream(store: Any, client: str) -> None:
    """The stream of a client that joined: it exists (empty); nothing else creates it."""
    store.streams.to_client(client, wire.Notify([]), create=True)
    store.redis.xtrim(store.keys.client_stream(client), maxlen=0, approximate=False)


def dead_letters(store: Any) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in store.redis.xrange(store.keys.deadletter)]


def test_worker_answers_a_story_request_from_its_state_machine_log():
    with fake_cluster(1) as (c, cluster):
        future = c.submit(inc, 1)
        assert future.result(timeout=10) == 2
        worker = cluster.workers[0]
        store = connect(cluster.url, cluster.cluster_name)

        open_client_stream(store, "story-reader")  # as a client does when it joins
        request = wire.StoryRequest("story-reader", "q1", [future.key])
        store.streams.to_worker(worker.address, request)

        (reply,) = read_client_stream(store, "story-reader")
        assert isinstance(reply, wire.StoryReply)
        assert (reply.id, reply.source) == ("q1", worker.address)
        steps = [(r.start, r.finish) for r in reply.records]
        assert steps[:3] == [("released", "ready"), ("ready", "executing"), ("executing", "memory")]
        assert all(r.key == future.key and r.stimulus_id for r in reply.records)
        store.close()


def test_malformed_entry_is_dead_lettered_and_the_worker_carries_on():
    with fake_cluster(1) as (c, cluster):
        worker = cluster.workers[0]
        store = connect(cluster.url, cluster.cluster_name)

        store.redis.xadd(worker.stream, {"m": b"\xc1 not msgpack"})
        store.redis.xadd(worker.stream, {"m": wire.pack({"op": "batch", "a": [["c", 7]]})})

        wait_until(lambda: len(dead_letters(store)) == 2, 5, "both entries set aside")
        reasons = [d[b"reason"].decode() for d in dead_letters(store)]
        assert "not msgpack" in reasons[0] and "batch" in reasons[1]
        assert all(d[b"stream"].decode() == worker.stream for d in dead_letters(store))
        assert c.submit(inc, 41).result(timeout=10) == 42
        store.close()


def test_entry_whose_handler_raises_is_dead_lettered_and_the_worker_carries_on(monkeypatch):
    with fake_cluster(1) as (c, cluster):
        worker = cluster.workers[0]
        store = connect(cluster.url, cluster.cluster_name)

        def broken(msg: Any) -> None:
            raise RuntimeError("story teller broke")

        monkeypatch.setattr(worker, "tell_story", broken)
        store.streams.to_worker(worker.address, wire.StoryRequest("nobody", "q2", ["x"]))

        wait_until(lambda: dead_letters(store), 5, "the entry set aside")
        (letter,) = dead_letters(store)
        assert "handler raised RuntimeError: story teller broke" in letter[b"reason"].decode()
        assert c.submit(inc, 1).result(timeout=10) == 2
        store.close()


def test_close_wakes_the_blocked_stream_read_at_once(monkeypatch: pytest.MonkeyPatch):
    # a read that blocks for 10 s: a close that waited it out would show (close takes a few
    # ms; the bound leaves a loaded machine room and stays under close's 2 s thread joins)
    monkeypatch.setattr(stream, "BLOCK_MS", 10_000)
    cluster = FakeCluster(n_workers=1)
    try:
        worker = cluster.workers[0]
        time.sleep(0.1)  # the stream thread is blocked in its read by now

        started = time.monotonic()
        worker.close()

        assert time.monotonic() - started < 1.5  # not the read's 10 s block time
        assert not any(t.is_alive() for t in worker.threads)
    finally:
        cluster.close()


def test_teardown_checks_the_state_machine_of_every_live_worker():
    cluster = FakeCluster(n_workers=2)
    cluster.workers[1].state.running = 3  # a slot count that drifted

    with pytest.raises(AssertionError):
        cluster.close()

    assert all(w.closed.is_set() for w in cluster.workers)  # closed all the same
