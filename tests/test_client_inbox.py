"""The client's stream reader (rdist.client.inbox): the listener thread and a thread
waiting on a result both read; every entry is handled once, in stream order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from rdist.client import inbox as inbox_module
from rdist.client.inbox import Inbox, entry_seq
from rdist.protocol import wire
from rdist.store import RedisStore, connect
from rdist.store.connection import drop_fake_server
from rdist.store.keys import PAYLOAD_FIELD
from tests.client_helpers import wait_until


class Recorder:
    def __init__(self) -> None:
        self.handled: list[bytes] = []
        self.idle = 0

    def handle(self, entry_id: bytes, payload: bytes | None) -> None:
        self.handled.append(entry_id)

    def on_idle(self) -> None:
        self.idle += 1


@pytest.fixture
def store() -> Iterator[RedisStore]:
    s = connect("fakeredis://inbox-test", "inbox")
    yield s
    s.close()
    drop_fake_server("inbox-test")


def make_inbox(store: RedisStore, rec: Recorder, stop: threading.Event) -> Inbox:
    return Inbox(
        store,
        "c1",
        rec.handle,
        lambda: wire.ClientRecord("c1", time.time()),
        stop,
        idle=rec.on_idle,
        beat_every=5.0,
    )


def test_entry_ids_order_like_the_stream() -> None:
    assert (
        entry_seq(b"1700000000000-2")
        < entry_seq(b"1700000000000-10")
        < entry_seq(b"1700000000001-0")
    )


def test_listener_and_waiter_together_handle_each_entry_once_in_order(store: RedisStore) -> None:
    rec, stop = Recorder(), threading.Event()
    inbox = make_inbox(store, rec, stop)
    listener = threading.Thread(target=inbox.listen, daemon=True)
    listener.start()
    stream = store.keys.client_stream("c1")
    sent: list[bytes] = []
    try:
        for _ in range(20):
            sent += [store.redis.xadd(stream, {PAYLOAD_FIELD: b"x"}) for _ in range(25)]
            target = sent[-1]
            # a waiting thread reads too, racing the listener for the same entries
            inbox.read_while_waiting(lambda t=target: t in rec.handled, budget=2.0)
        wait_until(lambda: len(rec.handled) >= len(sent), what="every entry handled")
        # deleted in batches (by count, or a second after the last deletion)
        wait_until(
            lambda: store.redis.xlen(stream) == 0,
            timeout=5,
            what="handled entries deleted by later reads",
        )
    finally:
        stop.set()
        listener.join(5)
        inbox.close()

    assert rec.handled == sent  # once each, in order


def test_entries_read_by_both_readers_are_handled_once(store: RedisStore) -> None:
    rec, stop = Recorder(), threading.Event()
    inbox = make_inbox(store, rec, stop)
    stream = store.keys.client_stream("c1")
    ids = [store.redis.xadd(stream, {PAYLOAD_FIELD: b"x"}) for _ in range(6)]
    entries = store.read(stream, "0-0", 100, 10)

    inbox._handle_entries(entries[:4])  # the waiter read four
    inbox._handle_entries(entries)  # the listener had read all six meanwhile

    assert rec.handled == ids
    inbox.close()


def test_the_listener_keeps_off_the_stream_while_a_thread_waits(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "LISTENER_GRACE", 0.2)
    rec, stop = Recorder(), threading.Event()
    inbox = make_inbox(store, rec, stop)

    assert not inbox.waiter_reads()
    inbox.read_while_waiting(lambda: False, budget=0.01)  # a wait that found nothing
    assert inbox.waiter_reads()  # within the grace period: the next wait is likely near
    time.sleep(0.25)
    assert not inbox.waiter_reads()
    inbox.close()


def test_the_idle_listener_flushes_what_was_posted_without_waking_anybody(
    store: RedisStore,
) -> None:
    rec, stop = Recorder(), threading.Event()
    inbox = make_inbox(store, rec, stop)
    listener = threading.Thread(target=inbox.listen, daemon=True)
    listener.start()
    try:
        wait_until(lambda: rec.idle >= 2, what="the listener calls idle before its reads")
    finally:
        stop.set()
        listener.join(5)
        inbox.close()
