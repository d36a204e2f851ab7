"""Large arguments never travel through the streams: rdist scatters them for the user.

dask warns "Large object of size ... detected in task graph" and advises ``scatter``. rdist
does it instead: an argument of ``submit``/``map`` (or a literal in a graph node) whose
serialized size passes :data:`INLINE_BYTES` is put on a worker like ``client.scatter``
puts data -- through the data plane, or through Redis in chunks where peers cannot be
reached -- and the task's spec carries a reference to it (a dependency, so the task runs
where the data already is). The scattered data is kept while the task's future is.

Bounds on what goes through Redis streams and hashes (a stream entry the client sends is
checked against ``rdist.client.sender.MAX_ENTRY_BYTES``):

- a task's spec after that: at most :data:`MAX_SPEC_BYTES` (what cannot be scattered --
  a big object inside an opaque dask task node -- is refused, naming the key);
- a function (pickled by value with what its closure captures): at most
  :data:`MAX_FUNCTION_BYTES`; pass big data as an argument instead.

Only the decisions are here (what is large, its key, its replacement); the client places
the values.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from rdist.protocol import serialize
from rdist.protocol.spec import DepRef

#: An argument or graph literal serialized larger than this is scattered, not inlined.
INLINE_BYTES = 1 << 20
#: A task spec (after scattering) may not be larger than this.
MAX_SPEC_BYTES = 16 << 20
#: A pickled function may not be larger than this.
MAX_FUNCTION_BYTES = 16 << 20

_CONTAINERS = (list, tuple, set, frozenset, dict)


class Large(NamedTuple):
    """A value to scatter under ``name`` (already serialized) before its task is sent."""

    name: str
    frames: list[Any]
    nbytes: int


def token(frames: list[Any]) -> str:
    """A content hash of serialized data, without joining its frames."""
    digest = hashlib.blake2b(digest_size=16)
    for frame in frames:
        digest.update(memoryview(frame).cast("B"))
    return digest.hexdigest()


def data_key(value: Any, frames: list[Any], pure: bool) -> str:
    """The key scattered data gets: by content (the same data twice is one key), or fresh."""
    return f"{type(value).__name__}-{token(frames) if pure else uuid.uuid4().hex}"


def describe(nbytes: int) -> str:
    """``"104.9 MB"``: sizes in messages."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} B"


def is_task(obj: Any) -> bool:
    """A dask tuple task ``(callable, *args)``: evaluated, so never data to scatter."""
    return type(obj) is tuple and bool(obj) and callable(obj[0])


def externalize(obj: Any, pure: bool, in_graph: bool) -> tuple[Any, list[Large]]:
    """``obj`` with each large part replaced by a :class:`DepRef` to data to scatter.

    A part is a value that holds no dependency reference (nor, in a graph, a task to
    evaluate): a container of plain values is scattered whole, one holding references is
    looked into. The frame is always looked into: ``(args, kwargs)`` of a call and each
    of the two (every argument is a part of its own), or a graph node."""
    found: list[Large] = []
    return _swap(obj, found, pure, in_graph, open_levels=1 if in_graph else 2), found


def _swap(obj: Any, found: list[Large], pure: bool, in_graph: bool, open_levels: int = 0) -> Any:
    kind = type(obj)
    if kind is DepRef:
        return obj
    if in_graph and is_task(obj):
        return (obj[0], *(_swap(a, found, pure, in_graph) for a in obj[1:]))
    if kind in _CONTAINERS and (open_levels > 0 or _holds_references(obj, in_graph)):
        inner = max(0, open_levels - 1)
        if kind is dict:
            return {k: _swap(v, found, pure, in_graph, inner) for k, v in obj.items()}
        return kind(_swap(x, found, pure, in_graph, inner) for x in obj)
    try:
        frames = serialize.dumps(obj)
    except serialize.SerializationError:
        return obj  # the caller serializes it again and reports the error
    nbytes = serialize.frames_size(frames)
    if nbytes <= INLINE_BYTES:
        return obj
    name = data_key(obj, frames, pure)
    found.append(Large(name, frames, nbytes))
    return DepRef(name)


def _holds_references(obj: Any, in_graph: bool) -> bool:
    stack = [obj]
    while stack:
        x = stack.pop()
        kind = type(x)
        if kind is DepRef or (in_graph and is_task(x)):
            return True
        if kind is dict:
            stack.extend(x.values())
        elif kind in _CONTAINERS:
            stack.extend(x)
    return False


def pack(
    payload: Any,
    pure: bool,
    in_graph: bool = False,
    hook: Callable[[Any], Any] | None = None,
) -> tuple[Any, list[Any], list[Large]]:
    """Serialize ``payload``, scattering its large parts first when it is large: the payload
    sent, its frames and the values to scatter. Raises SerializationError as dumps does."""
    frames = serialize.dumps(payload, hook)
    if serialize.frames_size(frames) <= INLINE_BYTES:
        return payload, frames, []
    payload, found = externalize(payload, pure, in_graph)
    if found:
        frames = serialize.dumps(payload, hook)
    return payload, frames, found


def check_spec(what: str, frames: list[Any]) -> None:
    """Refuse a spec past :data:`MAX_SPEC_BYTES`, naming ``what`` and the fix."""
    nbytes = serialize.frames_size(frames)
    if nbytes > MAX_SPEC_BYTES:
        raise ValueError(
            f"{what} serializes to {describe(nbytes)}, more than a task may carry "
            f"({describe(MAX_SPEC_BYTES)}), and no part of it can be scattered on its own: "
            "scatter the large data first (client.scatter) and pass the future instead"
        )


def check_function(name: str, pickled: bytes) -> None:
    """Refuse a function past :data:`MAX_FUNCTION_BYTES` (a closure capturing big data)."""
    if len(pickled) > MAX_FUNCTION_BYTES:
        raise ValueError(
            f"function {name!r} pickles to {describe(len(pickled))} (more than "
            f"{describe(MAX_FUNCTION_BYTES)}): it captures large data in its closure or "
            "globals; pass that data as an argument (rdist scatters large arguments)"
        )
