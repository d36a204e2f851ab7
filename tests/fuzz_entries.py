"""Generated and mutated stream entries and stored records for the fuzz suites
(``tests/test_fuzz.py`` on fakeredis, ``tests/test_fuzz_real.py`` on a real Redis; the
writing and counting is in ``tests/fuzz_runs.py``).

Every entry starts from a valid example of the wire classes (``tests/test_wire.py``),
encoded as it travels -- a stream entry is ``{b"m": <msgpack>}``, a hash field's value the
msgpack record -- and is then mutated: wrong types, missing and extra fields, huge
numbers, deep nesting, odd keys, random bytes, truncated or bit-flipped msgpack, bundles
with one bad member, entries without or with extra payload fields.

Hypothesis draws a *plan* per batch of :data:`BATCH` entries: a seed and a pool of odd
values (its ``values`` strategy: nested lists, tuples, dicts of unicode, bytes, huge and
odd numbers). A deterministic :class:`Mutator`, seeded per entry from the plan's seed and
the entry's index, builds the entries from the examples, the pool and its own draws. So
a failing batch is reproduced by its plan (hypothesis prints it), and a 300,000-entry run
costs tens of microseconds an entry instead of hypothesis's ten milliseconds.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgpack
from hypothesis import strategies as st

from rdist.protocol import wire
from tests.test_wire import MESSAGES, RECORDS

#: Entries tried in all, by default (``RDIST_FUZZ_ENTRIES`` for a longer run); they are
#: split evenly over the streams and the record kinds (``fuzz_runs.split``).
DEFAULT_ENTRIES = 10_000
ENTRIES = int(os.environ.get("RDIST_FUZZ_ENTRIES", str(DEFAULT_ENTRIES)))
#: The fuzz tests' pytest timeout: 180 s, and 20 ms an entry on top for a longer run.
TIMEOUT = 180 + ENTRIES // 50
#: Entries made from one hypothesis example (and written in one pipeline).
BATCH = 500
#: Odd values hypothesis draws per batch for the mutator to use.
POOL = 16

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
#: Characters for the mutator's own text: control, combining, right-to-left, zero-width,
#: astral, the last of the BMP (lone surrogates cannot be encoded, so none).
ODD_CHARS = "a\x00\x7f\u0301\u202e\u200b\ufeff\uffff🔥ü\n:{}*"
FLOATS = [0.5, -1e-308, 5e-324, 1e308, float("inf"), float("-inf"), float("nan"), -0.0]

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
RECORD_EXAMPLES["ClusterEvent"] = [
    msgpack.unpackb(
        wire.ClusterEvent("worker-joined", {"worker": "tcp://w:1", "name": "w1"}).encode(),
        raw=False,
    )
]

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
#: What hypothesis draws per batch: the mutator's seed and its pool of odd values.
PLAN = st.tuples(st.integers(0, 2**63 - 1), st.lists(values, min_size=POOL, max_size=POOL))


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


#: Nesting 64 ... 100,000 deep, as arrays and as maps (made once: up to 300 kB each).
DEEP = [Raw(_deep(d, kind)) for d in (64, 600, 5_000, 100_000) for kind in ("array", "map")]
#: Huge values: a 100,000-character string, a 5,000-element list.
BIG = [Raw(msgpack.packb("x" * 100_000)), Raw(msgpack.packb(list(range(5_000))))]
#: How a payload is made, weighted (a mutated example most often).
HOWS = ["mutated"] * 3 + ["bytes", "msgpack", "bundle", "trunc"]
TAILS = ["", "", "", "flip", "garbage"]
MUTATIONS = ["wrong", "inner", "drop", "extra", "odd-key", "huge"]
#: The shape of a stream entry's fields, weighted (the payload field alone most often).
SHAPES = ["m"] * 8 + ["missing", "extra", "empty"]


class Mutator:
    """Makes one entry, deterministically from ``(seed, index)``; ``made`` counts what it
    did (how the payload was made, each mutation, the entry's shape)."""

    __slots__ = ("made", "pool", "rng")

    def __init__(
        self, seed: int, index: int, pool: Sequence[Any], made: Counter[str] | None = None
    ) -> None:
        self.rng = random.Random(seed * 1_000_003 + index)
        self.pool = pool
        self.made = made if made is not None else Counter()

    # -- values --------------------------------------------------------------------------
    def atom(self) -> Any:
        rng = self.rng
        kind = rng.randrange(9)
        if kind == 0:
            return None
        if kind == 1:
            return rng.random() < 0.5
        if kind == 2:
            return rng.choice(HUGE)
        if kind == 3:
            return rng.randrange(-(2**63), 2**64)
        if kind == 4:
            return rng.choice(FLOATS) if rng.random() < 0.5 else rng.uniform(-1e9, 1e9)
        if kind == 5:
            return "".join(rng.choice(ODD_CHARS) for _ in range(rng.randrange(9)))
        if kind == 6:
            return rng.randbytes(rng.randrange(9))
        if kind == 7:
            return rng.choice(ODD_KEYS)
        return rng.choice(self.pool) if self.pool else None

    def value(self, depth: int = 0) -> Any:
        """A value of any type: an atom, or lists, tuples and dicts (odd keys) of them."""
        rng = self.rng
        if depth >= 3 or rng.random() >= 0.3:
            return self.atom()
        shape, n = rng.randrange(3), rng.randrange(4)
        if shape == 0:
            return [self.value(depth + 1) for _ in range(n)]
        if shape == 1:
            return (self.value(depth + 1), self.value(depth + 1))
        return {self.key(): self.value(depth + 1) for _ in range(n)}

    def key(self) -> Any:
        rng = self.rng
        if rng.random() < 0.5:
            return rng.choice(ODD_KEYS)
        return "".join(rng.choice(ODD_CHARS) for _ in range(rng.randrange(4)))

    def odd(self) -> Any:
        """What replaces a field's value: hypothesis's pool, the mutator's own values,
        nesting up to 100,000 deep, or a huge value."""
        r = self.rng.random()
        if r < 0.4 and self.pool:
            self.made["value:pool"] += 1
            return self.rng.choice(self.pool)
        if r < 0.8:
            self.made["value:random"] += 1
            return self.value()
        if r < 0.93:
            self.made["value:deep"] += 1
            return self.rng.choice(DEEP)
        self.made["value:huge"] += 1
        return self.rng.choice(BIG)

    def replaced(self, value: Any, depth: int = 0) -> Any:
        """``value`` with one piece somewhere inside it replaced by something odd."""
        rng = self.rng
        if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.5:
            key = rng.choice(sorted(value, key=repr))
            return {**value, key: self.replaced(value[key], depth + 1)}
        if isinstance(value, list) and value and depth < 4 and rng.random() < 0.5:
            i = rng.randrange(len(value))
            return [*value[:i], self.replaced(value[i], depth + 1), *value[i + 1 :]]
        return self.odd()

    # -- payloads ------------------------------------------------------------------------
    def mutated_map(self, body: dict[str, Any]) -> dict[Any, Any]:
        """An example's map after one to three mutations."""
        rng = self.rng
        body = dict(body)
        for _ in range(rng.randint(1, 3)):
            how = rng.choice(MUTATIONS)
            keys = sorted(body, key=repr)
            if how in ("wrong", "inner", "drop", "huge") and not keys:
                how = "extra"
            self.made[f"mutation:{how}"] += 1
            if how == "wrong":
                body[rng.choice(keys)] = self.odd()
            elif how == "inner":
                name = rng.choice(keys)
                body[name] = self.replaced(body[name])
            elif how == "drop":
                del body[rng.choice(keys)]
            elif how == "extra":
                body["".join(rng.choice(ODD_CHARS) for _ in range(rng.randrange(7)))] = self.value()
            elif how == "odd-key":
                body[rng.choice(ODD_KEYS)] = self.value()
            else:
                body[rng.choice(keys)] = rng.choice(HUGE)
        return body

    def payload(self, examples: list[dict[str, Any]]) -> bytes:
        """One encoded payload: a mutated example, random bytes, any msgpack, a bundle with
        one bad member, a truncated example; sometimes bit-flipped or with garbage after."""
        rng = self.rng
        how = rng.choice(HOWS)
        self.made[f"payload:{how}"] += 1
        if how == "bytes":
            return rng.randbytes(rng.randrange(65))
        if how == "msgpack":
            return _pack(self.value())
        example = rng.choice(examples)
        if how == "bundle":
            parts = [_pack(rng.choice(examples)) for _ in range(rng.randrange(4))]
            parts.insert(rng.randrange(len(parts) + 1), _pack(self.mutated_map(example)))
            return _pack({"op": wire.BUNDLE_OP, "msgs": parts})
        encoded = _pack(self.mutated_map(example) if how == "mutated" else example)
        if how == "trunc":
            return encoded[: rng.randrange(max(1, len(encoded)))]
        tail = rng.choice(TAILS)
        if tail == "flip" and encoded:
            self.made["tail:flip"] += 1
            i = rng.randrange(len(encoded))
            return encoded[:i] + bytes([encoded[i] ^ rng.randint(1, 255)]) + encoded[i + 1 :]
        if tail == "garbage":
            self.made["tail:garbage"] += 1
            return encoded + rng.randbytes(rng.randint(1, 8))
        return encoded

    def stream_entry(self, examples: list[dict[str, Any]]) -> dict[bytes, bytes]:
        """The fields of one stream entry: usually ``{m: payload}``, sometimes without the
        payload field, with extra fields, or an empty payload."""
        body = self.payload(examples)
        shape = self.rng.choice(SHAPES)
        self.made[f"entry:{shape}"] += 1
        if shape == "missing":
            return {b"x": body}
        if shape == "extra":
            return {b"m": body, self.rng.randbytes(self.rng.randint(1, 8)): b"\x00"}
        if shape == "empty":
            return {b"m": b""}
        return {b"m": body}


def stream_entries(
    channel: str, plan: tuple[int, list[Any]], size: int, made: Counter[str] | None = None
) -> list[dict[bytes, bytes]]:
    """The ``size`` entries of one batch's plan, for a stream read by ``channel``."""
    seed, pool = plan
    examples = EXAMPLES[channel]
    return [Mutator(seed, i, pool, made).stream_entry(examples) for i in range(size)]


def records(
    kind: str, plan: tuple[int, list[Any]], size: int, made: Counter[str] | None = None
) -> list[bytes]:
    """The ``size`` encoded records of one batch's plan, of the record class ``kind``."""
    seed, pool = plan
    examples = RECORD_EXAMPLES[kind]
    return [Mutator(seed, i, pool, made).payload(examples) for i in range(size)]


#: Entries written into one nanny's stream (``RDIST_FUZZ_NANNY_ENTRIES``; by default a
#: tenth of ENTRIES, at least 1,000).
NANNY_ENTRIES = int(os.environ.get("RDIST_FUZZ_NANNY_ENTRIES", str(max(1000, ENTRIES // 10))))
