"""Turning user calls and raw task graphs into specs: arguments, keys, dependencies."""

from __future__ import annotations

import hashlib
import pickle
import sys
import uuid
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from rdist.protocol import serialize, spec
from rdist.protocol.spec import DepRef


class SubmitError(TypeError):
    """An argument of ``submit``/``map`` cannot be serialized."""


def funcname(func: Any) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    return "lambda" if name == "<lambda>" else name


def pack_arguments(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    futures_of: Callable[[Any], list[Any]],
    future_type: type,
) -> tuple[bytes, list[str], int]:
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
        key: str = getattr(obj, "key")  # noqa: B009  (``future_type`` is only known as a type)
        return DepRef(key)
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
        if len(data) < 1024 and b"__main__" not in data:  # __main__ exists only here
            return data
    except Exception:
        pass
    return serialize.dumps_function(func)


# -- raw task graphs ---------------------------------------------------------------------


def key_name(key: Hashable) -> str:
    return key if isinstance(key, str) else repr(key)


def graph_tasks(
    dsk: Mapping[Hashable, Any], keep: set[str] | None = None
) -> list[tuple[str, bytes, list[str]]]:
    """``(key, expression blob, dependencies)`` for every node, dependencies first.

    Nodes that are futures of the same key refer to data already on the cluster and make
    no task; dask ``Alias`` nodes not in ``keep`` make none either (who needs them reads
    their target directly)."""
    aliases = _aliases(dsk, keep)
    converted: dict[Hashable, tuple[Any, list[str]]] = {}
    for key, node in dsk.items():
        if key in aliases or _is_existing(key, node):
            continue
        deps: list[str] = []
        converted[key] = (_convert(node, dsk, deps, top=True, aliases=aliases), deps)
    order = _toposort(converted, {k: v[1] for k, v in converted.items()})
    out = []
    for key in order:
        expr, deps = converted[key]
        try:
            blob = serialize.to_blob(expr)
        except serialize.SerializationError as exc:
            try:  # futures embedded deep inside the node (e.g. in fused tasks)?
                blob = serialize.to_blob(expr, _embedded_futures(deps))
            except serialize.SerializationError:
                raise SubmitError(f"graph node {key!r} cannot be serialized: {exc}") from None
        out.append((key_name(key), blob, list(dict.fromkeys(deps))))
    return out


def _is_key(x: Any, dsk: Mapping[Hashable, Any]) -> bool:
    try:
        return x in dsk
    except TypeError:  # unhashable
        return False


def _convert(
    node: Any,
    dsk: Mapping[Hashable, Any],
    deps: list[str],
    top: bool = False,
    aliases: Mapping[Hashable, Hashable] | None = None,
) -> Any:
    kind = type(node)
    aliases = aliases or {}
    if _is_dask_node(node):
        future = _future_value(node)
        if future is not None:  # DataNode(future): the value already on the cluster
            deps.append(future.key)
            return DepRef(future.key)
        refs = {dep: DepRef(key_name(aliases.get(dep, dep))) for dep in node.dependencies}
        deps.extend(ref.key for ref in refs.values())
        return (run_dask_node, node, refs)
    if kind in (str, tuple, int, bytes) and _is_key(node, dsk):
        name = key_name(aliases.get(node, node))
        deps.append(name)
        return DepRef(name)
    if _is_future(node):
        deps.append(node.key)
        return DepRef(node.key)
    if kind is tuple and node and callable(node[0]):
        return (node[0], *(_convert(a, dsk, deps, aliases=aliases) for a in node[1:]))
    if kind is list:
        return [_convert(x, dsk, deps, aliases=aliases) for x in node]
    if kind is dict:
        return {k: _convert(v, dsk, deps, aliases=aliases) for k, v in node.items()}
    return node


def _embedded_futures(deps: list[str]) -> Callable[[Any], Any]:
    """Pickler hook: a future becomes a dependency, loaded by value on the worker."""

    def hook(obj: Any) -> Any:
        if _is_future(obj):
            deps.append(obj.key)
            return (spec.load_dependency, (obj.key,))
        return None

    return hook


def _is_future(x: Any) -> bool:
    from rdist.client.future import Future

    return isinstance(x, Future)


def _future_value(node: Any) -> Any:
    value = getattr(node, "value", None)
    return value if _is_future(value) else None


def _is_existing(key: Hashable, node: Any) -> bool:
    """A node that is (a DataNode of) a future of the very same key: nothing to run."""
    future = node if _is_future(node) else (_future_value(node) if _is_dask_node(node) else None)
    return future is not None and future.key == key_name(key)


def _aliases(dsk: Mapping[Hashable, Any], keep: set[str] | None) -> dict[Hashable, Hashable]:
    """Alias key -> the key it finally points to, for dask Alias nodes we can skip."""
    task_spec = sys.modules.get("dask._task_spec")
    if task_spec is None or keep is None:
        return {}
    direct = {}
    for key, node in dsk.items():
        if isinstance(node, task_spec.Alias) and key_name(key) not in keep:
            (target,) = node.dependencies
            if target in dsk and target != key:
                direct[key] = target
    out = {}
    for key, target in direct.items():
        seen = {key}
        while target in direct and target not in seen:
            seen.add(target)
            target = direct[target]
        if target not in direct:
            out[key] = target
    return out


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
                dep_key = by_name.get(dep, dep)  # a future's key is not in the graph
                if dep_key in deps and dep_key not in seen:
                    stack.append((dep_key, False))
    return order
