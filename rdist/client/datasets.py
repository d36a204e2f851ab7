"""Published datasets: named values any client can get, kept in Redis (as dask's).

``client.publish_dataset(x=df)`` stores ``df`` -- any picklable object: futures, lists of
them, persisted dask collections -- under its name in the ``datasets`` hash, its futures
held by a holder of their own (:mod:`rdist.client.holders`), so they stay computed after
the publishing client leaves, and through scheduler restarts. ``get_dataset`` gives the
reading client its own futures of the same keys; ``unpublish_dataset`` (or publishing
another value over it with ``override=True``) gives the old holder's keys up.

:class:`Datasets` is the ``client.datasets`` mapping.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from rdist.client.graph import key_name
from rdist.client.holders import load, release_stored, store_objects

if TYPE_CHECKING:
    from rdist.client.holders import Holdings
    from rdist.store import RedisStore

#: ``get_dataset(name)`` without a default raises KeyError when the name is unknown
NO_DEFAULT: Any = object()


class DatasetOps:
    """One client's dataset calls."""

    def __init__(self, store: RedisStore, holdings: Holdings) -> None:
        self._primitives = store.primitives
        self._holdings = holdings

    def publish(
        self, args: tuple[Any, ...], name: Hashable | None, override: bool, named: dict[str, Any]
    ) -> None:
        """``publish_dataset(*args, name=, override=, **named)`` with dask's rules: named
        values, or ``args[0]`` under ``name`` (all ``args`` as a tuple when several), or
        a single ``{name: value}`` mapping."""
        items: list[tuple[Hashable, Any]] = list(named.items())
        if name is not None:
            if not args:
                raise ValueError(
                    "If name is provided, expecting call signature like "
                    "publish_dataset(df, name='ds')"
                )
            items.append((name, args[0] if len(args) == 1 else args))
        elif args:
            if len(args) != 1 or not isinstance(args[0], Mapping):
                raise ValueError(
                    "If name is omitted, positional argument must be a {name: value} dict"
                )
            items.extend(args[0].items())
        for dataset, value in items:
            self._publish_one(key_name(dataset), value, override)

    def _publish_one(self, name: str, value: Any, override: bool) -> None:
        stored = store_objects(value, "dataset", name)  # its futures are held from here on
        published, old = self._primitives.publish(name, stored, override)
        if not published:
            release_stored(self._holdings, stored)
            raise KeyError(f"Dataset {name} already exists")
        release_stored(self._holdings, old)

    def get(self, name: Hashable | list[Hashable], default: Any = NO_DEFAULT) -> Any:
        names = name if isinstance(name, list) else [name]
        found = self._primitives.datasets([key_name(n) for n in names])
        out = []
        for one, stored in zip(names, found):
            if stored is None:
                if default is NO_DEFAULT:
                    raise KeyError(f"Dataset '{one}' not found")
                out.append(default)
            else:
                out.append(load(self._holdings, stored, take=False))
        return out if isinstance(name, list) else out[0]

    def unpublish(self, name: Hashable | list[Hashable]) -> None:
        for one in name if isinstance(name, list) else [name]:
            release_stored(self._holdings, self._primitives.unpublish(key_name(one)))

    def names(self) -> list[str]:
        return self._primitives.dataset_names()


class Datasets(MutableMapping[Hashable, Any]):
    """``client.datasets``: the published datasets as a mapping (get, set, del, in, iter)."""

    __slots__ = ("_client",)

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getitem__(self, key: Hashable) -> Any:
        return self._client.get_dataset(key)

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self._client.publish_dataset(value, name=key)

    def __delitem__(self, key: Hashable) -> None:
        self._client.unpublish_dataset(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, Hashable) and key_name(key) in self._client.list_datasets()

    def __iter__(self) -> Iterator[Hashable]:
        yield from self._client.list_datasets()

    def __len__(self) -> int:
        return len(self._client.list_datasets())

    def __repr__(self) -> str:
        return f"<Datasets: {self._client.list_datasets()}>"
