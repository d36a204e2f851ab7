"""Typed wire records: every record type round-trips, every malformed variant is refused
with a MalformedMessage that names its field (and the stream)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from rdist.protocol import wire
from rdist.protocol.wire import base

DONE = wire.DoneRow("inc-1", 28, True, b"\x01", 0.25, "int")
COMPUTE = wire.Compute(
    "inc-2", (0, 3, 1), {"inc-1": wire.DepInfo(["tcp://w:1"], 28, True)}, None, b"s", ["c1"]
)

#: One filled-in example of every message, by the channel that carries it.
MESSAGES: list[tuple[wire.Channel, wire.Message]] = [
    (
        wire.SCHEDULER,
        wire.UpdateGraph(
            "c1",
            [
                wire.TaskRow("a", [], 0, None, False, 0, None),
                wire.TaskRow("b", ["a"], 5, ["tcp://w:1"], True, 2, {"GPU": 1.0}),
            ],
            ["b"],
            ["a"],
            {"a": b"spec-a", "b": b"spec-b"},
        ),
    ),
    (wire.SCHEDULER, wire.ReleaseKeys("c1", ["a", "b"])),
    (wire.SCHEDULER, wire.Cancel("c1", ["a"], True)),
    (wire.SCHEDULER, wire.Retry("c1", ["a"])),
    (wire.SCHEDULER, wire.ClientJoin("c1")),
    (wire.SCHEDULER, wire.ClientLeave("c1")),
    (wire.SCHEDULER, wire.Scatter("c1", [wire.ScatterItem("x", ["tcp://w:1"], 10, True)])),
    (wire.SCHEDULER, wire.Restart("c1")),
    (wire.SCHEDULER, wire.DropReplicas("c1", {"x": ["tcp://w:1"]})),
    (wire.SCHEDULER, wire.Barrier("c1", "b1")),
    (wire.SCHEDULER, wire.Wake()),
    (wire.SCHEDULER, wire.StoryRequest("c1", "s1", ["a", "b"])),
    (
        wire.SCHEDULER,
        wire.WorkerJoin(
            "tcp://w:1", "w1", 2, 1 << 30, {"GPU": 2.0}, "host", 42, "running", 1.5e9, "p2p"
        ),
    ),
    (wire.SCHEDULER, wire.WorkerLeave("tcp://w:1")),
    (wire.SCHEDULER, wire.WorkerLost("tcp://w:1")),
    (wire.SCHEDULER, wire.AddKeys("tcp://w:1", ["x"])),
    (wire.SCHEDULER, wire.HeldKeys("tcp://w:1", {"x": 10, "y": 0})),
    (wire.SCHEDULER, wire.WorkerStatus("tcp://w:1", "paused")),
    (
        wire.SCHEDULER,
        wire.TaskDone(
            "tcp://w:1",
            [DONE],
            [wire.ErredRow("bad-1", b"err", 0.5)],
            ["x"],
            [wire.MissingRow("k", ["d"], ["tcp://w:2"])],
            ["long-1"],
            [wire.StolenRow("s-1", True)],
            ["resched-1"],
        ),
    ),
    (wire.SCHEDULER, wire.RetireWorkers("c1", ["tcp://w:1", "tcp://w:2"])),
    (wire.SCHEDULER, wire.RestartTasks("tcp://w:1", ["a", "b"], "cannot reach tcp://w:2")),
    (wire.SCHEDULER, wire.Shutdown("c1")),
    (wire.SCHEDULER, wire.AmmRequest("c1", "amm-1", "retire", ["tcp://w:1"])),
    (wire.SCHEDULER, wire.AmmRequest("c1", "amm-2", "run_once")),
    (wire.WORKER, wire.Retire(["tcp://w:2"])),
    (wire.SCHEDULER, wire.PassKeys(["a", "b"], "client-1", "holder:queue:q:1")),
    (wire.SCHEDULER, wire.RegisterSchedulerPlugin("c1", "p1", "counter", b"pickled", True)),
    (wire.WORKER, wire.Batch([COMPUTE, wire.Free(["x", "y"]), wire.Steal("z")])),
    (wire.WORKER, wire.PluginAdded("p1", "errors", b"pickled", "c1")),
    (wire.WORKER, wire.PluginRemoved("p2", "errors", "c1")),
    (wire.WORKER, wire.ActorCall("a1", "c1", "Counter-1", "increment", b"args", True)),
    (wire.NANNY, wire.PluginAdded("p2", "environ", b"pickled", "")),
    (wire.NANNY, wire.PluginRemoved("p3", "environ", "")),
    (wire.WORKER, wire.Run("c1", "r1", b"pickled")),
    (wire.WORKER, wire.StackRequest("stacks-1")),
    (wire.WORKER, wire.Stop()),
    (wire.WORKER, wire.RestartWorker()),
    (wire.WORKER, wire.Publish("q1", ["x"], wire.ReplyTo("c", "c1"))),
    (wire.WORKER, wire.Load("q2", ["x"], wire.ReplyTo("w", "tcp://w:2"))),
    (wire.WORKER, wire.GatherKeys("q3", {"x": ["tcp://w:2"]}, wire.ReplyTo("c", "c1"))),
    (wire.WORKER, wire.GatherKeys("q4", {"x": ["tcp://w:2"]}, wire.ReplyTo("n", ""))),
    (wire.WORKER, wire.Published("q1", ["x"], [], None)),
    (wire.WORKER, wire.Loaded("q2", "MemoryError: no")),
    (wire.CLIENT, wire.Gathered("q3", "tcp://w:1", ["x"], ["y"])),
    (
        wire.CLIENT,
        wire.Notify(
            [
                wire.KeyInMemory("a", 10, True, ["tcp://w:1"], "int", b"\x02"),
                wire.KeyInMemory("b", 10, False, ["tcp://w:1"], "ndarray", None),
                wire.KeyErred("c", "c", b"err", None, None),
                wire.KeyErred("d", "c", None, "killed", wire.KILLED_WORKER),
                wire.KeyCancelled("e"),
                wire.KeyLost("f"),
                wire.BarrierReached("b1"),
            ]
        ),
    ),
    (wire.CLIENT, wire.RunResult("r1", "tcp://w:1", True, b"value")),
    (wire.CLIENT, wire.PluginReply("p1", "tcp://w:1", False, b"err", "setup failed")),
    (wire.CLIENT, wire.ActorAnswer("a1", True, b"value")),
    (wire.CLIENT, wire.AmmReply("amm-1", True, False, True)),
    (wire.CLIENT, wire.Restarted()),
    (
        wire.CLIENT,
        wire.StoryReply(
            "s1", "scheduler", [wire.StoryRow("a", "waiting", "processing", "1-0", 2.5)]
        ),
    ),
]

RECORDS: list[wire.Record] = [
    wire.TaskRecord("memory", (0, 1, 2), ["d"], ["tcp://w:1"], 5, True, ["c1"], None, "int"),
    wire.TaskRecord(
        "erred",
        (-1, 0, 0),
        restrictions=["w1"],
        loose=True,
        retries=1,
        resources={"GPU": 1.0},
        blame="x",
        error_text="boom",
        error_kind="killed-worker",
        suspicious=3,
    ),
    wire.TaskRecord("processing", (0, 0, 0), processing_on="tcp://w:1"),
    wire.WorkerRecord(
        "tcp://w:1",
        "w1",
        4,
        1 << 30,
        {"GPU": 1.0},
        "h",
        7,
        "paused",
        1.0,
        "redis",
        memory=100,
        cpu=50.5,
        executing=1,
        stored=2,
        stored_bytes=3,
        spilled_bytes=4,
        executed=5,
        last_seen=6.0,
        net_sent=7,
        net_recv=8,
        disk_read=9,
        disk_write=10,
    ),
    wire.ClientRecord("client-name", 1.7e9),
    wire.NannyRecord("host", 42, "tcp://w:1", 1.7e9, ["environ"]),
    wire.Heartbeat("tcp://w:1", 100, 3.5, 1, 2, 3, 4, 5, 6.0, 7, 8, 9, 10),
    wire.TaskStreamBatch(
        "tcp://w:1",
        [
            wire.TaskRun("k", "tcp://w:1", "rdist-exec-0", 1.0, 2.0, "erred", "E: x", "tb"),
            wire.TaskRun("j", "tcp://w:1", "", 1.0, 2.0, "memory", "", "", 80, "ndarray"),
        ],
        [wire.TransferRun("d", "tcp://w:1", "tcp://w:2", 0.5, 0.9, 1000)],
    ),
    wire.ProfileBatch(
        "tcp://w:1",
        1.0,
        2.0,
        3,
        {"inc": ["", "", 0, 3, [["inc", "/m.py", 4, 3, [["add", "/m.py", 9, 1, []]]]]]},
    ),
    wire.RelayMeta([[1, 2], [0, 0]], [1, 3]),
    wire.CallStacks(
        "tcp://w:1",
        1.7e9,
        [wire.TaskStack("k", "rdist-exec-0", ["f.py:3 in g", "    time.sleep(1)"])],
    ),
    wire.LogLine(1700000000.25, "WARNING", "rdist.worker", "2026-12-01 rdist.worker WARNING x"),
]


def _id(item: Any) -> str:
    record = item[1] if isinstance(item, tuple) else item
    return type(record).__name__


@pytest.mark.parametrize("channel, message", MESSAGES, ids=[_id(m) for m in MESSAGES])
def test_every_message_round_trips_through_its_channel(channel, message):
    assert channel.decode(message.encode()) == [message]


@pytest.mark.parametrize("record", RECORDS, ids=[_id(r) for r in RECORDS])
def test_every_stored_record_round_trips(record):
    assert type(record).decode(record.encode()) == record


def test_every_message_class_has_an_example_here():
    covered = {type(m) for _, m in MESSAGES}
    for channel in (wire.SCHEDULER, wire.WORKER, wire.CLIENT, wire.NANNY):
        assert set(channel.ops.values()) <= covered, set(channel.ops.values()) - covered


def test_a_bundle_decodes_into_its_messages_in_order():
    parts = [wire.ClientJoin("c1").encode(), wire.ReleaseKeys("c1", ["a"]).encode()]

    assert wire.SCHEDULER.decode(wire.bundle(parts)) == [
        wire.ClientJoin("c1"),
        wire.ReleaseKeys("c1", ["a"]),
    ]


def test_one_bad_message_in_a_bundle_refuses_the_whole_entry_naming_its_place():
    parts = [
        wire.ClientJoin("c1").encode(),
        wire.pack({"op": "release-keys", "client": "c1", "keys": [1]}),
    ]

    with pytest.raises(wire.MalformedMessage) as info:
        wire.SCHEDULER.decode(wire.bundle(parts), "rdist:{x}:sched")

    assert info.value.field == "msgs[1].keys[0]"
    assert info.value.where == "rdist:{x}:sched"
    assert info.value.op == "release-keys"


def test_cluster_event_keeps_its_kind_and_free_form_info():
    event = wire.ClusterEvent("worker-joined", {"worker": "tcp://w:1", "name": "w1"})

    assert wire.ClusterEvent.decode(event.encode()) == event


def test_sparse_task_record_leaves_empty_fields_out():
    record = wire.TaskRecord("waiting", (0, 1, 2))

    assert msgpack.unpackb(record.encode()) == {"s": "waiting", "p": [0, 1, 2]}


# -- malformed variants ------------------------------------------------------------------------


def _wire_map(message: wire.Record) -> dict[str, Any]:
    body = msgpack.unpackb(message.encode(), raw=False, strict_map_key=False)
    assert isinstance(body, dict)
    return body


def _decode_map(channel: wire.Channel | None, cls: type[wire.Record], body: dict[str, Any]) -> Any:
    if channel is None:
        return cls.from_wire(body)
    return channel._one(body, channel.name, "")


def _wrong_values(value: Any) -> list[Any]:
    """Plausible msgpack values of another type than ``value`` (and one absurd number)."""
    candidates: list[Any] = [
        "text",
        7,
        -1,
        2**62,
        1.5,
        float("nan"),
        True,
        None,
        b"raw",
        [1, "x"],
        {"k": 1},
    ]
    return [c for c in candidates if type(c) is not type(value) or c in (-1, 2**62, float("nan"))]


def _codec(cls: type[wire.Record], wire_name: str) -> base.Codec:
    fields = cls.FIELDS
    return next(c for n, c in fields.codecs.items() if fields.wire_names[n] == wire_name)


def _illegal(cls: type[wire.Record], wire_name: str, value: Any) -> bool:
    """Whether ``value`` is refused for the field (a few fields take several types, and
    None stands for "not given" wherever a field has a default)."""
    fields = cls.FIELDS
    name = next(n for n, w in fields.wire_names.items() if w == wire_name)
    if value is None and name in fields.defaults:
        return False
    try:
        _codec(cls, wire_name).decode(value, wire_name)
    except wire.MalformedMessage:
        return True
    return False


def _variants() -> list[tuple[wire.Channel | None, wire.Record, str, Any]]:
    out = []
    examples: list[tuple[wire.Channel | None, wire.Record]] = [
        *MESSAGES,
        *((None, r) for r in RECORDS),
    ]
    for channel, record in examples:
        for name, value in _wire_map(record).items():
            if name == "op":
                continue
            for wrong in _wrong_values(value):
                if _illegal(type(record), name, wrong):
                    out.append((channel, record, name, wrong))
    return out


@pytest.mark.parametrize("channel, record, field, wrong", _variants())
def test_a_field_of_the_wrong_type_or_range_is_refused_naming_the_field(
    channel, record, field, wrong
):
    body = _wire_map(record)
    body[field] = wrong

    with pytest.raises(wire.MalformedMessage) as info:
        _decode_map(channel, type(record), body)

    assert info.value.field.split("[")[0].split(".")[0] == field, str(info.value)


def test_every_field_has_some_illegal_variant_tested():
    tested = {(type(r), f) for _, r, f, _ in _variants()}
    for _channel, record in [*MESSAGES, *((None, r) for r in RECORDS)]:
        for name in _wire_map(record):
            if name != "op" and not isinstance(_codec(type(record), name), base.Any_):
                assert (type(record), name) in tested, (type(record).__name__, name)


@pytest.mark.parametrize("channel, record", [*MESSAGES, *((None, r) for r in RECORDS)], ids=_id)
def test_a_missing_required_field_is_refused_naming_it(channel, record):
    cls = type(record)
    for name in cls.FIELDS.required:
        body = _wire_map(record)
        del body[cls.FIELDS.wire_names[name]]
        with pytest.raises(wire.MalformedMessage) as info:
            _decode_map(channel, cls, body)
        assert info.value.field == cls.FIELDS.wire_names[name]
        assert "missing" in info.value.problem


@pytest.mark.parametrize(
    "payload, problem",
    [
        (None, "no payload"),
        (b"\xc1", "not msgpack"),
        (msgpack.packb([1, 2]), "expected a map"),
        (msgpack.packb({"op": "nonsense"}), "unknown op"),
        (msgpack.packb({"client": "c1"}), "unknown op"),
        (msgpack.packb({"op": "client-join", "client": "c1"})[:-2], "not msgpack"),
        (b"\x91" * 100_000 + b"\x90", "not msgpack"),  # nested far deeper than any message
    ],
)
def test_an_entry_that_is_no_message_at_all_is_refused(payload, problem):
    with pytest.raises(wire.MalformedMessage) as info:
        wire.SCHEDULER.decode(payload, "rdist:{x}:sched")

    assert problem in str(info.value) and info.value.where == "rdist:{x}:sched"


def test_a_message_of_another_stream_is_refused():
    with pytest.raises(wire.MalformedMessage, match="unknown op 'batch'"):
        wire.SCHEDULER.decode(wire.Batch([]).encode())


def test_an_oversized_entry_is_refused_before_it_is_parsed(monkeypatch):
    monkeypatch.setattr(base, "MAX_MESSAGE_BYTES", 10)

    with pytest.raises(wire.MalformedMessage, match="exceeds 10"):
        wire.SCHEDULER.decode(wire.ClientJoin("client-with-a-long-id").encode())


@pytest.mark.parametrize(
    "actions, field",
    [
        ([["c", "k"]], "a[0]"),  # a short compute action
        ([["c", ["k"], [0], {}, None, None, None]], "a[0].key"),  # an unhashable key
        ([["c", "k", [0], {"d": [5, 1, False]}, None, None, None]], "a[0].deps"),  # int holders
        ([["c", "k", [0, "high"], {}, None, None, None]], "a[0].priority[1]"),  # mixed priorities
        ([["c", "k", [0], {}, ["GPU"], None, None]], "a[0].resources"),  # resources as a list
        ([["c", "k", [0], {}, {"GPU": -1}, None, None]], "a[0].resources"),
        ([["x", "k"]], "a[0]"),
        ([[]], "a[0]"),
        ([["f", "k"]], "a[0].keys"),
    ],
)
def test_worker_batch_actions_that_would_kill_a_thread_are_refused(actions, field):
    with pytest.raises(wire.MalformedMessage) as info:
        wire.WORKER.decode(wire.pack({"op": "batch", "a": actions}))

    assert info.value.field.startswith(field), str(info.value)


@pytest.mark.parametrize(
    "items",
    [
        [["k", "memory", []]],
        [["k", "memory", {"who_has": "tcp://w:1"}]],
        [["k", "erred", {"error": "not bytes"}]],
        [["k", "sideways", {}]],
        [[1, "memory", {}]],
        ["k"],
    ],
)
def test_notify_items_that_would_kill_a_listener_are_refused(items):
    with pytest.raises(wire.MalformedMessage) as info:
        wire.CLIENT.decode(wire.pack({"op": "notify", "items": items}))

    assert info.value.field.startswith("items[0]")


def test_fast_paths_agree_with_the_checked_paths():
    """The hot rows have a fast decoder; it must accept exactly what the codecs accept."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from rdist.protocol.wire import to_client, to_scheduler, to_worker

    atoms = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.binary(max_size=4),
    )
    values = st.recursive(
        atoms,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=12,
    )

    def agree(fast: Any, slow: Any, row: Any) -> None:
        quick = fast(row)
        try:
            checked = slow(row)
        except wire.MalformedMessage:
            assert quick is None, row
        else:
            assert quick is None or quick == checked, row

    @settings(max_examples=300, deadline=None)
    @given(st.lists(values, min_size=5, max_size=8))
    def rows(row: list[Any]) -> None:
        agree(to_scheduler._fast_task_row, lambda r: to_scheduler.TASK_ROW.decode(r, "t"), row)
        agree(to_scheduler._fast_done_row, lambda r: to_scheduler.DONE_ROW.decode(r, "d"), row)
        agree(to_worker._fast_compute, lambda r: to_worker._COMPUTE.decode(r[1:], "c"), ["c", *row])
        agree(
            to_client._fast_memory,
            lambda r: to_client.Items()._one(r, "i"),
            [
                "k",
                "memory",
                {
                    "nbytes": row[0],
                    "redis": row[1],
                    "who_has": row[2],
                    "type": row[3],
                    "inline": row[4],
                },
            ],
        )

    rows()
    # and the rows they are for: accepted by both
    assert to_scheduler._fast_done_row(list(DONE)) == DONE
    sent = msgpack.unpackb(msgpack.packb(["c", *to_worker._COMPUTE.encode(COMPUTE)]))
    assert to_worker._fast_compute(sent) == COMPUTE


def test_record_classes_have_exactly_one_codec_per_field():
    for cls in [*(type(m) for _, m in MESSAGES), *(type(r) for r in RECORDS)]:
        assert set(cls.FIELDS.codecs) == {f.name for f in dataclasses.fields(cls)}


def test_topic_events_round_trip_and_refuse_other_shapes():
    event = wire.TopicEvent(1700000000.5, {"step": [1, 2], "ok": True})
    assert wire.TopicEvent.decode(event.encode()) == event
    for bad in (wire.pack({"time": 1}), wire.pack([1.0]), wire.pack(["soon", 1]), b"\xc1"):
        with pytest.raises(wire.MalformedMessage):
            wire.TopicEvent.decode(bad)
