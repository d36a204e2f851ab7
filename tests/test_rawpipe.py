"""The lean pipeline (rdist.store.rawpipe): same answers as redis-py's, errors surface,
a held connection survives a Redis restart, and stream reads parse in both reply shapes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from rdist.embedded import EmbeddedRedis
from rdist.store import RedisStore, connect, rawpipe
from rdist.store.connection import _entries
from rdist.store.keys import PAYLOAD_FIELD


@pytest.fixture(params=["fake", "real"])
def store(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    if request.param == "fake":
        s = connect(f"fakeredis://rawpipe-{id(request)}", "t")
        yield s
        s.close()
        return
    server = request.getfixturevalue("redis_server")
    s = connect(server.url, f"rawpipe-{id(request)}")
    yield s
    s.redis.delete(*(s.redis.keys(s.keys.prefix + "*") or ["none"]))
    s.close()


def test_writes_then_a_read_come_back_in_order(store: RedisStore) -> None:
    stream = store.keys.sched
    pipe = store.raw_pipeline()
    pipe.hset(store.keys.tasks, mapping={"a": b"1", "b": b"2"})
    pipe.hset(store.keys.tasks, "c", b"3")
    pipe.xadd(stream, {PAYLOAD_FIELD: b"one"}, maxlen=100)
    pipe.xadd(stream, {PAYLOAD_FIELD: b"two"})
    pipe.hmget(store.keys.tasks, ["a", "c", "missing"])
    pipe.hgetall(store.keys.tasks)
    pipe.xread({stream: "0-0"}, count=10)
    replies = pipe.execute()

    assert replies[4] == [b"1", b"3", None]
    assert replies[5] == {b"a": b"1", b"b": b"2", b"c": b"3"}
    assert [payload for _, payload in _entries(replies[6])] == [b"one", b"two"]


def test_a_group_read_with_acknowledgement_and_deletion(store: RedisStore) -> None:
    stream = store.keys.sched
    store.ensure_group(stream, "g")
    store.redis.xadd(stream, {PAYLOAD_FIELD: b"x"})
    first = store.read_group(stream, "g", "me", 10, 10)
    ids = [entry_id for entry_id, _ in first]

    def ack(pipe: object) -> None:
        pipe.xack(stream, "g", *ids)  # type: ignore[attr-defined]
        pipe.xdel(stream, *ids)  # type: ignore[attr-defined]

    again, _ = store.read_own_pending(stream, "g", "me", before=ack)

    assert [payload for _, payload in first] == [b"x"]
    assert again == []  # acknowledged in the same round trip, before the pending read
    assert store.redis.xlen(stream) == 0


def test_pending_entries_are_read_one_at_a_time_with_their_earlier_deliveries(
    store: RedisStore,
) -> None:
    stream = store.keys.sched
    store.ensure_group(stream, "g")
    for payload in (b"a", b"b"):
        store.redis.xadd(stream, {PAYLOAD_FIELD: payload})
    delivered = store.read_group(stream, "g", "me", 10, 10)  # once each, never acknowledged

    first, before_first = store.read_own_pending(stream, "g", "me")
    again, before_again = store.read_own_pending(stream, "g", "me")
    second, before_second = store.read_own_pending(stream, "g", "me", after=first[0][0])
    after_last, _ = store.read_own_pending(stream, "g", "me", after=second[0][0])

    assert [p for _, p in delivered] == [b"a", b"b"]
    assert [p for _, p in first] == [b"a"] and before_first == 1
    assert [p for _, p in again] == [b"a"] and before_again == 2  # the re-read counted
    assert [p for _, p in second] == [b"b"] and before_second == 1  # only "a" was re-read
    assert after_last == []


def test_an_error_reply_is_raised_after_every_reply_is_read(store: RedisStore) -> None:
    store.redis.set(store.keys.prefix + "plain", "v")
    pipe = store.raw_pipeline()
    pipe.hset(store.keys.prefix + "plain", "f", b"1")  # WRONGTYPE
    pipe.hset(store.keys.tasks, "ok", b"1")
    with pytest.raises(redis.ResponseError):
        pipe.execute()

    # the connection is still in step: the next pipeline gets its own replies
    pipe = store.raw_pipeline()
    pipe.hmget(store.keys.tasks, ["ok"])
    assert pipe.execute() == [[b"1"]]


def test_replies_larger_than_one_socket_read_come_back_whole(store: RedisStore) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: many reads of the parser's 64 KiB buffer
    pipe = store.raw_pipeline()
    pipe.hset(store.keys.results, "big", big)
    pipe.hset(store.keys.results, "small", b"s")
    pipe.hmget(store.keys.results, ["big", "small", "none"])
    assert pipe.execute()[2] == [big, b"s", None]


@pytest.mark.real
def test_a_real_connection_reads_its_replies_straight_from_hiredis(
    redis_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the fast path must be the one taken where it matters, not a silent fallback)
    calls: list[int] = []
    fast = rawpipe._Replies.read
    monkeypatch.setattr(rawpipe._Replies, "read", lambda r, n: calls.append(n) or fast(r, n))
    store = connect(redis_server.url, "hiredis-path")  # type: ignore[attr-defined]
    pipe = store.raw_pipeline()
    pipe.hset(store.keys.tasks, "k", b"v")
    pipe.hmget(store.keys.tasks, ["k"])
    assert pipe.execute() == [1, [b"v"]]
    assert calls == [2]
    store.redis.delete(store.keys.tasks)
    store.close()


def test_entries_parse_both_reply_shapes() -> None:
    resp3 = {b"s": [[b"1-0", [PAYLOAD_FIELD, b"p"]], [b"2-0", None]]}
    resp2 = [[b"s", [[b"1-0", [b"other", b"x", PAYLOAD_FIELD, b"p"]]]]]
    assert _entries(resp3) == [(b"1-0", b"p"), (b"2-0", None)]
    assert _entries(resp2) == [(b"1-0", b"p")]
    assert _entries(None) == []


@pytest.mark.real
def test_a_held_connection_survives_a_redis_restart(tmp_path: object) -> None:
    with EmbeddedRedis(persistence=True) as server:
        store = connect(server.url, "restart")
        pipe = store.raw_pipeline()
        pipe.hset(store.keys.tasks, "k", b"v")
        pipe.execute()

        server.restart()

        pipe = store.raw_pipeline()
        pipe.hmget(store.keys.tasks, ["k"])
        assert pipe.execute() == [[b"v"]]  # the stale connection was replaced, once
        store.close()


def test_batched_deletes_wait_for_a_count_or_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    from rdist.store import connection

    clock = [100.0]
    monkeypatch.setattr(connection.time, "monotonic", lambda: clock[0])
    deletes = connection.BatchedDeletes(many=3, seconds=1.0)

    deletes.add([b"1-0", b"2-0"])
    assert deletes.take_due() == []  # two of three, no time passed
    deletes.add([b"3-0"])
    assert deletes.take_due() == [b"1-0", b"2-0", b"3-0"]
    deletes.add([b"4-0"])
    assert deletes.take_due() == []
    clock[0] += 1.5
    assert deletes.take_due() == [b"4-0"]  # a second later: whatever there is
    assert deletes.take_due() == []
