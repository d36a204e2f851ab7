"""The client's sends do not wait for Redis's replies (rdist.client.sender), and lose
nothing for it: a later send, the idle listener or a flush reads them, a connection that
broke before Redis took a message sends it again, and a refusal is logged, never raised
into another call. Against a real redis-server (fakeredis answers at once)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from rdist.client import sender as sender_module
from rdist.client.sender import Sender
from rdist.protocol import wire
from rdist.store import RedisStore, connect


@pytest.fixture
def store(redis_server: object, request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    s = connect(redis_server.url, f"sender-{id(request)}")  # type: ignore[attr-defined]
    yield s
    s.redis.delete(*(s.redis.keys(s.keys.prefix + "*") or ["none"]))
    s.close()


def graph(key: str) -> wire.UpdateGraph:
    return wire.UpdateGraph("c1", [wire.TaskRow(key, [])], [key])


def sent(store: RedisStore) -> list[wire.Message]:
    entries = store.redis.xrange(store.keys.sched)
    return [m for _, fields in entries for m in wire.SCHEDULER.decode(fields[b"m"])]


def unconfirmed(store: RedisStore) -> int:
    raw = store._raw
    return 0 if raw is None else len(raw._deferred)


def test_a_submission_leaves_its_replies_to_the_next_send_and_flush_reads_them(
    store: RedisStore,
) -> None:
    outbox = Sender(store, "c1", threading.Event())

    outbox.post(graph("a"), direct=True)
    assert unconfirmed(store) == 1  # sent, no wait for the reply
    outbox.post(graph("b"), direct=True)
    assert unconfirmed(store) == 1  # the first one's reply read on the way
    outbox.flush()

    assert unconfirmed(store) == 0
    assert [m.tasks[0].key for m in sent(store)] == ["a", "b"]  # type: ignore[attr-defined]


def test_the_idle_listener_confirms_only_a_send_no_later_one_confirmed(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = Sender(store, "c1", threading.Event())
    outbox.post(graph("a"), direct=True)

    outbox.flush_if_free()  # a moment after the send: the next submission reads it
    assert unconfirmed(store) == 1

    monkeypatch.setattr(sender_module, "CONFIRM_AFTER", 0.0)
    outbox.flush_if_free()
    assert unconfirmed(store) == 0


def test_a_message_whose_connection_broke_before_redis_took_it_is_sent_again(
    store: RedisStore,
) -> None:
    admin = store.redis
    outbox = Sender(store, "c1", threading.Event())
    outbox.post(wire.ClientJoin("c1"), direct=True)
    outbox.flush()  # the connection is held from here on
    sock = store._raw._conn._sock  # type: ignore[union-attr]
    host, port = sock.getsockname()[:2]

    admin.execute_command("CLIENT", "PAUSE", 5000, "WRITE")  # the XADD waits, unapplied
    try:
        outbox.post(graph("a"), direct=True)
        admin.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")  # ... and is dropped
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    outbox.flush()

    assert [type(m).__name__ for m in sent(store)] == ["ClientJoin", "UpdateGraph"]


def test_a_refusal_is_logged_and_never_raised_into_a_later_call(
    store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.redis.set(store.keys.sched, b"not a stream")  # every XADD to it is refused
    outbox = Sender(store, "c1", threading.Event())

    with caplog.at_level(logging.ERROR, logger="rdist.client"):
        outbox.post(graph("a"), direct=True)
        outbox.post(graph("b"), direct=True)  # reads the first refusal: logs, goes on
        outbox.flush()  # and the second

    refusals = [r for r in caplog.records if "redis refused" in r.getMessage()]
    assert len(refusals) == 2 and "WRONGTYPE" in refusals[0].getMessage()
    assert unconfirmed(store) == 0
