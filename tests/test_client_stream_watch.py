"""The client's stream watch on fakeredis (the real-Redis losses are in
``tests/test_client_stream_loss.py``): the marker is kept as the stream's oldest entry and
never deleted, a deleted stream is made again and the unfinished keys asked for again, and
nothing happens while the marker is there."""

from __future__ import annotations

from typing import Any

from rdist import Client
from rdist.client import inbox
from tests.client_helpers import wait_gate, wait_until


def gated_inc(gate: str, x: int) -> int:
    wait_gate(gate)
    return x + 1


def _marker(c: Client) -> bytes:
    watch = c.stream_watch
    wait_until(lambda: watch._marker is not None, what="the marker made")
    assert watch._marker is not None
    return watch._marker


def test_the_marker_stays_the_oldest_entry_while_entries_come_and_go(c: Client) -> None:
    marker = _marker(c)
    stream = c.store.keys.client_stream(c.id)

    assert c.gather(c.map(lambda x: x + 1, range(50))) == list(range(1, 51))

    def oldest() -> bytes | None:
        first = c.store.redis.xrange(stream, count=1)
        return first[0][0] if first else None

    # handled entries go in batches (at most a second later): then only the marker is left
    wait_until(lambda: c.store.redis.xlen(stream) == 1, timeout=10, what="handled ones deleted")
    assert oldest() == marker
    assert c.stream_watch.recoveries == 0


def test_a_deleted_stream_is_made_again_and_the_waiting_future_finishes(
    c: Client, gates: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(inbox, "WATCH_SECONDS", 0.1)
    gate = gates.new()
    future = c.submit(gated_inc, gate, 1)
    old = _marker(c)
    stream = c.store.keys.client_stream(c.id)

    c.store.redis.delete(stream)
    wait_until(lambda: c.stream_watch.recoveries == 1, what="the loss noticed")
    gates.open(gate)

    assert future.result(timeout=10) == 2
    assert c.stream_watch._marker not in (None, old)
    assert c.store.redis.exists(stream)
