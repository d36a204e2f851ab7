"""Turning user calls and raw task graphs into specs: arguments, keys, dependencies."""

from __future__ import annotations

import hashlib
import itertools
import os
import pickle
import sys
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

from rdist.client import keynames, large
from rdist.protocol import serialize, spec
from rdist.protocol.spec import DepRef


class SubmitError(TypeError):
    """An argument of ``submit``/``map`` cannot be serialized."""


def funcname(func: Any) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    return "lambda" if name == "<lambda>" else name


#: Argument types that hold no futures and nothing to scatter while they pickle small.
PLAIN = frozenset((int, float, str, bytes, bool, type(None)))


def pack_plain(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bytes, list[str], int, list[large.Large]] | None:
    """:func:`pack_arguments` of plain values (``PLAIN`` types: the common ``map``) in
    one pickle, giving the very same blob; None when the full path is needed."""
    try:
        head = pickle.dumps((args, kwargs), protocol=5)
    except Exception:
        return None
    if len(head) > large.INLINE_BYTES or b"__main__" in head:
        return None  # to be scattered, or pickled by value: see serialize.dumps
    return serialize.frames_to_blob([head]), [], spec.CALL, []


def pack_arguments(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    futures_of: Callable[[Any], list[Any]],
    future_type: type,
    pure: bool = True,
) -> tuple[bytes, list[str], int, list[large.Large]]:
    """Serialize ``(args, kwargs)`` with futures replaced by DepRefs and large values by
    references to data to scatter (:mod:`rdist.client.large`); returns blob, deps, mode
    and the values to scatter before the task is sent."""
    found = futures_of((args, kwargs)) if (args or kwargs) else []
    if found:
        deps = list(dict.fromkeys(f._name for f in found))
        args = _replace_futures(args, future_type)
        kwargs = _replace_futures(kwargs, future_type)
        mode = spec.CALL_WITH_DEPS
    else:
        deps, mode = [], spec.CALL
    try:
        _, frames, scattered = large.pack((args, kwargs), pure)
    except serialize.SerializationError:
        raise SubmitError(_which_argument(args, kwargs)) from None
    if scattered:
        deps = list(dict.fromkeys([*deps, *(value.name for value in scattered)]))
        mode = spec.CALL_WITH_DEPS
    large.check_spec("the arguments", frames)
    return serialize.frames_to_blob(frames), deps, mode, scattered


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
        name: str = getattr(obj, "_name")  # noqa: B009  (``future_type`` is only known as a type)
        return DepRef(name)
    if kind in (list, tuple, set, frozenset):
        return kind(_replace_futures(x, future_type) for x in obj)
    if kind is dict:
        return {k: _replace_futures(v, future_type) for k, v in obj.items()}
    return spec.map_container(obj, lambda x: _replace_futures(x, future_type))


#: An impure key's 32 hex digits: a random half drawn once per process (again in a forked
#: child) and a counter -- as unique as ``uuid4().hex``, without a ``urandom`` syscall and
#: a UUID object per task.
_unique: list[Any] = []


def _draw_unique() -> None:
    _unique[:] = [os.urandom(8).hex(), itertools.count()]


_draw_unique()
os.register_at_fork(after_in_child=_draw_unique)


def unique_hex() -> str:
    """32 hex digits no other call in any process returns (``next`` of a count is atomic)."""
    return f"{_unique[0]}{next(_unique[1]):016x}"


def task_key(prefix: str, func_hash: bytes, blob: bytes, pure: bool) -> str:
    if not pure:
        return f"{prefix}-{unique_hex()}"
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
    """The wire name of a graph key (see :mod:`rdist.client.keynames`); TypeError naming
    the key for anything dask would not take as a key."""
    if type(key) is str and (not key or key[0] not in "('\"-+.0123456789"):
        return key  # the common case, without a call
    return keynames.check_key(key, "graph key")


def key_names(dsk: Mapping[Hashable, Any]) -> dict[Hashable, str]:
    """The wire name of every key of ``dsk``, each checked once: a dask array's keys are
    tuples, whose check is the costly part, and a graph names each key several times (as
    a node and as every dependent's input)."""
    return {key: key_name(key) for key in dsk}


class GraphTask(NamedTuple):
    """One node of a graph as sent: its wire name, expression blob and dependencies."""

    key: str
    blob: bytes
    deps: list[str]


def graph_tasks(
    dsk: Mapping[Hashable, Any],
    keep: set[str] | None = None,
    pure: bool = True,
    names: Mapping[Hashable, str] | None = None,
) -> tuple[list[GraphTask], list[large.Large]]:
    """A task for every node, dependencies first, and the large values to scatter first.

    Nodes that are futures of the same key refer to data already on the cluster and make
    no task; dask ``Alias`` nodes not in ``keep`` make none either (who needs them reads
    their target directly); a large dask ``DataNode`` is scattered under its own key. A
    literal larger than :data:`~rdist.client.large.INLINE_BYTES` inside a node is
    scattered and referred to. A cycle raises ValueError naming it. ``names`` are the
    keys' wire names when the caller has them (:func:`key_names`)."""
    if names is None:
        names = key_names(dsk)
    aliases = _aliases(dsk, keep, names)
    converter = _Converter(dsk, aliases, names)
    converted: dict[Hashable, tuple[Any, list[str]]] = {}
    scattered: list[large.Large] = []
    for key, node in dsk.items():
        if key in aliases or _is_existing(key, node):
            continue
        data = _large_data_node(key, node)
        if data is not None:
            scattered.append(data)
            continue
        deps: list[str] = []
        converted[key] = (converter.convert(node, deps), deps)
    order = _toposort(converted, {k: v[1] for k, v in converted.items()}, names)
    out = []
    for key in order:
        expr, deps = converted[key]
        name = names[key]
        try:
            expr, frames, found = large.pack(expr, pure, in_graph=True)
        except serialize.SerializationError as exc:
            try:  # futures embedded deep inside the node (e.g. in fused tasks)?
                expr, frames, found = large.pack(
                    expr, pure, in_graph=True, hook=_embedded_futures(deps)
                )
            except serialize.SerializationError:
                raise SubmitError(f"graph node {key!r} cannot be serialized: {exc}") from None
        if found:
            scattered += found
            deps = [*deps, *(value.name for value in found)]
        large.check_spec(f"graph node {key!r}", frames)
        out.append(GraphTask(name, serialize.frames_to_blob(frames), list(dict.fromkeys(deps))))
    return out, scattered


def _large_data_node(key: Hashable, node: Any) -> large.Large | None:
    """A dask ``DataNode`` holding a large value: scattered under its key, no task."""
    task_spec = sys.modules.get("dask._task_spec")
    if task_spec is None or not isinstance(node, task_spec.DataNode):
        return None
    value = node.value
    if _is_future(value):
        return None
    try:
        frames = serialize.dumps(value)
    except serialize.SerializationError:
        return None  # made into a task, whose serialization reports the error
    nbytes = serialize.frames_size(frames)
    if nbytes <= large.INLINE_BYTES:
        return None
    return large.Large(key_name(key), frames, nbytes)


def _is_key(x: Any, dsk: Mapping[Hashable, Any]) -> bool:
    try:
        return x in dsk
    except TypeError:  # unhashable
        return False


class _Converter:
    """Graph nodes to the expressions a worker evaluates (dependencies as DepRefs), with
    what every node needs looked up once per graph: the keys' wire names, the aliases
    skipped, dask's task-spec module."""

    def __init__(
        self,
        dsk: Mapping[Hashable, Any],
        aliases: Mapping[Hashable, Hashable],
        names: Mapping[Hashable, str],
    ) -> None:
        self.dsk = dsk
        self.aliases = aliases
        self.names = names
        task_spec = sys.modules.get("dask._task_spec")
        #: dask's GraphNode (Task, Alias, DataNode...), None when dask is not loaded
        self.graph_node: Any = task_spec.GraphNode if task_spec is not None else None

    def name(self, key: Hashable) -> str:
        """The wire name of the key an input ``key`` stands for (past skipped aliases)."""
        target = self.aliases.get(key, key)
        name = self.names.get(target)
        return name if name is not None else key_name(target)

    def convert(self, node: Any, deps: list[str]) -> Any:
        graph_node = self.graph_node
        if graph_node is not None and isinstance(node, graph_node):
            future = _future_value(node)
            if future is not None:  # DataNode(future): the value already on the cluster
                deps.append(future._name)
                return DepRef(future._name)
            refs = {dep: DepRef(self.name(dep)) for dep in node.dependencies}
            deps.extend(ref.key for ref in refs.values())
            return (run_dask_node, node, refs)
        return self._inner(node, deps)

    def _inner(self, node: Any, deps: list[str]) -> Any:
        kind = type(node)
        if kind in (str, tuple, int, bytes) and _is_key(node, self.dsk):
            name = self.name(node)
            deps.append(name)
            return DepRef(name)
        if _is_future(node):
            deps.append(node._name)
            return DepRef(node._name)
        if kind is tuple and node and callable(node[0]):
            return (node[0], *(self._inner(a, deps) for a in node[1:]))
        if kind is list:
            return [self._inner(x, deps) for x in node]
        if kind is dict:
            return {k: self._inner(v, deps) for k, v in node.items()}
        if self.graph_node is not None and isinstance(node, self.graph_node):
            return self.convert(node, deps)  # a dask node nested in a tuple task
        return node


def _embedded_futures(deps: list[str]) -> Callable[[Any], Any]:
    """Pickler hook: a future becomes a dependency, loaded by value on the worker."""

    def hook(obj: Any) -> Any:
        if _is_future(obj):
            deps.append(obj._name)
            return (spec.load_dependency, (obj._name,))
        return None

    return hook


_FUTURE: list[type] = []  #: rdist.client.future.Future, imported at the first look


def _is_future(x: Any) -> bool:
    if not _FUTURE:
        from rdist.client.future import Future

        _FUTURE.append(Future)
    return isinstance(x, _FUTURE[0])


def _future_value(node: Any) -> Any:
    value = getattr(node, "value", None)
    return value if _is_future(value) else None


def _is_existing(key: Hashable, node: Any) -> bool:
    """A node that is (a DataNode of) a future of the very same key: nothing to run."""
    future = node if _is_future(node) else (_future_value(node) if _is_dask_node(node) else None)
    return future is not None and future._name == key_name(key)


def _aliases(
    dsk: Mapping[Hashable, Any],
    keep: set[str] | None,
    names: Mapping[Hashable, str] | None = None,
) -> dict[Hashable, Hashable]:
    """Alias key -> the key it finally points to, for dask Alias nodes we can skip."""
    task_spec = sys.modules.get("dask._task_spec")
    if task_spec is None or keep is None:
        return {}
    direct = {}
    for key, node in dsk.items():
        if (
            isinstance(node, task_spec.Alias)
            and (names[key] if names is not None else key_name(key)) not in keep
        ):
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


def _toposort(
    dsk: Mapping[Hashable, Any],
    deps: dict[Hashable, list[str]],
    names: Mapping[Hashable, str] | None = None,
) -> list[Hashable]:
    """The keys of ``dsk``, each after its dependencies (iterative: long chains are fine);
    ValueError naming the keys of a cycle, which could never run."""
    by_name = {names[k] if names is not None else key_name(k): k for k in dsk}
    done: set[Hashable] = set()
    on_path: set[Hashable] = set()  #: keys being expanded, from a root down to here
    order: list[Hashable] = []
    for root in dsk:
        if root in done:
            continue
        stack: list[tuple[Hashable, bool]] = [(root, False)]
        path: list[Hashable] = []
        while stack:
            key, expanded = stack.pop()
            if expanded:
                on_path.discard(key)
                path.pop()
                done.add(key)
                order.append(key)
                continue
            if key in done:
                continue
            if key in on_path:
                raise _cycle_error(path, key)
            on_path.add(key)
            path.append(key)
            stack.append((key, True))
            for dep in deps[key]:
                dep_key = by_name.get(dep, dep)  # a future's key is not in the graph
                if dep_key in deps and dep_key not in done:
                    if dep_key in on_path:
                        raise _cycle_error(path, dep_key)
                    stack.append((dep_key, False))
    return order


def _cycle_error(path: list[Hashable], back_to: Hashable) -> ValueError:
    cycle = [*path[path.index(back_to) :], back_to]
    shown = " -> ".join(repr(k) for k in cycle[:20]) + (" -> ..." if len(cycle) > 20 else "")
    return ValueError(
        f"the graph has a cycle, so none of these tasks could ever run: {shown}. "
        "Each task may depend only on tasks that do not depend on it"
    )
