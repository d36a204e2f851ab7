"""``client.set_metadata`` / ``get_metadata``: a tree of small plain values kept in Redis,
addressed by a key or a list of keys (a path), as dask keeps it on its scheduler.

Values are msgpack data (dicts, lists, str, numbers, bools, None): the scheduler never
unpickles, and neither does anyone reading the tree. Each top-level key is one field of
the ``metadata`` hash, changed in a transaction.
"""

from __future__ import annotations

from typing import Any

from rdist.protocol import wire
from rdist.store import RedisStore

__all__ = ["MISSING", "get_metadata", "set_metadata"]

MISSING = object()


def _path(keys: Any) -> list[str]:
    path = [keys] if isinstance(keys, str) else list(keys) if isinstance(keys, list) else None
    if not path or not all(isinstance(k, str) for k in path):
        raise TypeError(f"metadata keys={keys!r}: a str or a non-empty list of str")
    return path


def set_metadata(store: RedisStore, keys: Any, value: Any) -> None:
    path = _path(keys)
    try:
        wire.pack(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"set_metadata(value=...): metadata is msgpack data: {exc}") from None

    def change(current: bytes | None) -> bytes:
        if len(path) == 1:
            return wire.pack(value)
        tree = wire.unpack(current, "metadata") if current is not None else {}
        if not isinstance(tree, dict):
            tree = {}
        node = tree
        for part in path[1:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        return wire.pack(tree)

    store.metadata.update(path[0], change)


def get_metadata(store: RedisStore, keys: Any, default: Any = MISSING) -> Any:
    path = _path(keys)
    raw = store.metadata.get(path[0])
    if raw is not None:
        node: Any = wire.unpack(raw, "metadata")
        for part in path[1:]:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return node
    if default is MISSING:
        raise KeyError(keys)
    return default
