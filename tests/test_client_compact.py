"""What the client keeps per task, and its quick paths: each gives what the general path
gives, and keeps less (a million pending futures must fit in about half a kilobyte each)."""

from __future__ import annotations

import threading
from functools import partial
from typing import Any

import pytest

from rdist.client import graph
from rdist.client.future import CANCELLED, FINISHED, PENDING, Future, FutureState, futures_of
from rdist.client.ledger import Ledger
from rdist.client.recovery import Journal
from rdist.client.sender import Sender
from rdist.protocol import serialize, wire

CLIENT = "c-compact"


class Posts:
    """Stands in for the Sender where a ledger only posts."""

    def __init__(self) -> None:
        self.released: list[str] = []
        self.posted: list[wire.Message] = []

    def release(self, key: str) -> None:
        self.released.append(key)

    def post(self, msg: wire.Message, *args: Any, **kwargs: Any) -> None:
        self.posted.append(msg)


def ledger_with(posts: Posts) -> Ledger:
    return Ledger(CLIENT, posts, lambda done, budget: None, lambda fs: {}, lambda: True)  # type: ignore[arg-type]


# -- the outbox ----------------------------------------------------------------------------


def test_consecutive_releases_travel_as_one_message_and_keep_their_place() -> None:
    sender = Sender(None, CLIENT, threading.Event())  # type: ignore[arg-type]
    sender.release("a")
    sender.release("b")
    sender.post(wire.UpdateGraph(CLIENT, wanted=["a"]))
    sender.release("c")

    queued = [msg for msg, _ in sender._drain()]

    assert queued == [
        wire.ReleaseKeys(CLIENT, ["a", "b"]),
        wire.UpdateGraph(CLIENT, wanted=["a"]),
        wire.ReleaseKeys(CLIENT, ["c"]),
    ]


def test_a_release_wakes_the_sender_thread_once_per_message() -> None:
    sender = Sender(None, CLIENT, threading.Event())  # type: ignore[arg-type]
    woken: list[int] = []
    sender._ready.notify = lambda n=1: woken.append(n)  # type: ignore[method-assign]
    for key in "abcd":
        sender.release(key)
    sender.post(wire.UpdateGraph(CLIENT, wanted=["x"]), lazy=True)
    sender.release("e")

    assert len(woken) == 3  # the first release, the update, the release after it


# -- the ledger ------------------------------------------------------------------------------


def test_a_submission_counts_each_key_and_restarts_a_cancelled_one() -> None:
    ledger = ledger_with(Posts())
    first = ledger.submitted(["a", "b"])
    first[1].settle(CANCELLED, None)

    again = ledger.submitted(["b", "b"])

    assert again[0] is again[1] is first[1]
    assert first[1].status == PENDING and first[1].refs == 3
    assert first[0].refs == 1


def test_the_last_release_of_a_key_is_told_once() -> None:
    posts = Posts()
    ledger = ledger_with(posts)
    ledger.submitted(["a", "a"])

    ledger.release("a")
    assert posts.released == []
    ledger.release("a")
    ledger.release("a")  # nothing held any more: not told again

    assert posts.released == ["a"]
    assert ledger.holds("a") is None


def test_a_result_is_kept_with_the_futures_own_key_and_shared_holders() -> None:
    ledger = ledger_with(Posts())
    states = ledger.submitted(["inc-1", "inc-2"])
    entry = wire.Notify(
        [wire.KeyInMemory(k, 8, False, ["tcp://w:1"], "int") for k in ("inc-1", "inc-2")]
    ).encode()
    (msg,) = wire.CLIENT.decode(entry)  # as it arrives: every string unpacked afresh
    assert isinstance(msg, wire.Notify)
    items = msg.items

    ledger.settle(items)

    one, two = (s.outcome for s in states)
    assert isinstance(one, wire.KeyInMemory) and isinstance(two, wire.KeyInMemory)
    assert one.key is states[0].key and two.key is states[1].key
    assert one.who_has == ["tcp://w:1"] and one.who_has is two.who_has
    assert states[0].status == FINISHED


def test_a_pending_future_holds_no_callback_list_until_one_is_added() -> None:
    state = FutureState("k")
    assert state.callbacks is None
    calls: list[str] = []
    ledger = ledger_with(Posts())
    ledger.when_done(state, lambda: calls.append("done"))

    for fn in state.settle(FINISHED, None):
        fn()

    assert calls == ["done"] and state.callbacks is None
    assert state.settle(FINISHED, None) == []


def test_callbacks_added_to_one_state_all_fire_once_in_order() -> None:
    state = FutureState("k")
    calls: list[int] = []
    for i in range(3):
        state.add_callback(partial(calls.append, i))

    for fn in state.settle(FINISHED, None):
        fn()
    for fn in state.settle(FINISHED, None):
        fn()

    assert calls == [0, 1, 2]


# -- packing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1,), {}), ((1, 2.5, "x", b"y", None, True), {"k": 3}), ((), {"s": "é" * 40})],
)
def test_plain_arguments_pack_to_the_blob_the_full_path_gives(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    quick = graph.pack_plain(args, kwargs)
    full = graph.pack_arguments(args, kwargs, futures_of, Future)

    assert quick is not None
    assert quick[:3] == full[:3] and quick[3] == full[3] == []
    assert serialize.from_blob(quick[0]) == (args, kwargs)


@pytest.mark.parametrize("value", ["__main__", "x" * (2 << 20)])
def test_plain_arguments_that_need_the_full_path_are_left_to_it(value: str) -> None:
    assert graph.pack_plain((value,), {}) is None


def test_a_one_frame_blob_is_what_the_general_encoding_gives() -> None:
    head = serialize.dumps({"a": 1})[0]
    header, out = serialize.encode_frames([head])
    general = b"".join([serialize._MAGIC, len(header).to_bytes(4, "little"), header, *out])

    assert serialize.frames_to_blob([head]) == general
    assert [bytes(f) for f in serialize.blob_to_frames(general)] == [head]


# -- the journal -----------------------------------------------------------------------------


def update(*rows: tuple[str, list[str]]) -> wire.UpdateGraph:
    return wire.UpdateGraph(
        CLIENT,
        tasks=[wire.TaskRow(k, d) for k, d in rows],
        specs={k: k.encode() for k, _ in rows},
    )


def test_the_journal_gives_a_key_submitted_twice_once_in_its_first_place() -> None:
    journal = Journal()
    journal.record(update(("a", []), ("b", ["a"])), None, list)
    journal.record(update(("a", []), ("c", ["a"])), None, list)

    rows, specs, _ = journal.graph_for(["b", "c"])

    assert [r.key for r in rows] == ["a", "b", "c"]
    assert specs == {"a": b"a", "b": b"b", "c": b"c"}


def test_the_journal_does_not_prune_while_most_of_it_is_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rdist.client import recovery

    monkeypatch.setattr(recovery, "JOURNAL_MIN", 3)
    journal = Journal()
    journal.record(update(("a", []), ("b", [])), None, list)
    journal.record(update(("c", []), ("d", [])), None, lambda: ["a", "b", "c"])

    assert len(journal) == 4
    assert [r.key for r in journal.graph_for(["a", "b", "c", "d"])[0]] == ["a", "b", "c", "d"]


def test_the_journal_keeps_its_order_across_encoded_parts_and_fresh_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rdist.client import recovery

    monkeypatch.setattr(recovery, "PART_ROWS", 2)
    journal = Journal()
    journal.record(update(("a", [])), None, list)
    journal.record(update(("b", ["a"]), ("c", [])), None, list)  # a, b, c: one part
    journal.record(update(("d", ["b"])), None, list)  # still as it is

    assert len(journal._parts) == 1 and [r.key for r in journal._fresh] == ["d"]
    rows, specs, _ = journal.graph_for(["d"])
    assert [r.key for r in rows] == ["a", "b", "d"]
    assert specs == {"a": b"a", "b": b"b", "d": b"d"}
