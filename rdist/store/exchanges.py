"""The runs of P2P exchanges (``rdist.shuffle``): which run is current, who owns its outputs.

Run 0 of an exchange is what the client submitted (owners in the tasks' plan) and has no
record. A worker that finds the exchange broken (an owner lost) starts the next run:
:meth:`Exchanges.advance` makes ``exchange:<id>:<run+1>`` with SET NX, so of all the workers
noticing the same loss one wins, and only the winner moves ``exchange:<id>`` on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

if TYPE_CHECKING:
    from rdist.store.connection import RedisStore

#: seconds an exchange's records outlive their last change
TTL = 24 * 3600


class Exchanges:
    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def current(self, exchange_id: str) -> tuple[int, list[str] | None]:
        """``(run, owners)``; ``(0, None)`` for an exchange never restarted."""
        keys, redis = self._store.keys, self._store.redis
        raw = redis.get(keys.exchange(exchange_id))
        if raw is None:
            return 0, None
        run = int(raw)
        owners = redis.get(keys.exchange(exchange_id, run))
        return run, (None if owners is None else [str(o) for o in msgpack.unpackb(owners)])

    def advance(self, exchange_id: str, from_run: int, owners: list[str]) -> bool:
        """Start run ``from_run + 1`` with ``owners``; False when another worker did first."""
        keys, redis = self._store.keys, self._store.redis
        run = from_run + 1
        if not redis.set(keys.exchange(exchange_id, run), msgpack.packb(owners), nx=True, ex=TTL):
            return False
        redis.set(keys.exchange(exchange_id), run, ex=TTL)
        return True
