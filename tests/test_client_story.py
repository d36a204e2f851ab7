"""``client.story(*keys)`` (CONTRACT item 34): the transition records of the scheduler and
of every worker for some keys, merged in time order, each naming its source.

The client's side is tested here against fake answers: a responder plays the scheduler
and the workers, reading the requests off their streams and answering on the client's.
The last test runs a whole fakeredis cluster; it needs the scheduler's and the workers'
side of ``story`` and is skipped until the workers' stream carries the request.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from rdist import Client, Future
from rdist.client.introspection import StoryEvent, merge_stories
from rdist.protocol import wire
from rdist.store import RedisStore, connect
from rdist.store.connection import drop_fake_server
from tests.client_helpers import stand_in_scheduler
from tests.conftest import fake_cluster

W1, W2 = "tcp://10.0.0.1:1", "tcp://10.0.0.2:1"


def row(key: str, start: str, finish: str, at: float) -> wire.StoryRow:
    return wire.StoryRow(key, start, finish, f"stimulus-{at}", at)


class Responder:
    """Plays the scheduler and the workers: answers each story request with the records
    scripted for its source (a source scripted None stays silent)."""

    def __init__(self, store: RedisStore, script: dict[str, list[wire.StoryRow] | None]) -> None:
        self.store = store.clone()  # a connection of its own
        self.script = script
        self.requests: list[tuple[str, wire.StoryRequest]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def streams(self) -> dict[str, str]:
        keys = self.store.keys
        out = {keys.sched: "scheduler"}
        out.update({keys.worker_stream(w): w for w in self.script if w != "scheduler"})
        return out

    def run(self) -> None:
        last = dict.fromkeys(self.streams(), "0-0")
        while not self.stop.is_set():
            for stream, source in self.streams().items():
                for entry_id, payload in self.store.read(stream, last[stream], 100, 1):
                    last[stream] = entry_id.decode()
                    body = wire.unpack(payload, stream)
                    if body.get("op") == wire.StoryRequest.OP:
                        self.answer(source, wire.StoryRequest.from_wire(body))
            time.sleep(0.005)

    def answer(self, source: str, request: wire.StoryRequest) -> None:
        self.requests.append((source, request))
        records = self.script.get(source)
        if records is not None:
            reply = wire.StoryReply(request.id, source, records)
            self.store.streams.to_client(request.client, reply)

    def __enter__(self) -> Responder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.store.close()


@pytest.fixture
def client() -> Iterator[Client]:
    """A client of a Redis with two registered workers and nobody else."""
    name = uuid.uuid4().hex
    store = connect(f"fakeredis://{name}", "story")
    for address in (W1, W2):
        store.workers.put(wire.WorkerRecord(address, address[-8:], 1))
    stand_in_scheduler(store)
    c = Client(f"fakeredis://{name}", cluster_name="story", set_as_default=False, timeout=5)
    yield c
    c.close()
    store.close()
    drop_fake_server(name)


def test_story_merges_the_scheduler_and_every_worker_in_time_order(client: Client) -> None:
    script: dict[str, list[wire.StoryRow] | None] = {
        "scheduler": [row("a", "released", "waiting", 1.0), row("a", "processing", "memory", 3.0)],
        W1: [row("a", "ready", "executing", 2.0)],
        W2: [row("a", "executing", "memory", 4.0)],
    }
    with Responder(client.store, script) as responder:
        events = client.story(Future("a", client), ("x", 1))

    assert [(e.source, e.finish, e.time) for e in events] == [
        ("scheduler", "waiting", 1.0),
        (W1, "executing", 2.0),
        ("scheduler", "memory", 3.0),
        (W2, "memory", 4.0),
    ]
    assert events[0] == StoryEvent("scheduler", "a", "released", "waiting", "stimulus-1.0", 1.0)
    asked = sorted(source for source, _ in responder.requests)
    assert asked == sorted(["scheduler", W1, W2])  # one request on each stream
    assert {tuple(r.keys) for _, r in responder.requests} == {("a", "('x', 1)")}
    assert len({r.id for _, r in responder.requests}) == 1


def test_a_silent_worker_is_reported_not_waited_on_for_ever(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    script: dict[str, list[wire.StoryRow] | None] = {
        "scheduler": [row("a", "released", "waiting", 1.0)],
        W1: [row("a", "ready", "executing", 2.0)],
        W2: None,
    }
    with Responder(client.store, script):
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, "rdist.client"):
            events = client.story("a", on_error="ignore", timeout=0.3)
        waited = time.monotonic() - started
        with pytest.raises(TimeoutError, match=W2):
            client.story("a", timeout=0.3)

    assert [e.source for e in events] == ["scheduler", W1]
    assert 0.25 < waited < 3
    assert W2 in caplog.text


def test_story_answers_from_an_earlier_request_are_not_taken_for_a_later_one(
    client: Client,
) -> None:
    stale = wire.StoryReply("an-old-request", "scheduler", [row("a", "x", "y", 9.0)])
    client.store.streams.to_client(client.id, stale)
    script: dict[str, list[wire.StoryRow] | None] = {
        "scheduler": [row("a", "released", "waiting", 1.0)],
        W1: [],
        W2: [],
    }
    with Responder(client.store, script):
        events = client.story("a")

    assert [(e.source, e.time) for e in events] == [("scheduler", 1.0)]


def test_on_error_must_be_raise_or_ignore(client: Client) -> None:
    with pytest.raises(ValueError, match="on_error"):
        client.story("a", on_error="skip")


def test_merging_keeps_one_answer_per_source_and_names_the_silent_ones() -> None:
    first = wire.StoryReply("r", W1, [row("a", "s", "t", 2.0), row("a", "t", "u", 2.0)])
    again = wire.StoryReply("r", W1, [row("a", "never", "seen", 0.5)])
    scheduler = wire.StoryReply("r", "scheduler", [row("a", "p", "q", 2.0)])

    events, missing = merge_stories([first, scheduler, again], ["scheduler", W1, W2])

    # equal times keep each source's own order; answers arrive in any order
    assert [(e.source, e.finish) for e in events] == [(W1, "t"), (W1, "u"), ("scheduler", "q")]
    assert missing == [W2]


# -- end to end (needs the scheduler's and the workers' side) ----------------------------------


@pytest.mark.skipif(
    wire.StoryRequest.OP not in wire.WORKER,
    reason="the workers' stream does not carry story requests yet (scheduler/worker side)",
)
def test_story_of_a_computed_key_tells_what_the_scheduler_and_its_worker_did() -> None:
    with fake_cluster() as (c, cluster):
        future = c.submit(sum, [1, 2, 3])
        assert future.result(timeout=10) == 6

        events = c.story(future)

        assert events and all(e.key == future.key for e in events)
        assert [e.time for e in events] == sorted(e.time for e in events)
        sources = {e.source for e in events}
        assert "scheduler" in sources
        assert sources & {w.address for w in cluster.workers}
        assert any(e.source == "scheduler" and e.finish == "memory" for e in events)
