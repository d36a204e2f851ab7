"""Turning user calls and raw task graphs into specs: arguments, keys, dependencies."""

from __future__ import annotations

import hashlib
import pickle
import sys
import uuid
from typing import Any, Callable, Hashable, Mapping

from rdist.protocol import serialize, spec
from rdist.protocol.spec import DepRef


class SubmitError(TypeError):
    """An argument of ``submit``/``map`` cannot be serialized."""


def funcname(func: Any) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    return "lambda" if name == "<lambda>" else name


def pack_arguments(args: tuple[Any, ...], kwargs: dict[str, Any],
                   futures_of: Callable[[Any], list[Any]], future_type: type) -> tuple[bytes, list[str], int]:
    """Serialize ``(args, kwargs)`` with futures replaced by DepRefs; returns blob, deps, mode."""
    found = futures_of((args, kwargs)) if (args or kwargs) else []
    if found:
        deps = list(dict.fromkeys(f.key for f in found))
        args = _replace_futures(args, future_type)
        kwargs = _replace_futures(kwargs, future_type)
        mode = spec.CALL_WITH_DEPS
    else:
        deps, mode = [], spec.CALL
    try:
        blob = serialize.to_blob((args, kwargs))
    except serialize.SerializationError:
        raise SubmitError(_which_argument(args, kwargs)) from None
    return blob, deps, mode


def _which_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    for i, value in enumerate(args):
        try:
            serialize.dumps(value)
        except serialize.SerializationError as exc:
            return f"argument {i} ({type(value).__name__}) cannot be serialized: {exc}"
    for name, value in kwargs.items():
        try:
            serialize.dumps(value)
        except serialize.SerializationError as exc:
            return f"keyword argument {name!r} ({type(value).__name__}) cannot be serialized: {exc}"
    return "the arguments cannot be serialized"


def _replace_futures(obj: Any, future_type: type) -> Any:
    kind = type(obj)
    if isinstance(obj, future_type):
        return DepRef(obj.key)
    if kind in (list, tuple, set, frozenset):
        return kind(_replace_futures(x, future_type) for x in obj)
    if kind is dict:
        return {k: _replace_futures(v, future_type) for k, v in obj.items()}
    return obj


def task_key(prefix: str, func_hash: bytes, blob: bytes, pure: bool) -> str:
    if not pure:
        return f"{prefix}-{uuid.uuid4().hex}"
    return f"{prefix}-{hashlib.blake2b(func_hash + blob, digest_size=16).hexdigest()}"


def function_bytes(func: Any) -> bytes:
    """Functions importable by name pickle by reference (tiny); others by value."""
    try:
        data = pickle.dumps(func, protocol=5)
        if len(data) < 1024:
            return data
    except Exception:
        pass
    return serialize.dumps_function(func)


# -- raw task graphs ---------------------------------------------------------------------


def key_name(key: Hashable) -> str:
    return key if isinstance(key, str) else repr(key)


def graph_tasks(dsk: Mapping[Hashable, Any]) -> list[tuple[str, bytes, list[str]]]:
    """``(key, expression blob, dependencies)`` for every node, dependencies first."""
    converted: dict[Hashable, tuple[Any, list[str]]] = {}
    for key, node in dsk.items():
        deps: list[str] = []
        converted[key] = (_convert(node, dsk, deps, top=True), deps)
    order = _toposort(dsk, {k: v[1] for k, v in converted.items()})
    out = []
    for key in order:
        expr, deps = converted[key]
        try:
            blob = serialize.to_blob(expr)
        except serialize.SerializationError as exc:
            raise SubmitError(f"graph node {key!r} cannot be serialized: {exc}") from None
        out.append((key_name(key), blob, list(dict.fromkeys(deps))))
    return out


def _is_key(x: Any, dsk: Mapping[Hashable, Any]) -> bool:
    try:
        return x in dsk
    except TypeError:  # unhashable
        return False


def _convert(node: Any, dsk: Mapping[Hashable, Any], deps: list[str], top: bool = False) -> Any:
    kind = type(node)
    if _is_dask_node(node):
        refs = {dep: DepRef(key_name(dep)) for dep in node.dependencies}
        deps.extend(ref.key for ref in refs.values())
        return (run_dask_node, node, refs)
    if kind in (str, tuple, int, bytes) and _is_key(node, dsk):
        deps.append(key_name(node))
        return DepRef(key_name(node))
    if kind is tuple and node and callable(node[0]):
        return (node[0], *(_convert(a, dsk, deps) for a in node[1:]))
    if kind is list:
        return [_convert(x, dsk, deps) for x in node]
    if kind is dict:
        return {k: _convert(v, dsk, deps) for k, v in node.items()}
    return node


def _is_dask_node(node: Any) -> bool:
    """A node of dask's task spec (``Task``, ``Alias``, ``DataNode``): what dask >= 2024.12
    collections put in their graphs instead of tuples. No dask loaded, no such node."""
    task_spec = sys.modules.get("dask._task_spec")
    return task_spec is not None and isinstance(node, task_spec.GraphNode)


def run_dask_node(node: Any, values: dict[Hashable, Any]) -> Any:
    """Run a dask task-spec node on a worker, given its dependencies' values by key."""
    return node(values)


def _toposort(dsk: Mapping[Hashable, Any], deps: dict[Hashable, list[str]]) -> list[Hashable]:
    by_name = {key_name(k): k for k in dsk}
    seen: set[Hashable] = set()
    order: list[Hashable] = []
    for root in dsk:
        if root in seen:
            continue
        stack: list[tuple[Hashable, bool]] = [(root, False)]
        while stack:
            key, expanded = stack.pop()
            if expanded:
                order.append(key)
                continue
            if key in seen:
                continue
            seen.add(key)
            stack.append((key, True))
            for dep in deps[key]:
                dep_key = by_name[dep]
                if dep_key not in seen:
                    stack.append((dep_key, False))
    return order
