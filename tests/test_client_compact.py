"""What the client keeps per task, and its quick paths: each gives what the general path
gives, and keeps less (a million pending futures must fit in about half a kilobyte each)."""

from __future__ import annotations

import threading
from functools import partial
from typing import Any

import msgpack
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


def test_the_journal_keeps_the_futures_own_key_strings_and_no_copies() -> None:
    keys = ["".join(["k", str(i)]) for i in range(3)]  # made at run time: not interned
    journal = Journal()
    journal.record(update(*((k, []) for k in keys)), None, list)
    journal._parts.append(recovery_packed(journal))

    (part_keys, blob) = journal._parts[0]
    assert all(a is b for a, b in zip(part_keys, keys))
    # named by position inside (the specs, here the keys' bytes, travel as they are)
    assert all(msgpack.packb(k) not in lz4_decompressed(blob) for k in keys)
    rows, specs, _ = journal.graph_for(keys)
    assert [r.key for r in rows] == keys and specs == {k: k.encode() for k in keys}


def recovery_packed(journal: Journal) -> Any:
    """Packs the journal's fresh rows into a part now (as a full part would be)."""
    from rdist.client import recovery

    part = recovery._packed(journal._fresh, journal._fresh_specs)
    journal._fresh, journal._fresh_specs = [], {}
    return part


def lz4_decompressed(blob: bytes) -> bytes:
    import lz4.frame

    return bytes(lz4.frame.decompress(blob))


# -- shared outcomes -------------------------------------------------------------------------


def notified(ledger: Ledger, items: list[wire.KeyInMemory]) -> None:
    """Settle ``items`` as they arrive: encoded, then unpacked afresh."""
    (msg,) = wire.CLIENT.decode(wire.Notify(list(items)).encode())
    assert isinstance(msg, wire.Notify)
    ledger.settle(msg.items)


def test_keys_with_the_same_small_inline_value_share_one_outcome_without_a_key() -> None:
    ledger = ledger_with(Posts())
    states = ledger.submitted(["a", "b", "c", "d"])
    none, one = serialize.to_blob(None), serialize.to_blob(1)
    holders = ["tcp://w:1"]

    notified(
        ledger,
        [
            wire.KeyInMemory("a", 8, False, holders, "NoneType", none),
            wire.KeyInMemory("b", 8, False, holders, "NoneType", none),
            wire.KeyInMemory("c", 8, False, holders, "int", one),
            wire.KeyInMemory("d", 8, False, ["tcp://w:2"], "NoneType", none),
        ],
    )

    a, b, c, d = (s.outcome for s in states)
    assert a is b and a.key == "" and a.inline == none  # one for both, holding no key
    assert c is not a and c.inline == one
    assert d is not a and d.who_has == ["tcp://w:2"]
    assert [s.status for s in states] == [FINISHED] * 4


def test_a_large_inline_value_keeps_an_outcome_of_its_own_key() -> None:
    from rdist.client import ledger as ledger_module

    ledger = ledger_with(Posts())
    states = ledger.submitted(["a", "b"])
    big = b"x" * (ledger_module.SHARED_INLINE_BYTES + 1)

    notified(ledger, [wire.KeyInMemory(k, 8, False, ["tcp://w:1"], "bytes", big) for k in "ab"])

    one, two = (s.outcome for s in states)
    assert one is not two and one.key is states[0].key and two.key is states[1].key


def test_the_shared_outcomes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from rdist.client import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "SHARED_OUTCOMES", 4)
    ledger = ledger_with(Posts())
    keys = [f"k{i}" for i in range(10)]
    states = ledger.submitted(keys)

    notified(
        ledger,
        [
            wire.KeyInMemory(k, 8, False, ["w"], "int", serialize.to_blob(i))
            for i, k in enumerate(keys)
        ],
    )

    assert len(ledger._shared) <= 4
    assert [serialize.from_blob(s.outcome.inline) for s in states] == list(range(10))


# -- gather of a list --------------------------------------------------------------------------


class Host:
    """A client as far as its futures and a gather need one."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.status = "running"


def gathered(items: list[wire.Item], listed: list[str], errors: str = "raise") -> list[Any]:
    from rdist.client.results import Results

    ledger = ledger_with(Posts())
    futures = Future._submitted(listed, Host(ledger))  # type: ignore[arg-type]
    ledger.settle(items)
    return Results(None, ledger, None).gather(futures, errors)  # type: ignore[arg-type]


def inline(key: str, value: Any) -> wire.KeyInMemory:
    return wire.KeyInMemory(key, 8, False, ["w"], type(value).__name__, serialize.to_blob(value))


def test_a_gathered_list_gives_the_same_object_for_a_key_listed_twice() -> None:
    values = gathered([inline("a", [1]), inline("b", [1])], ["a", "b", "a"])

    assert values == [[1], [1], [1]]
    assert values[0] is values[2] and values[0] is not values[1]


def test_a_gathered_list_skips_failed_futures_in_place_or_raises_the_first() -> None:
    erred = wire.KeyErred("b", "b", None, "it broke")
    items: list[wire.Item] = [inline("a", 1), erred, inline("c", 3)]

    assert gathered(items, ["a", "b", "c"], errors="skip") == [1, 3]
    with pytest.raises(RuntimeError, match="it broke"):
        gathered(items, ["a", "b", "c"])
