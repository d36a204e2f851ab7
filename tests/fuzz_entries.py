"""Generated and mutated stream entries and stored records for the fuzz suites
(``tests/test_fuzz.py`` on fakeredis, ``tests/test_fuzz_real.py`` on a real Redis).

Every entry starts from a valid example of the wire classes (``tests/test_wire.py``),
encoded as it travels -- a stream entry is ``{b"m": <msgpack>}``, a hash field's value the
msgpack record -- and is then mutated: wrong types, missing and extra fields, huge
numbers, deep nesting, odd keys, random bytes, truncated msgpack, bundles with one bad
member, entries without or with extra payload fields. Entries that still decode into a
message that would be a legitimate *order* (a worker joining, a restart, a stop) are not
written: they are commands, not garbage, and would change the cluster under the test.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from hypothesis import strategies as st

from rdist.protocol import wire
from tests.test_wire import MESSAGES, RECORDS

#: Entries tried in all, by default (``RDIST_FUZZ_ENTRIES`` for a longer run).
DEFAULT_ENTRIES = 10_000
ENTRIES = int(os.environ.get("RDIST_FUZZ_ENTRIES", str(DEFAULT_ENTRIES)))
#: The fuzz tests' pytest timeout: CI's default size fits in pytest's 120 s only on a quiet
#: machine; a longer run (``RDIST_FUZZ_ENTRIES``) gets 20 ms an entry on top.
TIMEOUT = 180 + ENTRIES // 50
#: Entries written per hypothesis example (one pipeline each).
BATCH = 100

#: Decoded messages that are orders, not garbage: never written.
ORDERS = frozenset(
    {
        "worker-join",
        "worker-leave",
        "worker-lost",
        "worker-status",
        "restart",
        "stop",
        "retire",
        "retire-workers",
        "shutdown",
        "restart-worker",
        "restarted",
        "register-scheduler-plugin",
        "plugin-added",
        "run",
    }
)

HUGE = [2**62, -1, 2**64 - 1, -(2**63), 2**63, 10**18, float("inf"), float("nan"), -0.0, 1e308]
ODD_KEYS: list[Any] = [
    "",
    "k" * 10_000,
    "ключ-ü-🔥",
    "\x00",
    b"\xff\xfe",
    0,
    -1,
    2**63,
    1.5,
    True,
    None,
    (1, 2),
    ("nested", ("tuple",)),
]
EXAMPLES: dict[str, list[dict[str, Any]]] = {}
for _channel, _message in MESSAGES:
    EXAMPLES.setdefault(_channel.name, []).append(
        msgpack.unpackb(_message.encode(), raw=False, strict_map_key=False)
    )
RECORD_EXAMPLES: dict[str, list[dict[str, Any]]] = {}
for _record in RECORDS:
    RECORD_EXAMPLES.setdefault(type(_record).__name__, []).append(
        msgpack.unpackb(_record.encode(), raw=False, strict_map_key=False)
    )

atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(HUGE),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from(ODD_KEYS),
)
values = st.recursive(
    atoms,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.sampled_from(ODD_KEYS) | st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


def _deep(depth: int, kind: str) -> bytes:
    """msgpack nested ``depth`` deep (built as bytes: packb refuses to nest that far)."""
    if kind == "array":
        return b"\x91" * depth + b"\x01"
    return b"\x81\xa1k" * depth + b"\x01"


class Raw(bytes):
    """Already-encoded msgpack to splice in place of a value."""


def _pack(obj: Any) -> bytes:
    """msgpack of ``obj``, splicing :class:`Raw` pieces (deep nesting) in place."""
    if isinstance(obj, Raw):
        return bytes(obj)
    if isinstance(obj, dict):
        out = bytearray(_map_header(len(obj)))
        for k, v in obj.items():
            out += _pack(k) + _pack(v)
        return bytes(out)
    if isinstance(obj, (list, tuple)):
        out = bytearray(_array_header(len(obj)))
        for v in obj:
            out += _pack(v)
        return bytes(out)
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _map_header(n: int) -> bytes:
    return bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")


def _array_header(n: int) -> bytes:
    return bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")


#: Strategies made once (a strategy made per draw costs hypothesis more than the draw).
INDEX = st.integers(0, 2**16)
COIN = st.booleans()
MUTATIONS = st.sampled_from(["wrong", "inner", "drop", "extra", "odd-key", "huge"])
N_MUTATIONS = st.integers(1, 3)
HOW = st.sampled_from(["mutated", "mutated", "mutated", "bytes", "msgpack", "bundle", "trunc"])
TAILS = st.sampled_from(["", "", "", "flip", "garbage"])
HUGE_VALUES = st.sampled_from(HUGE)
ODD_KEY_VALUES = st.sampled_from(ODD_KEYS)
SHORT_TEXT = st.text(max_size=6)
BYTES = st.binary(max_size=64)
BYTE = st.integers(1, 255)
GARBAGE = st.binary(min_size=1, max_size=8)
SHAPES = st.sampled_from(["m"] * 8 + ["missing", "extra", "empty"])


def _pick(draw: Any, items: list[Any]) -> Any:
    return items[draw(INDEX) % len(items)]


@st.composite
def _replaced(draw: Any, value: Any, depth: int = 0) -> Any:
    """``value`` with one piece somewhere inside it replaced by something odd."""
    if isinstance(value, dict) and value and depth < 4 and draw(COIN):
        key = _pick(draw, sorted(value, key=repr))
        return {**value, key: draw(_replaced(value[key], depth + 1))}
    if isinstance(value, list) and value and depth < 4 and draw(COIN):
        i = draw(INDEX) % len(value)
        return [*value[:i], draw(_replaced(value[i], depth + 1)), *value[i + 1 :]]
    return draw(ODD_VALUES)


_DEPTHS = st.sampled_from([64, 600, 5_000, 100_000])
#: A value of any type, deeply nested msgpack or a huge one (the big ones pre-encoded).
ODD_VALUES = st.one_of(
    values,
    st.builds(lambda d: Raw(_deep(d, "array")), _DEPTHS),
    st.builds(lambda d: Raw(_deep(d, "map")), _DEPTHS),
    st.just(Raw(msgpack.packb("x" * 100_000))),
    st.just(Raw(msgpack.packb(list(range(5_000))))),
)


@st.composite
def mutated_map(draw: Any, body: dict[str, Any]) -> dict[Any, Any]:
    """An example's map after one to three mutations."""
    body = dict(body)
    for _ in range(draw(N_MUTATIONS)):
        how = draw(MUTATIONS)
        keys = sorted(body, key=repr)
        if how == "wrong" and keys:
            body[_pick(draw, keys)] = draw(ODD_VALUES)
        elif how == "inner" and keys:
            name = _pick(draw, keys)
            body[name] = draw(_replaced(body[name]))
        elif how == "drop" and keys:
            del body[_pick(draw, keys)]
        elif how == "extra":
            body[draw(SHORT_TEXT)] = draw(values)
        elif how == "odd-key":
            body[draw(ODD_KEY_VALUES)] = draw(values)
        elif keys:
            body[_pick(draw, keys)] = draw(HUGE_VALUES)
    return body


@st.composite
def payload(draw: Any, examples: list[dict[str, Any]]) -> bytes:
    """One encoded payload: a mutated example, random bytes, any msgpack, or a bundle."""
    how = draw(HOW)
    if how == "bytes":
        return bytes(draw(BYTES))
    if how == "msgpack":
        return _pack(draw(values))
    example = _pick(draw, examples)
    if how == "bundle":
        parts = [_pack(_pick(draw, examples)) for _ in range(draw(INDEX) % 4)]
        bad = _pack(draw(mutated_map(_pick(draw, examples))))
        parts.insert(draw(INDEX) % (len(parts) + 1), bad)
        return _pack({"op": wire.BUNDLE_OP, "msgs": parts})
    encoded = _pack(draw(mutated_map(example)) if how == "mutated" else example)
    if how == "trunc":
        return encoded[: draw(INDEX) % max(1, len(encoded))]
    tail = draw(TAILS)
    if tail == "flip" and encoded:
        i = draw(INDEX) % len(encoded)
        return encoded[:i] + bytes([encoded[i] ^ draw(BYTE)]) + encoded[i + 1 :]
    if tail == "garbage":
        return encoded + bytes(draw(GARBAGE))
    return encoded


@st.composite
def stream_entry(draw: Any, channel: str) -> dict[bytes, bytes]:
    """The fields of one stream entry: usually ``{m: payload}``, sometimes without the
    payload field, with extra fields, or an empty payload."""
    body = draw(payload(EXAMPLES[channel]))
    shape = draw(SHAPES)
    if shape == "missing":
        return {b"x": body}
    if shape == "extra":
        return {b"m": body, draw(GARBAGE): draw(GARBAGE)}
    if shape == "empty":
        return {b"m": b""}
    return {b"m": body}


def entries_batch(channel: str, size: int = BATCH) -> Any:
    return st.lists(stream_entry(channel), min_size=size, max_size=size)


def records_batch(kind: str, size: int = BATCH) -> Any:
    return st.lists(payload(RECORD_EXAMPLES[kind]), min_size=size, max_size=size)


def is_order(channel: wire.Channel, fields: dict[bytes, bytes]) -> bool:
    """Whether the entry decodes into messages one of which is an order (see ORDERS)."""
    try:
        messages = channel.decode(fields.get(b"m"))
    except wire.MalformedMessage:
        return False
    return any(m.OP in ORDERS for m in messages)


def is_valid_record(kind: str, blob: bytes) -> bool:
    cls = getattr(wire, kind)
    try:
        cls.decode(blob)
    except wire.MalformedMessage:
        return False
    return True


@dataclass
class Tally:
    """What the fuzz tried, by target."""

    tried: Counter[str] = field(default_factory=Counter)
    skipped_orders: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.tried.values())

    def report(self, title: str, **figures: Any) -> str:
        lines = [f"fuzz figures ({title}): {self.total} entries tried"]
        lines += [f"  {target}: {n}" for target, n in sorted(self.tried.items())]
        if self.skipped_orders:
            lines.append(f"  (valid orders not written: {dict(self.skipped_orders)})")
        lines += [f"  {name}: {value}" for name, value in figures.items()]
        return "\n".join(lines)


RECORD_EXAMPLES["ClusterEvent"] = [
    msgpack.unpackb(
        wire.ClusterEvent("worker-joined", {"worker": "tcp://w:1", "name": "w1"}).encode(),
        raw=False,
    )
]
#: Where each kind of record is stored: a hash (fields under fuzz names) or a stream.
RECORD_HOMES = {
    "TaskRecord": ("hash", "tasks"),
    "WorkerRecord": ("hash", "workers"),
    "ClientRecord": ("hash", "clients"),
    "NannyRecord": ("hash", "nannies"),
    "Heartbeat": ("stream", "heartbeats"),
    "TaskStreamBatch": ("stream", "taskstream"),
    "ProfileBatch": ("stream", "profile"),
    "ClusterEvent": ("stream", "events"),
}
#: Valid records that would be *claims* about the cluster (a phantom live worker), not
#: garbage: not written.
CLAIMS = frozenset({"WorkerRecord"})


def hypothesis_settings(examples: int) -> Callable[[Any], Any]:
    from hypothesis import HealthCheck, Phase, settings

    return settings(
        max_examples=max(1, examples),
        deadline=None,
        database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )


def fuzz_streams(
    redis: Any,
    targets: dict[str, tuple[str, wire.Channel]],
    share: dict[str, int],
    tally: Tally,
    check: Any,
) -> None:
    """Write ``share[target]`` generated entries into each target stream, a batch per
    hypothesis example (one pipeline), calling ``check()`` after every batch."""
    for target, (stream, channel) in targets.items():
        _until(
            lambda n, t=target, s=stream, c=channel: _stream_run(redis, t, s, c, n, tally, check),
            lambda t=target: share[t] - tally.tried[t],
        )


def fuzz_records(redis: Any, keys: Any, share: int, tally: Tally, check: Any) -> None:
    """Write ``share`` generated records of every kind where that kind is stored (hash
    fields under fuzz names beside the real ones, or entries of its stream)."""
    counter = iter(range(10**9))
    for kind, (shape, attr) in RECORD_HOMES.items():
        home, target = getattr(keys, attr), f"{attr} ({shape})"
        _until(
            lambda n, k=kind, s=shape, t=target, h=home: _record_run(
                redis, k, s, t, h, n, counter, tally, check
            ),
            lambda t=target: share - tally.tried[t],
        )


def _until(make_run: Any, remaining: Any, rounds: int = 10) -> None:
    """Run hypothesis tests until the share is written: examples hypothesis discards (too
    large for its buffer) and orders left out count towards ``max_examples`` but write
    nothing, so a further round tries what is missing."""
    for _ in range(rounds):
        left = remaining()
        if left <= 0:
            return
        make_run(left)()


def _stream_run(
    redis: Any, target: str, stream: str, channel: wire.Channel, n: int, tally: Tally, check: Any
) -> Any:
    from hypothesis import given

    @hypothesis_settings(-(-n // BATCH))
    @given(entries_batch(channel.name, min(n, BATCH)))
    def run(batch: list[dict[bytes, bytes]]) -> None:
        pipe = redis.pipeline(transaction=False)
        for fields in batch:
            if is_order(channel, fields):
                tally.skipped_orders[target] += 1
                continue
            pipe.xadd(stream, fields)
            tally.tried[target] += 1
        pipe.execute()
        check()

    return run


def _record_run(
    redis: Any,
    kind: str,
    shape: str,
    target: str,
    home: str,
    n: int,
    counter: Any,
    tally: Tally,
    check: Any,
) -> Any:
    from hypothesis import given

    @hypothesis_settings(-(-n // BATCH))
    @given(records_batch(kind, min(n, BATCH)))
    def run(batch: list[bytes]) -> None:
        pipe = redis.pipeline(transaction=False)
        for blob in batch:
            if kind in CLAIMS and is_valid_record(kind, blob):
                tally.skipped_orders[kind] += 1
                continue
            if shape == "hash":
                pipe.hset(home, f"fuzz-{kind}-{next(counter)}", blob)
            else:
                pipe.xadd(home, {b"m": blob}, maxlen=10_000, approximate=True)
            tally.tried[target] += 1
        pipe.execute()
        check()

    return run


#: Entries written into one nanny's stream (``RDIST_FUZZ_NANNY_ENTRIES``; by default a
#: tenth of ENTRIES, at least 1,000: ten hypothesis examples, the first ones simple).
NANNY_ENTRIES = int(os.environ.get("RDIST_FUZZ_NANNY_ENTRIES", str(max(1000, ENTRIES // 10))))
