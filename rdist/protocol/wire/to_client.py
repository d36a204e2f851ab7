"""Messages on a client's stream (``client:<id>``): what became of the keys it wants.

The scheduler (and, for keys it runs, the worker itself) sends ``notify`` with one item per
key; on the wire an item is ``[key, status, info]``, decoded here into one class per status.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

from rdist.protocol.wire.amm import AmmReply
from rdist.protocol.wire.base import (
    BLOB,
    BOOL,
    COUNT,
    NAME,
    NAMES,
    TEXT,
    TIMESTAMP,
    Channel,
    Codec,
    MalformedMessage,
    Message,
    Optional,
    Rows,
    Text,
    fields,
    row_spec,
)
from rdist.protocol.wire.extension import ActorAnswer, PluginReply
from rdist.protocol.wire.to_worker import DATA_REPLIES

KILLED_WORKER = "killed-worker"  #: ``KeyErred.kind`` of a task that killed too many workers


class KeyInMemory(NamedTuple):
    """The key's result is stored: inline here, in Redis, or on the workers ``who_has``."""

    key: str
    nbytes: int
    in_redis: bool
    who_has: list[str]
    type_name: str = ""
    inline: bytes | None = None


class KeyErred(NamedTuple):
    """The key failed: with the worker's serialized ``error`` or the scheduler's ``error_text``."""

    key: str
    blame: str | None = None  #: the key whose failure this is (itself, or a dependency)
    error: bytes | None = None
    error_text: str | None = None
    kind: str | None = None  #: :data:`KILLED_WORKER`, or None for an ordinary exception


class KeyCancelled(NamedTuple):
    key: str


class KeyLost(NamedTuple):
    """The only copy died with its worker: the key is pending again (being recomputed)."""

    key: str


class BarrierReached(NamedTuple):
    """The answer to a ``barrier`` request ``id``: everything sent before it is handled."""

    id: str


Item = KeyInMemory | KeyErred | KeyCancelled | KeyLost | BarrierReached

_OPTIONAL_TEXT = Optional(TEXT)
_KIND = Optional(Text(64))


def _info(value: Any, field: str) -> dict[Any, Any]:
    if type(value) is not dict:
        raise MalformedMessage(f"expected an info map, got {type(value).__name__}", field)
    return value


def _memory(key: str, info: dict[Any, Any], field: str) -> KeyInMemory:
    return KeyInMemory(
        key,
        COUNT.decode(info.get("nbytes", 0), f"{field}.nbytes"),
        BOOL.decode(info.get("redis", False), f"{field}.redis"),
        NAMES.decode(info.get("who_has", []), f"{field}.who_has"),
        TEXT.decode(info.get("type", ""), f"{field}.type"),
        Optional(BLOB).decode(info.get("inline"), f"{field}.inline"),
    )


def _erred(key: str, info: dict[Any, Any], field: str) -> KeyErred:
    return KeyErred(
        key,
        Optional(NAME).decode(info.get("blame"), f"{field}.blame"),
        Optional(BLOB).decode(info.get("error"), f"{field}.error"),
        _OPTIONAL_TEXT.decode(info.get("error_text"), f"{field}.error_text"),
        _KIND.decode(info.get("kind"), f"{field}.kind"),
    )


#: ``KeyInMemory.who_has`` lists, shared by every item naming the same holders (a client
#: holding a million results keeps a handful of lists, not a million): never changed in
#: place by any reader. Forgotten past SHARED_HOLDERS distinct ones.
_HOLDERS: dict[Any, list[str]] = {}
SHARED_HOLDERS = 4096


def _checked_holders(who_has: list[Any]) -> list[str] | None:
    """The shared list equal to ``who_has``, or None unless it holds only non-empty str."""
    if len(who_has) == 1:
        token: Any = who_has[0]
        if type(token) is not str:
            return None
    elif all(type(w) is str for w in who_has):
        token = tuple(who_has)
    else:
        return None
    shared = _HOLDERS.get(token)
    if shared is None:
        if not all(who_has):
            return None
        if len(_HOLDERS) >= SHARED_HOLDERS:
            _HOLDERS.clear()
        shared = _HOLDERS[token] = [sys.intern(w) for w in who_has]
    return shared


def _fast_memory(row: Any) -> KeyInMemory | None:
    if type(row) is list and len(row) == 3 and row[1] == "memory":
        key, _, info = row
        if type(key) is str and key and type(info) is dict:
            nbytes, redis, who_has = (
                info.get("nbytes", 0),
                info.get("redis", False),
                info.get("who_has", []),
            )
            inline, type_name = info.get("inline"), info.get("type", "")
            if (
                type(nbytes) is int
                and 0 <= nbytes <= 1 << 53
                and type(redis) is bool
                and type(who_has) is list
                and (inline is None or type(inline) is bytes)
                and type(type_name) is str
            ):
                holders = _checked_holders(who_has)
                if holders is not None:
                    return KeyInMemory(key, nbytes, redis, holders, sys.intern(type_name), inline)
    return None


class Items(Codec):
    """Notification items ``[key, status, info]``, one class per status."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(plain=False)

    def decode(self, value: Any, field: str) -> list[Item]:
        if type(value) is not list:
            raise MalformedMessage(f"expected a list of items, got {type(value).__name__}", field)
        return [_fast_memory(row) or self._one(row, f"{field}[{i}]") for i, row in enumerate(value)]

    def _one(self, row: Any, field: str) -> Item:
        if type(row) is not list or len(row) != 3:
            raise MalformedMessage("an item is [key, status, info]", field)
        key, status, info = row
        if status == "barrier":
            return BarrierReached(NAME.decode(_info(info, field).get("id"), f"{field}.id"))
        key = NAME.decode(key, f"{field}.key")
        if status == "memory":
            return _memory(key, _info(info, field), field)
        if status == "erred":
            return _erred(key, _info(info, field), field)
        if status == "cancelled":
            return KeyCancelled(key)
        if status == "lost":
            return KeyLost(key)
        raise MalformedMessage(f"unknown status {status!r:.40}", f"{field}.status")

    def encode(self, value: Any) -> Any:
        return [encode_item(item) for item in value]


def encode_item(item: Item) -> list[Any]:
    """``[key, status, info]`` of one notification item."""
    if isinstance(item, KeyInMemory):
        info: dict[str, Any] = {
            "nbytes": item.nbytes,
            "redis": item.in_redis,
            "who_has": item.who_has,
            "type": item.type_name,
        }
        if item.inline is not None:
            info["inline"] = item.inline
        return [item.key, "memory", info]
    if isinstance(item, KeyErred):
        info = {"blame": item.blame}
        if item.error is not None:
            info["error"] = item.error
        if item.error_text is not None:
            info["error_text"] = item.error_text
        if item.kind is not None:
            info["kind"] = item.kind
        return [item.key, "erred", info]
    if isinstance(item, KeyCancelled):
        return [item.key, "cancelled", {}]
    if isinstance(item, KeyLost):
        return [item.key, "lost", {}]
    return ["", "barrier", {"id": item.id}]


@dataclass(slots=True)
class Notify(Message):
    OP = "notify"
    items: list[Item]

    def to_wire(self) -> dict[str, Any]:
        """(What the generic encoding gives, without its bookkeeping: the hot path.)"""
        return {"items": [encode_item(item) for item in self.items], "op": "notify"}


fields(Notify, items=Items())


@dataclass(slots=True)
class RunResult(Message):
    """One worker's answer to ``client.run``: the pickled value, or (exception, traceback)."""

    OP = "run-result"
    id: str
    worker: str
    ok: bool
    value: bytes


fields(RunResult, id=NAME, worker=NAME, ok=BOOL, value=BLOB)


@dataclass(slots=True)
class Restarted(Message):
    """The scheduler reset the cluster (``client.restart()``)."""

    OP = "restarted"


fields(Restarted)


class StoryRow(NamedTuple):
    """One transition of one key, as the scheduler or a worker recorded it."""

    key: str
    start: str  #: the state before (for a worker: also e.g. "compute" for an event)
    finish: str
    stimulus_id: str  #: what caused it: a stream entry id, or a named internal cause
    time: float  #: epoch seconds


STORY_ROW = row_spec(StoryRow, NAME, TEXT, TEXT, TEXT, TIMESTAMP)


@dataclass(slots=True)
class StoryReply(Message):
    """The answer to a ``story`` request from one ``source`` (``scheduler`` or a worker)."""

    OP = "story-reply"
    id: str
    source: str
    records: list[StoryRow]


fields(StoryReply, id=NAME, source=NAME, records=Rows(STORY_ROW))

#: Everything a client's stream may carry.
CLIENT = Channel(
    "client",
    Notify,
    RunResult,
    Restarted,
    StoryReply,
    *DATA_REPLIES,
    PluginReply,
    ActorAnswer,
    AmmReply,
)

__all__ = [
    "CLIENT",
    "KILLED_WORKER",
    "BarrierReached",
    "Item",
    "KeyCancelled",
    "KeyErred",
    "KeyInMemory",
    "KeyLost",
    "Notify",
    "Restarted",
    "RunResult",
    "StoryReply",
    "StoryRow",
    "encode_item",
]
