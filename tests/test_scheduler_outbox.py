"""What the scheduler's shell writes (pure tier: a recording pipeline, no Redis).

The outbox sends through the store's façades and the wire records; these tests pin that
the bytes are exactly those the scheduler wrote before (built here by hand, as the old
code built them), so that workers, clients and dashboards of any version read them; and
that the entry decoder turns stream entries into the events the state machine expects.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler.inbound import decode_entry
from rdist.scheduler.model import TS, Task, task_record
from rdist.scheduler.outbox import Outbox
from rdist.store.connection import RedisStore
from rdist.store.keys import PAYLOAD_FIELD, Keys

W1, W2, W3 = "tcp://10.0.0.1:1", "tcp://10.0.0.2:1", "tcp://10.0.0.3:1"
KEYS = Keys("outbox")


class RecordingPipe:
    """Every command queued on it, as ``(command, name, arguments...)``."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def hset(self, name: str, key: Any = None, value: Any = None, mapping: Any = None) -> None:
        self.commands.append(("hset", name, dict(mapping or {key: value})))

    def hdel(self, name: str, *keys: Any) -> None:
        self.commands.append(("hdel", name, list(keys)))

    def xadd(
        self,
        name: str,
        fields: Any,
        maxlen: Any = None,
        approximate: bool = True,
        nomkstream: bool = False,
    ) -> None:
        self.commands.append(("xadd", name, dict(fields), maxlen))


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def old_message(op: str, **fields: Any) -> dict[bytes, bytes]:
    """An entry as the scheduler encoded it before the wire records (fields, then op)."""
    fields["op"] = op
    return {PAYLOAD_FIELD: pack(fields)}


def written(instructions: list[ev.Instruction]) -> list[tuple[Any, ...]]:
    outbox = Outbox()
    outbox.add(instructions)
    pipe = RecordingPipe()
    outbox.write(pipe, RedisStore(None, KEYS, "unused://"))
    return pipe.commands


def test_the_outbox_writes_the_same_bytes_as_before():
    record = wire.TaskRecord(
        "memory", (0, 1, 2), ["d"], [W1], 8, True, ["c1"], type_name="int", loose=True
    )
    out = written(
        [
            ev.StoreSpec("x", b"spec-x"),
            ev.Compute(W1, "x", (0, 1, 2), {"d": wire.DepInfo([W2], 8, False)}, None, ["c1"]),
            ev.FreeKeys(W1, ["old"]),
            ev.StealRequest(W2, "s"),
            ev.Notify("c1", wire.KeyInMemory("x", 8, True, [W1], "int", b"\x01")),
            ev.Notify("c1", wire.KeyErred("y", "y", b"err", None, None)),
            ev.Notify("c2", wire.KeyCancelled("z")),
            ev.Notify("c2", wire.KeyLost("q")),
            ev.Notify("c2", wire.BarrierReached("b1")),
            ev.PersistTasks({"x": record}),
            ev.ForgetTask("gone"),
            ev.DropResult("small"),
            ev.LogEvent("worker-joined", {"worker": W1, "name": "n1"}),
            ev.RestartWorkers([W3], "c1"),
        ]
    )

    old_record = {
        "s": "memory",
        "p": (0, 1, 2),
        "d": ["d"],
        "wh": [W1],
        "nb": 8,
        "r": 1,
        "ww": ["c1"],
        "t": "int",
        "l": 1,
    }
    compute = ["c", "x", (0, 1, 2), {"d": [[W2], 8, False]}, None, b"spec-x", ["c1"]]
    memory = {"nbytes": 8, "redis": True, "who_has": [W1], "type": "int", "inline": b"\x01"}
    assert out == [
        ("hdel", KEYS.tasks, ["gone"]),
        ("hdel", KEYS.specs, ["gone"]),
        ("hdel", KEYS.results, ["gone"]),
        ("hdel", KEYS.results, ["small"]),
        ("hset", KEYS.specs, {"x": b"spec-x"}),
        ("hset", KEYS.tasks, {"x": pack(old_record)}),
        ("xadd", KEYS.worker_stream(W1), old_message("batch", a=[compute, ["f", ["old"]]]), None),
        ("xadd", KEYS.worker_stream(W2), old_message("batch", a=[["s", "s"]]), None),
        (
            "xadd",
            KEYS.client_stream("c1"),
            old_message(
                "notify",
                items=[["x", "memory", memory], ["y", "erred", {"blame": "y", "error": b"err"}]],
            ),
            None,
        ),
        (
            "xadd",
            KEYS.client_stream("c2"),
            old_message(
                "notify",
                items=[["z", "cancelled", {}], ["q", "lost", {}], ["", "barrier", {"id": "b1"}]],
            ),
            None,
        ),
        ("xadd", KEYS.worker_stream(W3), old_message("restart"), None),
        ("xadd", KEYS.client_stream("c1"), old_message("restarted"), None),
        ("xadd", KEYS.events, old_message("worker-joined", worker=W1, name="n1"), 10_000),
    ]


def test_a_restarted_worker_gets_only_the_restart_and_a_forgotten_result_one_delete():
    out = written(
        [
            ev.FreeKeys(W1, ["a"]),  # what releasing every task for the restart says
            ev.FreeKeys(W2, ["b"]),
            ev.DropResult("a"),
            ev.ForgetTask("a"),
            ev.RestartWorkers([W1], "c1"),
        ]
    )

    assert out == [
        ("hdel", KEYS.tasks, ["a"]),
        ("hdel", KEYS.specs, ["a"]),
        ("hdel", KEYS.results, ["a"]),
        ("xadd", KEYS.worker_stream(W2), old_message("batch", a=[["f", ["b"]]]), None),
        ("xadd", KEYS.worker_stream(W1), old_message("restart"), None),
        ("xadd", KEYS.client_stream("c1"), old_message("restarted"), None),
    ]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # a loop of one function: its last task forgotten, its next one submitted
        (["drop", "store"], []),
        (["store", "drop"], []),  # never reached Redis
        (["drop", "store", "drop"], [("hdel", KEYS.funcs, [b"h"])]),
        (["store", "drop", "store"], [("hset", KEYS.funcs, {b"h": b"pickled"})]),
        (["store"], [("hset", KEYS.funcs, {b"h": b"pickled"})]),
        (["drop"], [("hdel", KEYS.funcs, [b"h"])]),
    ],
)
def test_a_batch_writes_only_the_net_change_of_a_function(steps, expected):
    made = {"store": ev.StoreFunction(b"h", b"pickled"), "drop": ev.DropFunction(b"h")}

    assert written([made[step] for step in steps]) == expected


def test_a_task_record_keeps_the_bytes_the_scheduler_always_wrote():
    ts = Task("k", "k", TS.ERRED, dependencies={"b", "a"}, priority=(-1, 0, 3), retries=2)
    ts.blame, ts.error_text, ts.error_kind, ts.suspicious = None, "boom", "killed-worker", 3
    ts.restrictions, ts.resources = {"w2", "w1"}, {"GPU": 1.0}

    blob = task_record(ts).encode()

    assert blob == pack(
        {
            "s": "erred",
            "p": (-1, 0, 3),
            "d": ["a", "b"],
            "w": ["w1", "w2"],
            "rt": 2,
            "res": {"GPU": 1.0},
            "b": None,
            "et": "boom",
            "ek": "killed-worker",
            "k": 3,
        }
    )
    assert wire.TaskRecord.decode(blob) == task_record(ts)


def test_a_story_reply_goes_to_the_asking_client():
    rows = [wire.StoryRow("x", "waiting", "processing", "1-0", 2.5)]

    out = written([ev.SendStory("c9", "req-1", rows)])

    [(command, stream, fields, _)] = out
    assert (command, stream) == ("xadd", KEYS.client_stream("c9"))
    assert wire.CLIENT.decode_one(fields[PAYLOAD_FIELD]) == wire.StoryReply(
        "req-1", "scheduler", rows
    )


# -- entries in ------------------------------------------------------------------------------


def test_a_bundle_becomes_the_events_of_its_messages_with_numbered_stimuli():
    parts = [
        wire.ClientJoin("c1").encode(),
        wire.TaskDone(
            "tcp://w:1",
            done=[wire.DoneRow("x", 8, False, None, 0.5)],
            erred=[wire.ErredRow("y", b"err", 0.1)],
            stolen=[wire.StolenRow("z", True)],
        ).encode(),
    ]

    events = decode_entry(b"7-0", wire.bundle(parts), 3.0, "sched")

    assert [type(e) for e in events] == [
        ev.ClientJoined,
        ev.TasksFinished,
        ev.TaskErred,
        ev.StealResponse,
    ]
    assert [e.stimulus_id for e in events] == ["7-0.0", "7-0.1", "7-0.1", "7-0.1"]
    assert all(e.time == 3.0 for e in events)
    finished = events[1]
    assert isinstance(finished, ev.TasksFinished)
    assert finished.tasks == [ev.FinishedTask("x", 8, False, None, 0.5)]


def test_a_graph_entry_carries_its_rows_and_specs():
    msg = wire.UpdateGraph(
        "c1", [wire.TaskRow("x", ["d"], 2)], wanted=["x"], specs={"x": b"spec"}
    ).encode()

    [event] = decode_entry(b"1-0", msg, 0.0, "sched")

    assert isinstance(event, ev.GraphSubmitted)
    assert event.tasks == [ev.TaskSpecMeta("x", ["d"], 2)] and event.specs == {"x": b"spec"}
    assert event.stimulus_id == "1-0"


@pytest.mark.parametrize(
    "payload, field",
    [
        (b"\xc1not msgpack", ""),
        (pack({"op": "release-keys", "client": "c1", "keys": ["a", 3]}), "keys[1]"),
        (pack({"op": "no-such-op"}), "op"),
        (
            pack({"op": "task-done", "worker": "w", "done": [["x", -1, False, None, 0.1]]}),
            "done[0].nbytes",
        ),
    ],
)
def test_a_malformed_entry_is_refused_naming_the_field(payload, field):
    with pytest.raises(wire.MalformedMessage) as info:
        decode_entry(b"1-0", payload, 0.0, "rdist:{x}:sched")

    assert info.value.field == field and info.value.where == "rdist:{x}:sched"


# -- the hot messages' whole-message decoders agree with the field by field path -------------

_VALID = [
    {"op": "update-graph", "client": "c1", "tasks": [["x", ["d"], 2, None, False, 0, None]]},
    {"op": "update-graph", "client": "c1", "tasks": [], "wanted": ["x"], "faf": None},
    {"op": "update-graph", "client": "c", "wanted": [], "specs": {"x": b"s"}, "funcs": {}},
    {"op": "task-done", "worker": "tcp://w:1", "done": [["x", 8, True, b"v", 0.5, "int"]]},
    {"op": "task-done", "worker": "tcp://w:1", "done": [], "erred": [], "stolen": None},
    {"op": "task-done", "worker": "tcp://w:1", "erred": [["x", b"e", 0.1]]},
    {"op": "release-keys", "client": "c1", "keys": ["a", "b"]},
]
_ODD = ["", 0, 1, -1, 2.5, True, None, b"raw", "text", [], [1], ["ok", ""], {}, {"k": 1}, ()]


def _variants() -> list[dict[str, Any]]:
    """Every valid body, and each with one field replaced by an odd value (or dropped)."""
    out = []
    for body in _VALID:
        out.append(body)
        for field in [f for f in body if f != "op"] + ["wanted", "specs", "done", "seceded"]:
            out.append({k: v for k, v in body.items() if k != field})
            out.extend({**body, field: odd} for odd in _ODD)
    return out


def _slow(body: dict[str, Any]) -> Any:
    cls = wire.SCHEDULER.ops[body["op"]]
    fast, cls.FIELDS.fast = cls.FIELDS.fast, None
    try:
        return wire.SCHEDULER._one(body, "sched", "")
    except wire.MalformedMessage as exc:
        return ("refused", exc.field)
    finally:
        cls.FIELDS.fast = fast


@pytest.mark.parametrize("body", _variants(), ids=lambda b: b.get("op", "?"))
def test_a_hot_message_decodes_the_same_whole_or_field_by_field(body):
    assert wire.SCHEDULER.ops[body["op"]].FIELDS.fast is not None
    try:
        quick = wire.SCHEDULER._one(body, "sched", "")
    except wire.MalformedMessage as exc:
        quick = ("refused", exc.field)

    assert quick == _slow(body)
