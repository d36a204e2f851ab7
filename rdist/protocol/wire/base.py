"""The machinery of the wire records: codecs that check one field, and the record bases.

Every stream message and stored record of rdist is a class built from these parts:

- a :class:`Codec` checks one field's value as it is decoded (its type, its range, the
  shape of what it holds) and raises :class:`MalformedMessage` naming the field; it also
  turns the field back into its wire form when the record is encoded;
- a *row* is a positional record (a ``NamedTuple`` with a :class:`RowSpec`) travelling as a
  msgpack list, used where many go in one message (tasks of a graph, finished tasks);
- a :class:`Message` is a map with an ``op`` field, one kind of stream entry;
- a :class:`Record` is a map stored in a hash (no ``op``).

Decoding is the only place where input is trusted or refused: a reader that got a record
from here may use its attributes without checking them again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import msgpack

from rdist.protocol.packing import packb

#: Largest stream entry accepted: graphs travel in slices well below this.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
#: Longest task key, worker address or client id (dask keys of big graphs are long names).
MAX_NAME_CHARS = 1 << 16
#: Byte counts and counters: far beyond any real size, yet exact as floats and in msgpack.
MAX_COUNT = 1 << 53
#: Durations and timestamps (seconds; epoch seconds fit with room to spare).
MAX_SECONDS = 1e11
#: Priorities are short tuples of numbers, compared element by element in heaps.
MAX_PRIORITY_PARTS = 8
INT64 = 1 << 63


class MalformedMessage(ValueError):
    """A stream entry or stored record without the shape its reader needs.

    ``where`` names the stream or hash it came from, ``op`` the kind of message (if known),
    ``field`` the offending field (a path such as ``tasks[3].priority``) and ``problem``
    what was wrong with it.
    """

    def __init__(self, problem: str, field: str = "", where: str = "", op: str = "") -> None:
        self.problem = problem
        self.field = field
        self.where = where
        self.op = op
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [self.where or "record"]
        if self.op:
            parts.append(self.op)
        if self.field:
            parts.append(f"field {self.field!r}")
        return ": ".join([*parts, self.problem])

    def located(self, where: str) -> MalformedMessage:
        """The same error, said of ``where`` (a stream or hash) unless it already names one."""
        if self.where:
            return self
        return MalformedMessage(self.problem, self.field, where, self.op)


def _expect_map(value: Any, field: str) -> dict[Any, Any]:
    if type(value) is not dict:
        raise _refuse("a map", value, field)
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse(expected: str, value: Any, field: str) -> MalformedMessage:
    return MalformedMessage(
        f"expected {expected}, got {type(value).__name__} {_shown(value)}", field
    )


# -- codecs ----------------------------------------------------------------------------------


class Codec:
    """Checks one field on decode; gives its wire form on encode (the value itself here)."""

    __slots__ = ("plain",)

    def __init__(self, plain: bool = True) -> None:
        #: True when encode is the identity: records then skip calling it
        self.plain = plain

    def decode(self, value: Any, field: str) -> Any:
        raise NotImplementedError

    def encode(self, value: Any) -> Any:
        return value


class Text(Codec):
    """A string of at most ``max_chars`` characters (and at least one, unless ``empty``)."""

    __slots__ = ("max_chars", "empty")

    def __init__(self, max_chars: int = MAX_NAME_CHARS, empty: bool = True) -> None:
        super().__init__()
        self.max_chars = max_chars
        self.empty = empty

    def decode(self, value: Any, field: str) -> str:
        if type(value) is not str:
            raise _refuse("a string", value, field)
        if len(value) > self.max_chars:
            raise MalformedMessage(
                f"string of {len(value)} characters (at most {self.max_chars})", field
            )
        if not value and not self.empty:
            raise MalformedMessage("empty string", field)
        return value


class Integer(Codec):
    """An int (not a bool) within ``[low, high]``."""

    __slots__ = ("low", "high")

    def __init__(self, low: int = 0, high: int = MAX_COUNT) -> None:
        super().__init__()
        self.low = low
        self.high = high

    def decode(self, value: Any, field: str) -> int:
        if type(value) is not int:
            raise _refuse("an integer", value, field)
        if not self.low <= value <= self.high:
            raise MalformedMessage(f"{value} is outside [{self.low}, {self.high}]", field)
        return value


class Number(Codec):
    """A finite int or float within ``[low, high]``, decoded as a float."""

    __slots__ = ("low", "high")

    def __init__(self, low: float = 0.0, high: float = MAX_SECONDS) -> None:
        super().__init__()
        self.low = low
        self.high = high

    def decode(self, value: Any, field: str) -> float:
        kind = type(value)
        if kind is not float and kind is not int:
            raise _refuse("a number", value, field)
        number = float(value)
        if not (math.isfinite(number) and self.low <= number <= self.high):
            raise MalformedMessage(f"{value!r} is outside [{self.low}, {self.high}]", field)
        return number


class Boolean(Codec):
    """``True``/``False`` (0 and 1 are accepted: older writers sent ints)."""

    __slots__ = ()

    def decode(self, value: Any, field: str) -> bool:
        if type(value) is bool:
            return value
        if type(value) is int and value in (0, 1):
            return bool(value)
        raise _refuse("a boolean", value, field)


class Blob(Codec):
    """Opaque bytes (serialized user data, specs, pickled functions)."""

    __slots__ = ()

    def decode(self, value: Any, field: str) -> bytes:
        if type(value) is not bytes:
            raise _refuse("bytes", value, field)
        return value


class OneOf(Codec):
    """One of a few strings."""

    __slots__ = ("choices",)

    def __init__(self, *choices: str) -> None:
        super().__init__()
        self.choices = frozenset(choices)

    def decode(self, value: Any, field: str) -> str:
        if type(value) is not str or value not in self.choices:
            raise _refuse(f"one of {sorted(self.choices)}", value, field)
        return value


class Optional(Codec):
    """``None``, or what ``inner`` accepts."""

    __slots__ = ("inner",)

    def __init__(self, inner: Codec) -> None:
        super().__init__(inner.plain)
        self.inner = inner

    def decode(self, value: Any, field: str) -> Any:
        return None if value is None else self.inner.decode(value, field)

    def encode(self, value: Any) -> Any:
        return None if value is None else self.inner.encode(value)


class ListOf(Codec):
    """A list (or tuple) of what ``item`` accepts, decoded as a list."""

    __slots__ = ("item", "max_items")

    def __init__(self, item: Codec, max_items: int | None = None) -> None:
        super().__init__(item.plain)
        self.item = item
        self.max_items = max_items

    def decode(self, value: Any, field: str) -> list[Any]:
        if type(value) is not list and type(value) is not tuple:
            raise _refuse("a list", value, field)
        if self.max_items is not None and len(value) > self.max_items:
            raise MalformedMessage(f"{len(value)} items (at most {self.max_items})", field)
        item = self.item
        if type(item) is Text and _all_text(value, item):
            return list(value)  # (the common list of keys, checked without a call per key)
        try:  # the path of an item is spelled out only for the one that is refused
            return [item.decode(x, field) for x in value]
        except MalformedMessage:
            return [item.decode(x, f"{field}[{i}]") for i, x in enumerate(value)]

    def encode(self, value: Any) -> Any:
        if self.plain:
            return value
        item = self.item
        return [item.encode(x) for x in value]


def _all_text(values: Any, codec: Text) -> bool:
    most, empty = codec.max_chars, codec.empty
    for x in values:  # (a loop: no generator to make for the many short lists)
        if type(x) is not str or len(x) > most or not (empty or x):
            return False
    return True


def _all_bytes(values: Any) -> bool:
    for x in values:
        if type(x) is not bytes:
            return False
    return True


class DictOf(Codec):
    """A map of what ``key`` accepts to what ``value`` accepts."""

    __slots__ = ("key", "value")

    def __init__(self, key: Codec, value: Codec) -> None:
        super().__init__(key.plain and value.plain)
        self.key = key
        self.value = value

    def decode(self, value: Any, field: str) -> dict[Any, Any]:
        if type(value) is not dict:
            raise _refuse("a map", value, field)
        kc, vc = self.key, self.value
        if type(kc) is Text and type(vc) is Blob and _all_text(value, kc):
            if _all_bytes(value.values()):
                return value  # (the common map of keys to specs, checked without calls)
        try:  # the path of an entry is spelled out only for the one that is refused
            return {kc.decode(k, field): vc.decode(v, field) for k, v in value.items()}
        except MalformedMessage:
            return {
                kc.decode(k, f"{field}.<key>"): vc.decode(v, f"{field}[{k!r:.40}]")
                for k, v in value.items()
            }

    def encode(self, value: Any) -> Any:
        if self.plain:
            return value
        kc, vc = self.key, self.value
        return {kc.encode(k): vc.encode(v) for k, v in value.items()}


class Priority(Codec):
    """A short list of finite numbers (compared in heaps: a string among them would make
    the first comparison raise), decoded as a tuple."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(plain=False)

    def decode(self, value: Any, field: str) -> tuple[Any, ...]:
        if type(value) is not list and type(value) is not tuple:
            raise _refuse("a list of numbers", value, field)
        if len(value) > MAX_PRIORITY_PARTS:
            raise MalformedMessage(f"{len(value)} parts (at most {MAX_PRIORITY_PARTS})", field)
        for i, part in enumerate(value):
            kind = type(part)
            if kind is int:
                if not -INT64 <= part < INT64:
                    raise MalformedMessage(f"{part} is outside the 64-bit range", f"{field}[{i}]")
            elif kind is not float or not math.isfinite(part):
                raise _refuse("a finite number", part, f"{field}[{i}]")
        return tuple(value)

    def encode(self, value: Any) -> Any:
        return list(value)


class Any_(Codec):
    """Anything msgpack delivers (for free-form informational maps only)."""

    __slots__ = ()

    def decode(self, value: Any, field: str) -> Any:
        return value


class Nested(Codec):
    """A :class:`Record` inside another record."""

    __slots__ = ("cls",)

    def __init__(self, cls: type[Record]) -> None:
        super().__init__(plain=False)
        self.cls = cls

    def decode(self, value: Any, field: str) -> Any:
        try:
            return self.cls.FIELDS.decode(self.cls, _expect_map(value, field), "")
        except MalformedMessage as exc:
            raise MalformedMessage(
                exc.problem, f"{field}.{exc.field}" if exc.field else field
            ) from None

    def encode(self, value: Any) -> Any:
        return value.to_wire()


# Shared instances: the codecs hold no state beyond their settings.
NAME = Text(empty=False)  #: a key, a worker address, a client id
TEXT = Text(max_chars=1 << 20)
COUNT = Integer()
SECONDS = Number()
TIMESTAMP = Number()
BOOL = Boolean()
BLOB = Blob()
NAMES = ListOf(NAME)
PRIORITY = Priority()
#: resources declared by a worker or needed by a task: non-negative amounts
RESOURCES = DictOf(NAME, Number(0.0, 1e15))
ANY = Any_()


# -- records ---------------------------------------------------------------------------------


class RowSpec(Codec):
    """How one kind of row is checked: a codec per position; trailing ones may be left out
    (their defaults apply). Decodes one row into its ``NamedTuple`` class."""

    __slots__ = ("cls", "codecs", "required", "names", "_encoders")

    def __init__(self, cls: type[Any], codecs: tuple[Codec, ...]) -> None:
        fields: tuple[str, ...] = cls._fields
        if len(fields) != len(codecs):
            raise TypeError(f"{cls.__name__}: {len(fields)} fields but {len(codecs)} codecs")
        super().__init__(all(c.plain for c in codecs))
        self.cls = cls
        self.codecs = codecs
        self.names = fields
        self.required = len(fields) - len(cls._field_defaults)
        self._encoders = [None if c.plain else c.encode for c in codecs]  #: (see Fields)

    def decode(self, value: Any, field: str) -> Any:
        if type(value) is not list and type(value) is not tuple:
            raise _refuse(f"a {self.cls.__name__} row (a list)", value, field)
        if not self.required <= len(value) <= len(self.codecs):
            raise MalformedMessage(
                f"a {self.cls.__name__} row has {self.required}..{len(self.codecs)} items, "
                f"got {len(value)}",
                field,
            )
        names = self.names
        return self.cls(
            *[
                c.decode(v, f"{field}.{names[i]}")
                for i, (c, v) in enumerate(zip(self.codecs, value))
            ]
        )

    def encode(self, value: Any) -> list[Any]:
        if self.plain:
            return list(value)
        return [v if e is None else e(v) for e, v in zip(self._encoders, value)]


class Rows(Codec):
    """A list of rows of one kind; ``fast`` (optional) decodes one row without building
    error paths, returning None when it cannot vouch for it (the slow path then says why)."""

    __slots__ = ("spec", "fast")

    def __init__(self, spec: RowSpec, fast: Callable[[Any], Any] | None = None) -> None:
        super().__init__(plain=False)
        self.spec = spec
        self.fast = fast

    def decode(self, value: Any, field: str) -> list[Any]:
        if type(value) is not list and type(value) is not tuple:
            raise _refuse("a list of rows", value, field)
        spec, fast = self.spec, self.fast
        out = []
        for i, row in enumerate(value):
            decoded = fast(row) if fast is not None else None
            out.append(decoded if decoded is not None else spec.decode(row, f"{field}[{i}]"))
        return out

    def encode(self, value: Any) -> Any:
        spec = self.spec
        if spec.plain:  # msgpack packs the rows (tuples) as arrays as they are
            return value
        return [spec.encode(r) for r in value]


class Fields:
    """The codecs of a map-shaped record, checked against its dataclass fields once, at
    import: a field without a codec (or a codec without a field) is a bug in this package."""

    __slots__ = (
        "codecs",
        "required",
        "defaults",
        "wire_names",
        "plain",
        "sparse",
        "fast",
        "_plan",
        "_encoders",
    )

    def __init__(
        self,
        cls: type[Any],
        codecs: Mapping[str, Codec],
        wire_names: Mapping[str, str],
        sparse: bool = False,
    ) -> None:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if set(fields) != set(codecs):
            raise TypeError(f"{cls.__name__}: fields {sorted(fields)} but codecs {sorted(codecs)}")
        self.codecs = dict(codecs)
        self.wire_names = {name: wire_names.get(name, name) for name in fields}
        self.required = [n for n, f in fields.items() if _no_default(f)]
        self.defaults: dict[str, Callable[[], Any]] = {}
        for name, f in fields.items():
            if f.default is not dataclasses.MISSING:
                self.defaults[name] = lambda v=f.default: v  # type: ignore[misc]
            elif f.default_factory is not dataclasses.MISSING:
                self.defaults[name] = f.default_factory
        self.plain = all(c.plain for c in codecs.values())
        #: per field: (name, wire name, its codec's encode, or None where the value goes
        #: as it is -- no call for the plain fields of a record that has others)
        self._encoders = [
            (name, self.wire_names[name], None if codec.plain else codec.encode)
            for name, codec in self.codecs.items()
        ]
        #: leave out fields holding their (empty) default: records of a million tasks add up
        self.sparse = sparse
        if sparse and any(make() for make in self.defaults.values()):
            raise TypeError(f"{cls.__name__}: a sparse record needs empty defaults")
        #: decodes the common shape of the message without error bookkeeping, or returns
        #: None when it cannot vouch for it (the field by field path then says why); set
        #: by the module defining the record, for the messages of the hot paths
        self.fast: Callable[[Mapping[Any, Any]], Any] | None = None
        #: per field: (name, wire name, codec, default maker or None, None means "not given")
        self._plan = [
            (
                name,
                self.wire_names[name],
                codec,
                self.defaults.get(name),
                name in self.defaults and not isinstance(codec, Optional),
            )
            for name, codec in self.codecs.items()
        ]

    def decode(self, cls: type[Any], msg: Mapping[Any, Any], where: str) -> Any:
        if self.fast is not None:
            quick = self.fast(msg)
            if quick is not None:
                return quick
        values: dict[str, Any] = {}
        get = msg.get
        for name, wire, codec, default, none_is_default in self._plan:
            raw = get(wire, _ABSENT)
            if raw is _ABSENT or (raw is None and none_is_default):
                # a field sent as None means "not given" wherever it has a default
                if default is None:
                    raise MalformedMessage("missing", wire, where)
                values[name] = default()
            else:
                values[name] = codec.decode(raw, wire)
        return cls(**values)

    def encode(self, record: Any) -> dict[str, Any]:
        names = self.wire_names
        if self.sparse:
            out = {}
            for name, codec in self.codecs.items():
                value = getattr(record, name)
                if value or name not in self.defaults:
                    out[names[name]] = value if codec.plain else codec.encode(value)
            return out
        if self.plain:
            return {names[n]: getattr(record, n) for n in self.codecs}
        out = {}
        for name, wire, encode in self._encoders:
            value = getattr(record, name)
            out[wire] = value if encode is None else encode(value)
        return out


_ABSENT = object()  #: a field the message does not have


def _no_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def pack(obj: Any) -> bytes:
    return packb(obj)  # (not msgpack.packb: see rdist.protocol.packing)


def unpack(payload: Any, where: str) -> Any:
    """msgpack -> Python, any failure a :class:`MalformedMessage` (never another error:
    a corrupt, truncated, oversized or absurdly nested payload is just bad input)."""
    if payload is None:
        raise MalformedMessage("entry has no payload", where=where)
    if type(payload) is not bytes:
        raise MalformedMessage(f"payload is {type(payload).__name__}, not bytes", where=where)
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(
            f"payload of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}", where=where
        )
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several kinds (ExtraData, ValueError, StackError...)
        raise MalformedMessage(
            f"not msgpack: {type(exc).__name__}: {exc}"[:300], where=where
        ) from None


class Record:
    """A map stored in a hash or carried without an ``op`` (heartbeats, the task stream).

    Subclasses are slotted dataclasses with a ``FIELDS`` table made by :func:`fields`."""

    __slots__ = ()
    FIELDS: ClassVar[Fields]
    #: what the record is called in errors when its reader gives no better name
    KIND: ClassVar[str] = "record"

    def to_wire(self) -> dict[str, Any]:
        return self.FIELDS.encode(self)

    def encode(self) -> bytes:
        return pack(self.to_wire())

    @classmethod
    def from_wire(cls: type[T], value: Any, where: str = "") -> T:
        if type(value) is not dict:
            raise _refuse(f"a {cls.KIND} map", value, "").located(where or cls.KIND)
        try:
            result: T = cls.FIELDS.decode(cls, value, where or cls.KIND)
            return result
        except MalformedMessage as exc:
            raise exc.located(where or cls.KIND) from None

    @classmethod
    def decode(cls: type[T], payload: Any, where: str = "") -> T:
        return cls.from_wire(unpack(payload, where or cls.KIND), where)


T = TypeVar("T", bound=Record)


class Message(Record):
    """One kind of stream entry: a map whose ``op`` names the class."""

    __slots__ = ()
    OP: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        out = self.FIELDS.encode(self)
        out["op"] = self.OP
        return out


def fields(
    cls: type[Any],
    wire_names: Mapping[str, str] | None = None,
    sparse: bool = False,
    **codecs: Codec,
) -> Fields:
    """The ``FIELDS`` table of a record class (call it right after the class body);
    ``wire_names`` renames fields on the wire, ``sparse`` leaves empty fields out."""
    table = Fields(cls, codecs, wire_names or {}, sparse)
    cls.FIELDS = table
    return table


def row_spec(cls: type[Any], *codecs: Codec) -> RowSpec:
    return RowSpec(cls, codecs)


class Channel:
    """The messages one kind of stream carries, by op; decodes entries (and bundles)."""

    def __init__(self, name: str, *classes: type[Message]) -> None:
        self.name = name
        self.ops: dict[str, type[Message]] = {}
        for cls in classes:
            if cls.OP in self.ops:
                raise TypeError(f"{name}: op {cls.OP!r} twice")
            self.ops[cls.OP] = cls

    def __contains__(self, op: str) -> bool:
        return op in self.ops

    def decode(self, payload: Any, stream: str = "") -> list[Message]:
        """The messages of one entry (several when it is a bundle), or MalformedMessage for
        the entry as a whole: one bad message in a bundle sets the whole entry aside."""
        where = stream or self.name
        body = unpack(payload, where)
        if type(body) is dict and body.get("op") == BUNDLE_OP:
            parts = body.get("msgs")
            if type(parts) is not list or not all(type(p) is bytes for p in parts):
                raise MalformedMessage("a bundle carries a list of encoded messages", "msgs", where)
            return [self._one(unpack(p, where), where, f"msgs[{i}].") for i, p in enumerate(parts)]
        return [self._one(body, where, "")]

    def decode_one(self, payload: Any, stream: str = "") -> Message:
        messages = self.decode(payload, stream)
        if len(messages) != 1:
            raise MalformedMessage(
                "a bundle where one message was expected", where=stream or self.name
            )
        return messages[0]

    def _one(self, body: Any, where: str, prefix: str) -> Message:
        if type(body) is not dict:
            raise MalformedMessage(
                f"expected a map, got {type(body).__name__}", prefix.rstrip("."), where
            )
        op = body.get("op")
        cls = self.ops.get(op) if isinstance(op, str) else None
        if cls is None or not isinstance(op, str):
            raise MalformedMessage(f"unknown op {_shown(op)} on this stream", prefix + "op", where)
        try:
            message: Message = cls.FIELDS.decode(cls, body, where)
            return message
        except MalformedMessage as exc:
            field = prefix + exc.field if exc.field else prefix.rstrip(".")
            raise MalformedMessage(exc.problem, field, where, op) from None


#: One stream entry carrying several messages, in order. Redis serves a blocked reader
#: after the first command of a pipeline, so separate entries sent together reach it in
#: separate reads -- each a batch of its own and its own round of wake-ups downstream.
BUNDLE_OP = "bundle"


def bundle(encoded: list[bytes]) -> bytes:
    """One entry for several encoded messages (never nested)."""
    return pack({"op": BUNDLE_OP, "msgs": encoded})
