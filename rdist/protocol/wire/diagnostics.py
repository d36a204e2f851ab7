"""Records of the diagnostics: the sampling profiler's batches (the ``profile`` stream).

A worker's profiler thread samples the call stacks of its executing threads every ~10 ms
and, about once a second while tasks run, appends one :class:`ProfileBatch`: per task
group the call tree of what it sampled since the last batch. Readers merge the batches of
a time window (``rdist.protocol.profile``); the trees are plain msgpack, so the dashboard
draws a flame graph without unpickling anything.

A tree node is the list ``[name, filename, line, count, children]``: the function's name,
its file, the first line of the function (``co_firstlineno``, so that samples taken at
different lines of one function share a node), how many samples passed through it, and
its callee nodes. A group's root is ``["", "", 0, samples, children]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rdist.protocol.wire.base import (
    COUNT,
    NAME,
    TIMESTAMP,
    Codec,
    DictOf,
    MalformedMessage,
    Record,
    fields,
)

#: A stored tree never goes deeper than this (the profiler cuts stacks to it, too).
MAX_DEPTH = 64
#: Nor holds more nodes per group and batch (the profiler folds the rest into its parent).
MAX_NODES = 5_000

Node = list[Any]  #: ``[name, filename, line, count, children]``


class ProfileTree(Codec):
    """A call tree as described in the module docstring, checked node by node (iteratively:
    a hostile, deeply nested payload must not exhaust the stack)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(plain=True)

    def decode(self, value: Any, field: str) -> Node:
        pending: list[tuple[Any, int, str]] = [(value, 0, field)]
        seen = 0
        while pending:
            node, depth, where = pending.pop()
            seen += 1
            if seen > MAX_NODES:
                raise MalformedMessage(f"more than {MAX_NODES} nodes", field)
            if depth > MAX_DEPTH:
                raise MalformedMessage(f"deeper than {MAX_DEPTH}", where)
            children = _checked_node(node, where)
            pending.extend((c, depth + 1, f"{where}.children[{i}]") for i, c in enumerate(children))
        node_value: Node = value
        return node_value


def _checked_node(node: Any, where: str) -> list[Any]:
    if type(node) is not list or len(node) != 5:
        raise MalformedMessage("a profile node is [name, filename, line, count, children]", where)
    name, filename, line, count, children = node
    if type(name) is not str or type(filename) is not str:
        raise MalformedMessage("name and filename must be strings", where)
    if type(line) is not int or type(count) is not int or line < 0 or count < 0:
        raise MalformedMessage("line and count must be counts", where)
    if type(children) is not list:
        raise MalformedMessage("children must be a list", where)
    return children


PROFILE_TREE = ProfileTree()


@dataclass(slots=True)
class ProfileBatch(Record):
    """One worker's samples over ``[start, stop]``: group -> call tree."""

    KIND = "profile batch"
    worker: str
    start: float  #: epoch seconds
    stop: float
    samples: int  #: stack samples taken in the window (over all groups)
    groups: dict[str, Node] = field(default_factory=dict)


fields(
    ProfileBatch,
    {"worker": "w", "start": "s", "stop": "e", "samples": "n", "groups": "g"},
    worker=NAME,
    start=TIMESTAMP,
    stop=TIMESTAMP,
    samples=COUNT,
    groups=DictOf(NAME, PROFILE_TREE),
)


@dataclass(frozen=True, slots=True)
class SpanTotals:
    """One span's totals as its ``span:<id>`` hash holds them (workers add to them)."""

    id: str
    names: list[str]  #: the tags of the span and of every span around it, outermost first
    count: int = 0  #: tasks run
    erred: int = 0
    duration: float = 0.0  #: seconds of compute
    nbytes: int = 0  #: bytes of results
    start: float = 0.0  #: when its first reported task ended (epoch seconds)
    stop: float = 0.0  #: when its last reported task ended

    @classmethod
    def from_fields(cls, ident: str, fields: Mapping[Any, Any]) -> SpanTotals:
        """From the hash's fields (bytes as Redis returns them); MalformedMessage when a
        field is missing or not a number."""
        where = f"span:{ident}"
        text = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in fields.items()}
        try:
            names = json.loads(text["name"])
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise ValueError("not a list of names")
            return cls(
                ident,
                names,
                int(text.get("count", 0)),
                int(text.get("erred", 0)),
                float(text.get("duration", 0.0)),
                int(text.get("nbytes", 0)),
                float(text.get("start", 0.0)),
                float(text.get("stop", 0.0)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise MalformedMessage(f"bad span totals: {exc!r}"[:200], where=where) from None


__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "PROFILE_TREE",
    "ProfileBatch",
    "ProfileTree",
    "SpanTotals",
]
