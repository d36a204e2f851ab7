"""The rooms of the client, each on its own: the outbox (sender), the ledger of futures,
the listener (what each entry of the client's stream means), awaited answers, the
running task's secede, and how ``Client()`` without an address gets a cluster."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rdist import task_context
from rdist.client import local_cluster, sender
from rdist.client.answers import Answers
from rdist.client.future import CANCELLED, ERROR, FINISHED, PENDING
from rdist.client.ledger import Ledger, give_thread_up_if_in_task
from rdist.client.listener import Listener
from rdist.client.sender import Sender, encode_outbox
from rdist.exceptions import KilledWorker
from rdist.protocol import serialize, wire
from rdist.store import RedisStore, connect
from rdist.store.connection import drop_fake_server
from rdist.store.keys import PAYLOAD_FIELD
from tests.client_helpers import stand_in_scheduler


@pytest.fixture
def store() -> Iterator[RedisStore]:
    name = uuid.uuid4().hex
    s = connect(f"fakeredis://{name}", "rooms")
    yield s
    s.close()
    drop_fake_server(name)


def graph(key: str, deps: list[str] | None = None) -> wire.UpdateGraph:
    row = wire.TaskRow(key, deps or [], 0, None, False, 0, None)
    return wire.UpdateGraph("c1", [row], [key], specs={key: b"spec-" + key.encode()})


def entries(store: RedisStore, stream: str) -> list[bytes]:
    return [fields[PAYLOAD_FIELD] for _, fields in store.redis.xrange(stream)]


# -- the outbox -------------------------------------------------------------------------------


def test_consecutive_graph_updates_and_releases_become_one_message_each() -> None:
    items: list[sender.Outgoing] = [
        (graph("a"), {b"h1": b"f1"}),
        (graph("b", ["a"]), {b"h2": b"f2"}),
        (wire.ReleaseKeys("c1", ["x"]), None),
        (wire.ReleaseKeys("c1", ["y"]), None),
        (graph("c"), None),
    ]

    funcs, payloads = encode_outbox(items)

    assert funcs == {b"h1": b"f1", b"h2": b"f2"}
    assert len(payloads) == 1  # bundled: the scheduler reads them in one batch
    first, release, last = wire.SCHEDULER.decode(payloads[0])
    assert isinstance(first, wire.UpdateGraph) and isinstance(last, wire.UpdateGraph)
    assert [t.key for t in first.tasks] == ["a", "b"] and first.wanted == ["a", "b"]
    assert first.tasks[1].deps == ["a"] and set(first.specs) == {"a", "b"}
    assert release == wire.ReleaseKeys("c1", ["x", "y"])
    assert [t.key for t in last.tasks] == ["c"]


def test_a_lone_message_is_not_bundled_and_a_big_batch_is_not_bundled_either(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, [alone] = encode_outbox([(wire.ClientJoin("c1"), None)])
    assert wire.SCHEDULER.decode(alone) == [wire.ClientJoin("c1")]

    monkeypatch.setattr(sender, "BUNDLE_BYTES", 10)
    _, payloads = encode_outbox([(wire.ClientJoin("c1"), None), (wire.Restart("c1"), None)])
    assert [wire.SCHEDULER.decode_one(p) for p in payloads] == [
        wire.ClientJoin("c1"),
        wire.Restart("c1"),
    ]


def test_fire_and_forget_travels_with_the_graph_update_before_it() -> None:
    items: list[sender.Outgoing] = [
        (graph("a"), None),
        (wire.UpdateGraph("c1", fire_and_forget=["a"]), None),
    ]
    _, [payload] = encode_outbox(items)
    (msg,) = wire.SCHEDULER.decode(payload)
    assert isinstance(msg, wire.UpdateGraph)
    assert msg.fire_and_forget == ["a"] and msg.wanted == ["a"]


def test_a_direct_post_is_sent_by_the_calling_thread_functions_first(store: RedisStore) -> None:
    # given a sender whose thread never runs
    outbox = Sender(store, "c1", threading.Event())

    outbox.post(graph("a"), {b"hash": b"pickled"}, direct=True)

    assert store.redis.hget(store.keys.funcs, b"hash") == b"pickled"
    [payload] = entries(store, store.keys.sched)
    assert wire.SCHEDULER.decode(payload) == [graph("a")]


def test_a_burst_of_submissions_goes_to_the_sender_thread_unless_a_result_was_awaited(
    store: RedisStore,
) -> None:
    # given a sender whose thread never runs, and whose client never waits for a result
    outbox = Sender(store, "c1", threading.Event())
    waits: list[float] = []
    outbox.waited_since = lambda since: any(t >= since for t in waits)

    outbox.post(graph("a"), direct=True)  # nothing sent lately: at once
    outbox.post(graph("b"), direct=True)  # right after it: left for the sender thread
    assert [
        wire.SCHEDULER.decode_one(p).tasks[0].key for p in entries(store, store.keys.sched)
    ] == ["a"]

    waits.append(time.monotonic())  # the client waited for a result since: no burst
    outbox.post(graph("c"), direct=True)  # (and takes what was left along, in order)
    [_, both] = entries(store, store.keys.sched)
    assert [row.key for row in wire.SCHEDULER.decode_one(both).tasks] == ["b", "c"]


def test_a_queued_post_waits_for_the_sender_thread(store: RedisStore) -> None:
    stop = threading.Event()
    outbox = Sender(store, "c1", stop)
    outbox.post(wire.ClientJoin("c1"))
    assert entries(store, store.keys.sched) == []

    thread = threading.Thread(target=outbox.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not entries(store, store.keys.sched) and time.monotonic() < deadline:
        time.sleep(0.005)
    stop.set()
    outbox.wake()
    thread.join(5)

    assert [wire.SCHEDULER.decode_one(p) for p in entries(store, store.keys.sched)] == [
        wire.ClientJoin("c1")
    ]
    assert not thread.is_alive()


# -- the ledger -------------------------------------------------------------------------------


class Parts:
    """A ledger's collaborators, recorded."""

    def __init__(self, store: RedisStore) -> None:
        self.outbox = Sender(store, "c1", threading.Event())
        self.reads: list[float] = []
        self.ledger = Ledger(
            "c1",
            self.outbox,
            lambda done, budget: self.reads.append(budget),
            lambda futures: {},
            lambda: True,
        )


def memory(key: str, *holders: str) -> wire.KeyInMemory:
    return wire.KeyInMemory(key, 8, False, list(holders))


def test_notifications_settle_futures_with_typed_outcomes(store: RedisStore) -> None:
    ledger = Parts(store).ledger
    done, failed, killed = (ledger.register(k) for k in ("a", "b", "c"))
    fired: list[str] = []
    ledger.when_done(done, lambda: fired.append("a"))
    error = serialize.to_blob((ValueError("boom"), "Traceback: ..."))

    ledger.settle(
        [
            memory("a", "tcp://w:1"),
            wire.KeyErred("b", "b", error),
            wire.KeyErred("c", "c", None, "killed 3 workers", wire.KILLED_WORKER),
            memory("not-ours"),
        ]
    )

    assert done.status == FINISHED and done.where() == memory("a", "tcp://w:1")
    assert fired == ["a"]
    assert failed.status == ERROR
    exc, tb = failed.exception_and_traceback()
    assert isinstance(exc, ValueError) and str(exc) == "boom" and tb == "Traceback: ..."
    assert isinstance(killed.exception_and_traceback()[0], KilledWorker)
    assert ledger.told_who_has() == {"a": ["tcp://w:1"]}


def test_a_lost_key_is_pending_again_and_a_late_result_does_not_revive_a_cancelled_one(
    store: RedisStore,
) -> None:
    ledger = Parts(store).ledger
    lost, cancelled = ledger.register("a"), ledger.register("b")
    ledger.settle([memory("a", "tcp://w:1"), wire.KeyCancelled("b")])

    ledger.settle([wire.KeyLost("a"), memory("b", "tcp://w:1")])

    assert lost.status == PENDING and not lost.done()
    assert cancelled.status == CANCELLED


def test_cancel_waits_for_the_scheduler_to_confirm_every_key(store: RedisStore) -> None:
    parts = Parts(store)
    ledger = parts.ledger
    state = ledger.register("a")

    class Fake:
        key = "a"
        _state = state

    confirm = threading.Timer(0.05, lambda: ledger.settle([wire.KeyCancelled("a")]))
    confirm.start()
    started = time.monotonic()
    ledger.cancel([Fake()], ["a"], False, timeout=5)  # type: ignore[list-item]

    assert 0.04 < time.monotonic() - started < 4  # returned on the confirmation
    assert state.status == CANCELLED
    parts.outbox.flush()
    [payload] = entries(store, store.keys.sched)
    assert wire.SCHEDULER.decode_one(payload) == wire.Cancel("c1", ["a"], False)


def test_the_last_reference_released_tells_the_scheduler(store: RedisStore) -> None:
    parts = Parts(store)
    ledger = parts.ledger
    ledger.register("a")
    ledger.register("a")

    ledger.release("a")
    parts.outbox.flush()
    assert entries(store, store.keys.sched) == []
    ledger.release("a")
    parts.outbox.flush()

    assert [wire.SCHEDULER.decode_one(p) for p in entries(store, store.keys.sched)] == [
        wire.ReleaseKeys("c1", ["a"])
    ]
    assert ledger.keys() == []


def test_waiting_reads_the_stream_on_the_waiting_thread_first(store: RedisStore) -> None:
    parts = Parts(store)
    state = parts.ledger.register("a")
    threading.Timer(0.02, lambda: parts.ledger.settle([memory("a")])).start()

    assert parts.ledger.wait(state, timeout=5)
    assert len(parts.reads) == 1 and parts.reads[0] <= 0.05


# -- a task that waits gives its thread up -----------------------------------------------------


class FakeTask:
    key = "parent"

    def __init__(self) -> None:
        self.seceded = False
        self.calls = 0

    def secede(self) -> None:
        self.calls += 1
        self.seceded = True

    def rejoin(self) -> None:
        self.seceded = False

    def client(self) -> Any:
        return None


def test_a_task_waiting_on_futures_secedes_once(store: RedisStore) -> None:
    task = FakeTask()
    parts = Parts(store)
    state = parts.ledger.register("a")
    task_context.set_current(task)
    try:
        assert not parts.ledger.wait(state, timeout=0.01)
        assert not parts.ledger.wait_all([state], timeout=0.01)
        give_thread_up_if_in_task()
    finally:
        task_context.set_current(None)

    assert task.calls == 1 and task.seceded


def test_outside_a_task_waiting_secedes_nothing() -> None:
    assert task_context.current() is None
    give_thread_up_if_in_task()  # nothing to secede: no error


# -- the listener -----------------------------------------------------------------------------


class Heard:
    def __init__(self, store: RedisStore) -> None:
        self.parts = Parts(store)
        self.answers = Answers()
        self.relayed: list[wire.Message] = []
        self.restarted = threading.Event()
        self.listener = Listener(
            store, "c1", self.parts.ledger, self.answers, self.relayed.append, self.restarted
        )


def dead_letters(store: RedisStore) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in store.redis.xrange(store.keys.deadletter)]


def test_a_malformed_entry_is_set_aside_and_the_next_one_handled(store: RedisStore) -> None:
    heard = Heard(store)
    state = heard.parts.ledger.register("a")

    heard.listener.on_entry(b"1-0", b"\xc1 not msgpack")
    heard.listener.on_entry(b"1-1", wire.pack({"op": "notify", "items": [["a", "memory", 3]]}))
    heard.listener.on_entry(b"1-2", wire.Notify([memory("a", "tcp://w:1")]).encode())

    letters = dead_letters(store)
    assert [f[b"id"] for f in letters] == [b"1-0", b"1-1"]
    assert all(f[b"stream"] == store.keys.client_stream("c1").encode() for f in letters)
    assert b"not msgpack" in letters[0][b"reason"] and b"items[0]" in letters[1][b"reason"]
    assert state.status == FINISHED


def test_an_entry_whose_handling_raises_is_set_aside_without_killing_the_listener(
    store: RedisStore,
) -> None:
    heard = Heard(store)
    state = heard.parts.ledger.register("a")

    def broken() -> None:
        raise ZeroDivisionError("a bug in what a notification sets off")

    heard.parts.ledger.when_done(state, broken)

    heard.listener.on_entry(b"2-0", wire.Notify([memory("a")]).encode())
    heard.listener.on_entry(b"2-1", wire.Restarted().encode())  # the next entry still counts

    assert heard.restarted.is_set()
    [letter] = dead_letters(store)
    assert letter[b"id"] == b"2-0" and b"ZeroDivisionError" in letter[b"reason"]


def test_each_answer_goes_to_whoever_waits_for_it(store: RedisStore) -> None:
    heard = Heard(store)
    run = heard.answers.expect(1)
    barrier = heard.answers.expect(1)
    story = heard.answers.expect(1)
    result = wire.RunResult(run, "tcp://w:1", True, serialize.to_blob(42))
    reply = wire.StoryReply(story, "scheduler", [wire.StoryRow("a", "waiting", "memory", "s", 1.0)])
    published = wire.Published("relay-1", ["k"], [])
    bundle = wire.bundle(
        [
            result.encode(),
            wire.Notify([wire.BarrierReached(barrier)]).encode(),
            reply.encode(),
            published.encode(),
            wire.Restarted().encode(),
        ]
    )

    heard.listener.on_entry(b"3-0", bundle)

    assert heard.answers.one(run, 1) == result
    assert heard.answers.one(barrier, 1) == wire.BarrierReached(barrier)
    assert heard.answers.collect(story, 1) == [reply]
    assert heard.relayed == [published]
    assert heard.restarted.is_set()
    assert dead_letters(store) == []


# -- answers ----------------------------------------------------------------------------------


def test_collect_returns_what_came_within_the_timeout_and_forgets_the_request() -> None:
    answers = Answers()
    request = answers.expect(3)
    answers.resolve(request, "first")

    started = time.monotonic()
    assert answers.collect(request, 0.05) == ["first"]
    assert time.monotonic() - started < 1
    assert not answers.resolve(request, "late")  # nobody waits any more


def test_one_answer_times_out_or_stops_when_the_one_asked_is_gone() -> None:
    answers = Answers()
    with pytest.raises(TimeoutError):
        answers.one(answers.expect(), 0.01)
    with pytest.raises(ConnectionError):
        answers.one(answers.expect(), 10, alive=lambda: False)


# -- Client() without an address ---------------------------------------------------------------


def test_the_cluster_module_registers_itself_as_the_local_cluster_factory() -> None:
    from rdist.cluster import LocalCluster

    assert local_cluster.registered() is LocalCluster


def test_a_client_without_an_address_starts_the_registered_cluster_and_closes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rdist import Client

    monkeypatch.delenv("RDIST_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    made: list[Any] = []

    class Cluster:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs
            self.redis_url = f"fakeredis://{uuid.uuid4().hex}"
            self.cluster_name = "own"
            self.closed = False
            stand_in_scheduler(connect(self.redis_url, self.cluster_name))
            made.append(self)

        def close(self) -> None:
            self.closed = True

    previous = local_cluster.registered()
    local_cluster.register(Cluster)
    try:
        client = Client(n_workers=3, set_as_default=False)
        client.close()
    finally:
        assert previous is not None
        local_cluster.register(previous)

    [cluster] = made
    assert cluster.kwargs == {"n_workers": 3} and cluster.closed
    assert client.redis_url == cluster.redis_url and client.cluster_name == "own"


# -- what goes on the wire --------------------------------------------------------------------


def inc(x: int) -> int:
    return x + 1


def sent_maps(store: RedisStore) -> list[dict[str, Any]]:
    """Every message on the scheduler's stream as its plain msgpack map, bundles opened."""
    out = []
    for payload in entries(store, store.keys.sched):
        body = wire.unpack(payload, "sched")
        parts = body["msgs"] if body.get("op") == wire.BUNDLE_OP else [payload]
        out += [wire.unpack(p, "sched") for p in parts]
    return out


def test_what_a_client_sends_keeps_its_wire_format(store: RedisStore) -> None:
    from rdist import Client
    from rdist.client.graph import function_bytes
    from rdist.protocol.spec import unpack_spec

    stand_in_scheduler(store)
    client = Client(store.url, cluster_name="rooms", set_as_default=False)
    try:
        future = client.submit(inc, 1, key="k", priority=3, retries=2)
        spec = sent_maps(store)[-1]["specs"]["k"]
        future.release()
        client._sender.flush()
    finally:
        client.close()

    assert sent_maps(store) == [
        {"op": "client-join", "client": client.id},
        {
            "op": "update-graph",
            "client": client.id,
            "tasks": [["k", [], 3, None, False, 2, None]],
            "wanted": ["k"],
            "faf": [],
            "specs": {"k": spec},
            # the pickled function travels with each message naming it, by hash
            "fn": {unpack_spec(spec)[0]: function_bytes(inc)},
        },
        {"op": "release-keys", "client": client.id, "keys": ["k"]},
        {"op": "client-leave", "client": client.id},
    ]
    # the client stores no function itself: the scheduler does, while a task names it
    assert store.redis.hlen(store.keys.funcs) == 0
