"""Getting the values of finished futures: ``gather`` and ``Future.result``.

A finished key's notification says where its value is (``wire.KeyInMemory``): inline in
the notification itself, in the ``results`` hash (small values), or on the workers that
hold it. Values are taken in that order of cheapness, with one Redis read for all the
small ones and one request per holding worker for the rest.

A future may be made pending again at any moment, on another thread: a new cluster epoch
(Redis may have lost data, ``rdist.client.recovery``) resets every future the client
holds, and a holder that died takes its values along. ``gather`` then waits for those
again -- it never leaves one out, which would shift every later value of a list one
place -- and takes only the values of futures it saw finished in one look at them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rdist.client.data import ClientData
from rdist.client.future import (
    CANCELLED,
    ERROR,
    FETCH_ATTEMPTS,
    FINISHED,
    LOST,
    PENDING,
    Future,
    futures_of,
)
from rdist.client.ledger import Ledger
from rdist.exceptions import DataUnavailable
from rdist.protocol import serialize, wire
from rdist.store import RedisStore

#: Statuses of futures that have no value to give.
_FAILED = frozenset((ERROR, CANCELLED, LOST))
#: Values of these types may be decoded once per future of a key: copies are alike.
_ATOMS = frozenset((type(None), bool, int, float, complex, str, bytes))


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
        flat = type(futures) is list and all(type(f) is Future for f in futures)
        found = futures if flat else futures_of(futures)
        host = None
        for f in found:
            if f._host is not host:  # a future of a closed client has no value to give
                host = f._host
                host.check_open(f._name)
        if flat:
            return self._gather_list(found, errors)
        values: dict[str, Any] = {}
        todo, holder_losses = found, 0
        while todo:
            statuses = self._settled(todo)
            if errors == "raise":
                for f, status in zip(todo, statuses):
                    if status in _FAILED:  # raises the task's own exception (unless a
                        values[f._name] = f.result()  # new epoch made it run once more)
            finished = [f for f, status in zip(todo, statuses) if status == FINISHED]
            outcomes = {f._name: f._state.outcome for f in finished}
            got, reset, unavailable = self._values(finished)
            values.update(got)
            if unavailable:
                holder_losses = self._await_recovery(finished, unavailable, outcomes, holder_losses)
            again = set(reset) | set(unavailable)
            todo = [f for f in finished if f._name in again]
        return rebuild(futures, values)

    def _await_recovery(
        self,
        fetched: list[Future],
        unavailable: list[str],
        outcomes: dict[str, Any],
        holder_losses: int,
    ) -> int:
        """A holder of ``unavailable`` died: wait for their recomputed values (up to
        FETCH_ATTEMPTS losses in one gather); returns the losses counted so far."""
        holder_losses += 1
        if holder_losses >= FETCH_ATTEMPTS:
            raise DataUnavailable(unavailable)
        lost = set(unavailable)
        self._ledger.await_recovery([f for f in fetched if f._name in lost], outcomes)
        return holder_losses

    def _gather_list(self, futures: list[Future], errors: str) -> list[Any]:
        """``gather`` of a flat list of futures (what ``map`` returns), as :meth:`gather`
        does it, with the values put straight into the output list by position: a
        million futures make no dict of values or outcomes by key, and no lists of
        futures besides. Only the values that are not inline go through :meth:`_values`.

        A key listed twice gives the same object twice, as by key (an immutable atom,
        e.g. ``None``, may be decoded twice: the copies cannot be told apart)."""
        out: list[Any] = [None] * len(futures)
        skipped: set[int] = set()  #: positions of failed futures (errors="skip")
        decoded: dict[int, Any] = {}  #: id(state) -> its value, when not an atom
        everything = range(len(futures))
        todo: Sequence[int] = everything
        holder_losses = 0
        while todo:
            again: list[int] = []  #: positions to take again (pending again meanwhile)
            elsewhere: list[int] = []  #: positions whose values are not inline
            taken = futures if todo is everything else [futures[i] for i in todo]
            statuses = self._settled(taken)
            if errors == "raise":  # the first failure raises before any value is decoded
                for i, status in zip(todo, statuses):
                    if status != FINISHED:  # raises the task's own exception (unless a
                        out[i] = futures[i].result()  # new epoch made it run once more)
            for i, status in zip(todo, statuses):
                if status != FINISHED:
                    if errors != "raise":
                        skipped.add(i)
                    continue
                state = futures[i]._state
                where = state.where()
                if where is None:  # reset meanwhile (a new epoch, or its holder died)
                    again.append(i)
                elif where.inline is None:
                    elsewhere.append(i)
                elif decoded and id(state) in decoded:
                    out[i] = decoded[id(state)]
                else:
                    value = out[i] = serialize.from_blob(where.inline)
                    if type(value) not in _ATOMS:
                        decoded[id(state)] = value
            if elsewhere:
                fetched = [futures[i] for i in elsewhere]
                outcomes = {f._name: f._state.outcome for f in fetched}
                got, _, unavailable = self._values(fetched)
                for i in elsewhere:
                    name = futures[i]._name
                    if name in got:
                        out[i] = got[name]
                    else:
                        again.append(i)
                if unavailable:
                    holder_losses = self._await_recovery(
                        fetched, unavailable, outcomes, holder_losses
                    )
            todo = again
        if skipped:
            return [value for i, value in enumerate(out) if i not in skipped]
        return out

    def _settled(self, futures: Sequence[Future]) -> list[str]:
        """Wait until every one of ``futures`` is settled at once; their statuses then.

        A future settled when the wait saw it may be pending again when the wait ends (a
        new cluster epoch): then all are waited for again."""
        states = [f._state for f in futures]
        while True:
            self._ledger.wait_all(states, None)
            statuses = [state.status for state in states]
            if PENDING not in statuses:
                return statuses

    def values(self, futures: list[Future]) -> dict[str, Any]:
        """The values of finished futures; raises :class:`DataUnavailable` naming every
        future whose value is not to be had now (pending again, or its holders gone)."""
        values, reset, unavailable = self._values(futures)
        if reset or unavailable:
            raise DataUnavailable(reset + unavailable)
        return values

    def _values(self, futures: list[Future]) -> tuple[dict[str, Any], list[str], list[str]]:
        """Inline results first, then one HMGET for small ones, then one request per
        worker: the values got, the keys pending again (no place known any more) and the
        keys whose holders do not have them (died)."""
        values: dict[str, Any] = {}
        wheres: dict[str, wire.KeyInMemory] = {}  #: of the values not inline (few, mostly)
        reset: list[str] = []
        from_redis: list[str] = []
        by_worker: dict[str, list[str]] = {}
        for f in futures:
            key, where = f._name, f._state.where()
            if where is None:  # reset meanwhile (a new epoch, or its only holder died)
                reset.append(key)
                continue
            if key in values or key in wheres:
                continue  # (a future listed twice)
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
        unavailable: list[str] = []
        for address, keys in by_worker.items():
            got, missing = self._from_workers(address, keys, wheres)
            values.update(got)
            unavailable += missing
        return values, reset, unavailable

    def _from_workers(
        self, address: str, keys: list[str], wheres: dict[str, wire.KeyInMemory]
    ) -> tuple[dict[str, Any], list[str]]:
        """Straight from the holders, or through Redis (transfer mode, ``rdist.client.data``):
        the values got and the keys none of their holders had."""
        holders = {k: list(dict.fromkeys([address, *wheres[k].who_has])) for k in keys}
        got, missing = self._data.fetch(keys, holders)
        return got, list(missing)


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
