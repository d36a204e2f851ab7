"""Events on topics as dask has them: log_event, get_events, subscribe_topic."""

from __future__ import annotations

import pytest

from rdist import Client, get_worker
from tests.client_helpers import wait_until


def log_from_task(n: int) -> int:
    get_worker().log_event("from-tasks", {"n": n})
    return n


def test_logged_events_come_back_in_order_with_their_times(c: Client) -> None:
    c.log_event("progress", {"step": 1})
    c.log_event(["progress", "audit"], "two")
    progress = c.get_events("progress")
    assert [msg for _, msg in progress] == [{"step": 1}, "two"]
    assert progress[0][0] <= progress[1][0]
    assert set(c.get_events()) >= {"progress", "audit"}
    assert c.get_events("never-logged") == ()


def test_tasks_log_through_their_worker(c: Client) -> None:
    assert c.gather(c.map(log_from_task, range(3))) == [0, 1, 2]
    assert sorted(msg["n"] for _, msg in c.get_events("from-tasks")) == [0, 1, 2]


def test_a_subscriber_hears_new_events_until_it_unsubscribes(c: Client) -> None:
    heard: list[object] = []
    c.log_event("live", "before")  # logged before subscribing: not heard
    c.subscribe_topic("live", lambda event: heard.append(event[1]))
    wait_until(lambda: c._topics._thread is not None, what="the subscription started")
    c.log_event("live", "after")

    def heard_after() -> bool:
        if "after" not in heard:
            c.log_event("live", "after")  # the reader may not have blocked yet
        return "after" in heard

    wait_until(heard_after, timeout=10, what="the subscriber heard the event")
    assert "before" not in heard
    c.unsubscribe_topic("live")
    with pytest.raises(ValueError, match="not subscribed"):
        c.unsubscribe_topic("live")


def test_a_failing_handler_does_not_end_the_subscription(c: Client) -> None:
    heard: list[object] = []

    def handler(event: tuple[float, object]) -> None:
        heard.append(event[1])
        raise RuntimeError("handler bug")

    c.subscribe_topic("fragile", handler)

    def heard_two() -> bool:
        c.log_event("fragile", len(heard))
        return len(heard) >= 2

    wait_until(heard_two, timeout=10, what="two events heard despite the raising handler")


def test_bad_topics_and_messages_are_refused_at_the_call(c: Client) -> None:
    with pytest.raises(TypeError, match="topic="):
        c.log_event("", 1)
    with pytest.raises(TypeError, match="msgpack"):
        c.log_event("t", object())
    with pytest.raises(TypeError, match="handler="):
        c.subscribe_topic("t", "not callable")  # type: ignore[arg-type]
