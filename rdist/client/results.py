"""Getting the values of finished futures: ``gather`` and ``Future.result``.

A finished key's notification says where its value is (``wire.KeyInMemory``): inline in
the notification itself, in the ``results`` hash (small values), or on the workers that
hold it. Values are taken in that order of cheapness, with one Redis read for all the
small ones and one request per holding worker for the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rdist.client.data import ClientData
from rdist.client.future import CANCELLED, ERROR, FINISHED, LOST, Future, futures_of
from rdist.client.ledger import Ledger
from rdist.exceptions import DataUnavailable
from rdist.protocol import serialize, wire
from rdist.store import RedisStore

_FAILED = frozenset((ERROR, CANCELLED, LOST))


class Results:
    """Fetches values for one client."""

    def __init__(self, store: RedisStore, ledger: Ledger, data: ClientData) -> None:
        self._store = store
        self._ledger = ledger
        self._data = data

    def gather(self, futures: Any, errors: str = "raise") -> Any:
        """Values of the futures in ``futures``, keeping its structure (lists, dicts, ...)."""
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        if isinstance(futures, Iterable) and not isinstance(
            futures, (list, tuple, set, dict, str, bytes, Future)
        ):
            futures = list(futures)
        found = futures_of(futures)
        host = None
        for f in found:
            if f._host is not host:  # a future of a closed client has no value to give
                host = f._host
                host.check_open(f._name)
        self._ledger.wait_all([f._state for f in found], None)
        if errors == "raise":
            for f in found:
                if f._state.status in _FAILED:
                    f.result()  # raises the task's own exception
        finished = [f for f in found if f._state.status == FINISHED]
        try:
            values = self.values(finished)
        except DataUnavailable as exc:  # a holder died: those wait for their recomputation
            missing = set(exc.keys)
            values = self.values([f for f in finished if f._name not in missing])
            values.update({f._name: f.result() for f in finished if f._name in missing})
        return rebuild(futures, values)

    def values(self, futures: list[Future]) -> dict[str, Any]:
        """Inline results first, then one HMGET for small ones, then one request per worker."""
        for f in futures:
            if f._state.where() is None:  # reset meanwhile (its only holder died): wait again
                raise DataUnavailable([f._name])
        values: dict[str, Any] = {}
        wheres: dict[str, wire.KeyInMemory] = {}  #: of the values not inline (few, mostly)
        from_redis: list[str] = []
        by_worker: dict[str, list[str]] = {}
        for f in futures:
            key, where = f._name, f._state.where()
            if where is None:  # reset since the check above
                raise DataUnavailable([key])
            if key in wheres:
                continue
            if where.inline is not None:
                values[key] = serialize.from_blob(where.inline)
                continue
            wheres[key] = where
            if where.in_redis:
                from_redis.append(key)
            else:
                by_worker.setdefault(_first(where), []).append(key)
        if from_redis:
            for key, blob in zip(from_redis, self._store.results.get_many(from_redis)):
                if blob is None:
                    by_worker.setdefault(_first(wheres[key]), []).append(key)
                else:
                    values[key] = serialize.from_blob(blob)
        for address, keys in by_worker.items():
            values.update(self._from_workers(address, keys, wheres))
        return values

    def _from_workers(
        self, address: str, keys: list[str], wheres: dict[str, wire.KeyInMemory]
    ) -> dict[str, Any]:
        """Straight from the holders, or through Redis (transfer mode, ``rdist.client.data``)."""
        holders = {k: list(dict.fromkeys([address, *wheres[k].who_has])) for k in keys}
        got, missing = self._data.fetch(keys, holders)
        if missing:
            raise DataUnavailable(missing)
        return got


def _first(where: wire.KeyInMemory) -> str:
    return where.who_has[0] if where.who_has else ""


def rebuild(obj: Any, values: dict[str, Any]) -> Any:
    """``obj`` with futures replaced by values; failed futures dropped (errors='skip')."""
    if isinstance(obj, Future):
        return values.get(obj._name)
    if isinstance(obj, (list, tuple, set, frozenset)):
        kind = type(obj)
        items: list[Any] = []
        append = items.append
        for x in obj:
            if isinstance(x, Future):  # the common element: taken here, without a call
                if x._name in values:
                    append(values[x._name])
            else:
                append(rebuild(x, values))
        return kind(items) if kind is not list else items
    if isinstance(obj, dict):
        return {
            k: rebuild(v, values)
            for k, v in obj.items()
            if not isinstance(v, Future) or v._name in values
        }
    return obj
