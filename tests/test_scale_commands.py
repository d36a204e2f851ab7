"""No Redis command and no stream entry grows with the size of a graph (fake tier).

Redis runs one command start to end: the scheduler's HDEL of a few hundred thousand
fields (a million futures released at the end of a 1M-task run) held it for seconds, and
the leader's lease renewal, a separate connection, waited behind it until the lease
lapsed. Hash writes go out in commands of ``FIELDS_PER_COMMAND`` fields -- still in the
caller's one pipeline -- and a client's release of very many keys in messages of
``RELEASE_KEYS_PER_MESSAGE`` keys.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rdist.client import sender
from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler.outbox import Outbox
from rdist.store import RedisStore, connect, tables

CHUNK = 100  #: fields per command in these tests (the default's logic, at a test's size)
N = 2 * CHUNK + 1


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisStore]:
    monkeypatch.setattr(tables, "FIELDS_PER_COMMAND", CHUNK)
    s = connect(f"fakeredis://commands-{uuid.uuid4().hex}", "commands")
    try:
        yield s
    finally:
        s.close()


def _keys(n: int) -> list[str]:
    return [f"noop-{i:032x}" for i in range(n)]


def _queued(pipe: Any, command: str) -> list[tuple[Any, ...]]:
    """The arguments of each ``command`` queued on a redis-py pipeline, in order."""
    return [args for args, _ in pipe.command_stack if args[0] == command]


def test_a_big_put_many_is_sent_as_bounded_hsets_in_one_pipeline(store: RedisStore) -> None:
    # given N records, more than two commands' worth
    records = {key: b"record-" + key.encode() for key in _keys(N)}
    pipe = store.pipeline()

    # when the scheduler writes them on its pipeline
    store.tasks.put_many(records, pipe)

    # then they go as ceil(N / chunk) HSETs of at most CHUNK fields each, and all land
    hsets = _queued(pipe, "HSET")
    assert len(hsets) == math.ceil(N / CHUNK) == 3
    assert all((len(args) - 2) // 2 <= CHUNK for args in hsets)
    pipe.execute()
    assert store.redis.hgetall(store.keys.tasks) == {k.encode(): v for k, v in records.items()}


def test_a_write_without_a_pipeline_is_bounded_too(store: RedisStore) -> None:
    store.results.put_many({key: b"r" for key in _keys(N)})
    assert store.results.count() == N
    store.results.delete(_keys(N))
    assert store.results.count() == 0


def test_forgetting_a_big_release_sends_bounded_hdels(store: RedisStore) -> None:
    # given N tasks with their specs and results stored
    keys = _keys(N)
    blobs = {key: b"x" for key in keys}
    store.tasks.put_many(blobs)
    store.specs.put_many(blobs)
    store.results.put_many(blobs)

    # when the state machine forgets them all in one batch (a client released them)
    outbox = Outbox()
    outbox.add([ev.ForgetTask(key) for key in keys])
    pipe = store.pipeline()
    outbox.write(pipe, store)

    # then each hash gets ceil(N / chunk) HDELs of at most CHUNK fields, and is emptied
    hdels = _queued(pipe, "HDEL")
    for name in (store.keys.tasks, store.keys.specs, store.keys.results):
        mine = [args for args in hdels if args[1] == name]
        assert len(mine) == math.ceil(N / CHUNK)
        assert all(len(args) - 2 <= CHUNK for args in mine)
        assert [k for args in mine for k in args[2:]] == keys  # each once, in order
    pipe.execute()
    assert store.tasks.count() == store.specs.count() == store.results.count() == 0


def test_removing_many_workers_clients_and_functions_is_bounded(store: RedisStore) -> None:
    names = _keys(N)
    store.redis.hset(store.keys.workers, mapping=dict.fromkeys(names, b"w"))
    store.redis.hset(store.keys.clients, mapping=dict.fromkeys(names, b"c"))
    hashes = [name.encode() for name in names]
    store.specs.put_functions(dict.fromkeys(hashes, b"f"))
    pipe = store.pipeline()

    store.workers.remove(names, pipe)
    store.clients.remove(iter(names), pipe)  # (any iterable)
    store.specs.delete_functions(hashes, pipe)

    hdels = _queued(pipe, "HDEL")
    assert len(hdels) == 3 * math.ceil(N / CHUNK)
    assert all(len(args) - 2 <= CHUNK for args in hdels)
    pipe.execute()
    assert store.workers.count() == store.clients.count() == 0
    assert store.specs.function_hashes() == []


def test_a_release_of_very_many_keys_goes_as_bounded_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a client that dropped more futures than one message carries
    monkeypatch.setattr(sender, "RELEASE_KEYS_PER_MESSAGE", CHUNK)
    keys = _keys(N)
    items: list[sender.Outgoing] = [(wire.ReleaseKeys("c1", [k]), None) for k in keys]

    # when its outbox is encoded
    _, entries = sender.encode_outbox(items)

    # then it sends ceil(N / chunk) release-keys messages, every key once, in order
    messages = [msg for entry in entries for msg in wire.SCHEDULER.decode(entry)]
    assert len(messages) == math.ceil(N / CHUNK)
    assert all(type(m) is wire.ReleaseKeys and len(m.keys) <= CHUNK for m in messages)
    assert [k for m in messages for k in m.keys] == keys


def test_a_small_release_stays_one_message_bundled_with_its_neighbours() -> None:
    items: list[sender.Outgoing] = [
        (wire.ReleaseKeys("c1", ["a"]), None),
        (wire.ReleaseKeys("c1", ["b"]), None),
        (wire.Restart("c1"), None),
    ]
    _, [entry] = sender.encode_outbox(items)
    assert wire.SCHEDULER.decode(entry) == [wire.ReleaseKeys("c1", ["a", "b"]), wire.Restart("c1")]


def test_a_big_read_is_sent_as_bounded_hmgets_in_one_round_trip(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given N task records and results (and one key that has neither)
    keys = _keys(N)
    store.tasks.put_many({key: wire.TaskRecord("memory", (0,)).encode() for key in keys})
    store.results.put_many({key: key.encode() for key in keys})
    sizes: list[int] = []
    pipeline = store.pipeline

    def counting() -> Any:
        pipe = pipeline()
        hmget = pipe.hmget
        pipe.hmget = lambda name, fields: sizes.append(len(fields)) or hmget(name, fields)
        return pipe

    monkeypatch.setattr(store, "pipeline", counting)

    # when a client reads them all
    records = store.tasks.get_many([*keys, "absent"])
    blobs = store.results.get_many([*keys, "absent"])

    # then each read is ceil((N + 1) / chunk) HMGETs of at most CHUNK fields, answered in order
    assert sizes == [CHUNK, CHUNK, 2] * 2
    assert list(records) == keys and all(r.state == "memory" for r in records.values())
    assert blobs == [key.encode() for key in keys] + [None]
