"""Task specs: what a worker needs to run a task, opaque to the scheduler.

A spec is msgpack ``[func_hash, args_blob, mode]``, or ``[func_hash, args_blob, mode, span]``
for a task submitted inside ``rdist.span(...)`` (``span`` = ``[span id, *names]``):

- ``func_hash`` names a cloudpickled function in the ``funcs`` hash (stored once per cluster);
- ``args_blob`` is the serialized ``(args, kwargs)`` -- or, for raw graph nodes, the node's
  expression -- in which every dependency appears as a :class:`DepRef`;
- ``mode`` says how to run it (:data:`CALL`, :data:`CALL_WITH_DEPS`, :data:`GRAPH_NODE`).
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from rdist.protocol import serialize

CALL = 0  #: ``func(*args, **kwargs)``, no dependencies inside
CALL_WITH_DEPS = 1  #: same, after replacing every DepRef by its value
GRAPH_NODE = 2  #: evaluate a dask-style expression (tuple tasks, lists, keys)


class DepRef:
    """Placeholder for a dependency's value inside pickled arguments."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (DepRef, (self.key,))

    def __repr__(self) -> str:
        return f"DepRef({self.key!r})"


def function_hash(func_bytes: bytes) -> bytes:
    return hashlib.blake2b(func_bytes, digest_size=16).digest()


def pack_spec(
    func_hash: bytes, args_blob: bytes, mode: int, span: list[str] | None = None
) -> bytes:
    parts: list[Any] = [func_hash, args_blob, mode]
    if span:
        parts.append(span)
    packed: bytes = msgpack.packb(parts, use_bin_type=True)
    return packed


def unpack_spec(spec: bytes) -> tuple[bytes, bytes, int]:
    func_hash, args_blob, mode, _ = unpack_spec_tagged(spec)
    return func_hash, args_blob, mode


def unpack_spec_tagged(spec: bytes) -> tuple[bytes, bytes, int, list[str] | None]:
    """The spec's parts and its span (``[span id, *names]``, None when it has none)."""
    parts = msgpack.unpackb(spec, raw=False)
    if len(parts) == 4:
        func_hash, args_blob, mode, span = parts
        if not (isinstance(span, list) and span and all(isinstance(s, str) for s in span)):
            span = None
        return func_hash, args_blob, mode, span
    func_hash, args_blob, mode = parts
    return func_hash, args_blob, mode, None


def replace_refs(obj: Any, data: Mapping[str, Any]) -> Any:
    """Substitute dependency values for DepRefs in nested lists, tuples, dicts and sets
    (and namedtuples and dataclasses, as dask's)."""
    kind = type(obj)
    if kind is DepRef:
        return data[obj.key]
    if kind in (list, tuple, set, frozenset):
        return kind(replace_refs(x, data) for x in obj)
    if kind is dict:
        return {k: replace_refs(v, data) for k, v in obj.items()}
    return map_container(obj, lambda x: replace_refs(x, data))


def map_container(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """A namedtuple or dataclass instance with ``fn`` applied to each field (a copy; the
    original is left alone); anything else as it is."""
    kind = type(obj)
    if isinstance(obj, tuple) and hasattr(kind, "_fields"):  # a namedtuple
        return kind(*(fn(x) for x in obj))
    if hasattr(kind, "__dataclass_fields__") and not isinstance(obj, type):
        out = copy.copy(obj)
        for name in kind.__dataclass_fields__:
            if hasattr(obj, name):
                object.__setattr__(out, name, fn(getattr(obj, name)))  # frozen ones too
        return out
    return obj


def container_items(obj: Any) -> list[Any] | None:
    """The fields of a namedtuple or dataclass instance (None for anything else)."""
    kind = type(obj)
    if isinstance(obj, tuple) and hasattr(kind, "_fields"):
        return list(obj)
    if hasattr(kind, "__dataclass_fields__") and not isinstance(obj, type):
        return [getattr(obj, name) for name in kind.__dataclass_fields__ if hasattr(obj, name)]
    return None


def evaluate_node(expr: Any, data: Mapping[str, Any]) -> Any:
    """Evaluate a dask graph node: ``(func, *args)`` calls, lists map, DepRefs resolve."""
    kind = type(expr)
    if kind is DepRef:
        return data[expr.key]
    if kind is tuple and expr and callable(expr[0]):
        return expr[0](*(evaluate_node(a, data) for a in expr[1:]))
    if kind is list:
        return [evaluate_node(x, data) for x in expr]
    if kind is dict:
        return {k: evaluate_node(v, data) for k, v in expr.items()}
    return expr


_loading = threading.local()


def load_dependency(key: str) -> Any:
    """Unpickling a spec: a future that was embedded deep in a graph node (pickled as a
    call to this) becomes its value, loaded like any dependency before the task runs."""
    return _loading.data[key]


def run_spec(
    func: Callable[..., Any] | None, args_blob: bytes, mode: int, data: Mapping[str, Any]
) -> Any:
    _loading.data = data
    try:
        payload = serialize.from_blob(args_blob)
    finally:
        _loading.data = None
    if mode == GRAPH_NODE:
        return evaluate_node(payload, data)
    args, kwargs = payload
    if mode == CALL_WITH_DEPS:
        args, kwargs = replace_refs(args, data), replace_refs(kwargs, data)
    assert func is not None
    return func(*args, **kwargs)
