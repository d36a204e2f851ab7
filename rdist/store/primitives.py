"""Coordination primitives in Redis: semaphores (and locks), multi-locks, queues, watched
values (variables, events) and datasets.

Each atomic step is a Lua script in ``lua/`` with a ``KEYS / ARGV / returns`` header and a
typed wrapper here. Waiting never polls: a step that cannot proceed returns the id of the
last entry of a small notification stream, and the waiter blocks on that stream (XREAD
BLOCK) until something changes after it -- a release, a take, a set. State lives in Redis,
so it outlives any scheduler; leases carry fencing tokens and lapse when their holder stops
renewing them (a SIGKILLed process frees its locks after its lease timeout).

The client-side classes (``rdist.primitives``) build dask's ``Lock``, ``Semaphore``, ...
on these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rdist.store.connection import RedisStore

_LUA = Path(__file__).parent / "lua"
#: Keys of a primitive nobody used for this long vanish (they are cheap to make again).
IDLE_TTL_SECONDS = 7 * 24 * 3600
#: fakeredis answers a blocking read at once: waiters then sleep this long between looks
FAKE_WAIT_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease held: its id, its fencing token and (for a multi-lock) the names it took."""

    lease_id: str
    token: int
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Wait:
    """Not now: block on the notification stream after ``after`` for at most ``max_ms``
    (a lease may lapse by then, which no notification announces)."""

    after: str
    max_ms: int


class InconsistentLimit(ValueError):
    """A semaphore of this name exists with another ``max_leases``."""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class _Scripts:
    """The Lua scripts, registered once per store (EVALSHA, EVAL after a Redis restart)."""

    NAMES = (
        "sem_acquire",
        "sem_release",
        "sem_renew",
        "multilock_acquire",
        "multilock_release",
        "queue_put",
        "queue_take",
        "queue_putback",
        "dataset_put",
        "value_set",
        "value_get",
    )

    def __init__(self, redis: Any) -> None:
        texts = {n: (_LUA / f"{n}.lua").read_text() for n in self.NAMES}
        self._scripts = {n: redis.register_script(text) for n, text in texts.items()}
        # loaded now, in one round trip: a first EVALSHA that fails (NOSCRIPT) is retried by
        # redis-py, but the caught error keeps the caller's frames -- and the futures in
        # them, which then never get released -- alive until the next garbage collection
        pipe = redis.pipeline(transaction=False)
        for text in texts.values():
            pipe.script_load(text)
        pipe.execute()

    def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)


class Primitives:
    """The Redis side of every coordination primitive of one cluster."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._keys = store.keys
        self._lua: _Scripts | None = None

    @property
    def _scripts(self) -> _Scripts:
        if self._lua is None:
            self._lua = _Scripts(self._store.redis)
        return self._lua

    # -- waiting ---------------------------------------------------------------------------
    def wait_after(self, stream: str, after: str, timeout: float) -> bool:
        """Block until ``stream`` has an entry after id ``after`` or ``timeout`` seconds pass;
        True when something changed. (One connection of the pool is held meanwhile.)"""
        ms = max(1, int(timeout * 1000))
        started = time.monotonic()
        reply = self._store.redis.xread({stream: after}, count=1, block=ms)
        if reply:
            return True
        if self._store.url.startswith("fakeredis://"):  # it did not block: do not spin
            time.sleep(max(0.0, min(FAKE_WAIT_SECONDS, timeout - (time.monotonic() - started))))
        return False

    # -- semaphores and locks --------------------------------------------------------------
    def _semaphore_keys(self, name: str) -> list[str]:
        k = self._keys.semaphore(name)
        return [k + ":leases", k + ":tokens", k + ":limit", k + ":released"]

    def semaphore_released(self, name: str) -> str:
        """The stream a full semaphore's waiters block on."""
        return self._semaphore_keys(name)[3]

    def acquire(self, name: str, lease_id: str, max_leases: int, lease_ms: int) -> Lease | Wait:
        reply = self._scripts.run(
            "sem_acquire",
            [*self._semaphore_keys(name), self._keys.fencing],
            [lease_id, lease_ms, max_leases, IDLE_TTL_SECONDS],
        )
        token = int(reply[0])
        if token > 0:
            return Lease(lease_id, token)
        if token < 0:
            raise InconsistentLimit(
                f"semaphore {name!r} exists with max_leases={_text(reply[1])}, not {max_leases}"
            )
        return Wait(_text(reply[1]), max(1, int(_text(reply[2]))))

    def release(self, name: str, lease: Lease) -> bool:
        """True when the lease was the caller's to give back (False: it had lapsed)."""
        leases, tokens, _, released = self._semaphore_keys(name)
        return bool(
            self._scripts.run(
                "sem_release", [leases, tokens, released], [lease.lease_id, lease.token]
            )
        )

    def renew(self, name: str, leases: list[Lease], lease_ms: int) -> list[bool]:
        """Extend leases still held; False for each one that was lost (lapsed or released)."""
        if not leases:
            return []
        zset, tokens = self._semaphore_keys(name)[:2]
        args: list[Any] = [lease_ms, IDLE_TTL_SECONDS]
        for lease in leases:
            args += [lease.lease_id, lease.token]
        return [bool(x) for x in self._scripts.run("sem_renew", [zset, tokens], args)]

    def held(self, name: str) -> int:
        """Leases currently held (lapsed ones not counted)."""
        now_ms = self._redis_time_ms()
        return int(self._store.redis.zcount(self._semaphore_keys(name)[0], now_ms, "+inf"))

    def drop_semaphore(self, name: str) -> None:
        self._store.redis.delete(*self._semaphore_keys(name))

    # -- multi-locks -----------------------------------------------------------------------
    def _multilock_keys(self) -> list[str]:
        k = self._keys.multilocks
        return [k + ":holders", k + ":leases", k + ":tokens", self._keys.fencing, k + ":released"]

    @property
    def multilock_released(self) -> str:
        return self._multilock_keys()[4]

    def acquire_locks(
        self, names: list[str], needed: int, lease_id: str, lease_ms: int
    ) -> Lease | Wait:
        reply = self._scripts.run(
            "multilock_acquire", self._multilock_keys(), [lease_id, lease_ms, needed, *names]
        )
        token = int(reply[0])
        if token > 0:
            return Lease(lease_id, token, tuple(_text(n) for n in reply[1:]))
        return Wait(_text(reply[1]), max(1, int(_text(reply[2]))))

    def release_locks(self, lease: Lease) -> bool:
        holders, leases, tokens, _, released = self._multilock_keys()
        return bool(
            self._scripts.run(
                "multilock_release",
                [holders, leases, tokens, released],
                [lease.lease_id, lease.token, *lease.names],
            )
        )

    def renew_locks(self, leases: list[Lease], lease_ms: int) -> list[bool]:
        if not leases:
            return []
        _, zset, tokens, _, _ = self._multilock_keys()
        args: list[Any] = [lease_ms, 0]
        for lease in leases:
            args += [lease.lease_id, lease.token]
        return [bool(x) for x in self._scripts.run("sem_renew", [zset, tokens], args)]

    def locks_held(self, names: list[str]) -> list[bool]:
        """For each name, whether a live lease holds it."""
        if not names:
            return []
        holders, leases = self._multilock_keys()[:2]
        redis = self._store.redis
        owners = redis.hmget(holders, names)
        pipe = self._store.pipeline()
        pipe.time()
        for owner in owners:
            if owner is not None:
                pipe.zscore(leases, owner)
        (seconds, micros), *expiries = pipe.execute()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        found = iter(expiries)
        return [owner is not None and (next(found) or 0) >= now_ms for owner in owners]

    # -- queues ----------------------------------------------------------------------------
    def _queue_keys(self, name: str) -> list[str]:
        k = self._keys.queue(name)
        return [k, k + ":space"]

    def queue_space(self, name: str) -> str:
        return self._queue_keys(name)[1]

    def queue_limit(self, name: str, maxsize: int) -> int:
        """The queue's max size: the first creator's (0 for unbounded)."""
        pipe = self._store.pipeline()
        pipe.hsetnx(self._keys.queues, name, maxsize)
        pipe.hget(self._keys.queues, name)
        return int(pipe.execute()[1] or 0)

    def put(self, name: str, item: bytes, maxsize: int) -> Wait | None:
        """Append ``item``; a Wait (for space) when the queue is full."""
        reply = self._scripts.run("queue_put", self._queue_keys(name), [maxsize, item])
        if int(reply[0]) == 1:
            return None
        return Wait(_text(reply[1]), 0)

    def take(self, name: str, count: int) -> list[bytes]:
        """Up to ``count`` items from the head (all of them for ``count <= 0``), at once."""
        return list(self._scripts.run("queue_take", self._queue_keys(name), [count]))

    def put_back(self, name: str, items: list[bytes]) -> None:
        """Return ``items`` (taken, oldest first) to the head of the queue, in order."""
        if items:
            self._scripts.run("queue_putback", self._queue_keys(name)[:1], list(items))

    def take_blocking(self, name: str, timeout: float, bounded: bool = True) -> bytes | None:
        """One item, waiting up to ``timeout`` seconds for it (BLPOP: a blocking read);
        ``bounded``: wake the putters waiting for room (an unbounded queue has none)."""
        items, space = self._queue_keys(name)
        if self._store.url.startswith("fakeredis://"):  # no blocking pops there: look again
            deadline = time.monotonic() + timeout
            while True:
                got = self.take(name, 1)
                if got or time.monotonic() >= deadline:
                    return got[0] if got else None
                time.sleep(FAKE_WAIT_SECONDS)
        reply = self._store.redis.blpop([items], timeout=max(timeout, 0.001))
        if reply is None:
            return None
        if bounded:
            self._store.redis.xadd(space, {"m": 1}, maxlen=100, approximate=True)
        item: bytes = reply[1]
        return item

    def qsize(self, name: str) -> int:
        return int(self._store.redis.llen(self._queue_keys(name)[0]))

    def drop_queue(self, name: str) -> list[bytes]:
        """Delete the queue; returns the items it still held (their futures are released)."""
        items = self.take(name, 0)
        self._store.redis.delete(*self._queue_keys(name))
        self._store.redis.hdel(self._keys.queues, name)
        return items

    # -- watched values: variables and events ----------------------------------------------
    def _value_keys(self, kind: str, name: str) -> list[str]:
        k = self._keys.variable(name) if kind == "var" else self._keys.event(name)
        return [k, k + ":changes"]

    def value_changes(self, kind: str, name: str) -> str:
        return self._value_keys(kind, name)[1]

    def set_value(self, kind: str, name: str, value: bytes) -> bytes | None:
        """Set it and wake its waiters; returns the previous value."""
        old = self._scripts.run("value_set", self._value_keys(kind, name), [value])
        return old if isinstance(old, bytes) else None

    def delete_value(self, kind: str, name: str) -> bytes | None:
        old = self._scripts.run("value_set", self._value_keys(kind, name), [])
        return old if isinstance(old, bytes) else None

    def get_value(self, kind: str, name: str) -> bytes | Wait:
        """The value, or a Wait telling where to wait for it to be set."""
        found, value = self._scripts.run("value_get", self._value_keys(kind, name), [])
        if int(found):
            item: bytes = value
            return item
        return Wait(_text(value), 0)

    # -- datasets --------------------------------------------------------------------------
    def publish(self, name: str, value: bytes, override: bool) -> tuple[bool, bytes | None]:
        """``(published, the value it replaced)``; not published when ``name`` exists and
        ``override`` is not set."""
        done, old = self._scripts.run(
            "dataset_put", [self._keys.datasets], [name, value, "1" if override else "0"]
        )
        return bool(int(done)), old if isinstance(old, bytes) else None

    def datasets(self, names: list[str]) -> list[bytes | None]:
        """The encoded values of ``names`` (None for each one not published)."""
        if not names:
            return []
        return list(self._store.redis.hmget(self._keys.datasets, names))

    def dataset(self, name: str) -> bytes | None:
        value: bytes | None = self._store.redis.hget(self._keys.datasets, name)
        return value

    def unpublish(self, name: str) -> bytes | None:
        """Remove ``name``; returns what it held (None if it did not exist)."""
        pipe = self._store.pipeline()
        pipe.hget(self._keys.datasets, name)
        pipe.hdel(self._keys.datasets, name)
        old: bytes | None = pipe.execute()[0]
        return old

    def dataset_names(self) -> list[str]:
        return sorted(_text(n) for n in self._store.redis.hkeys(self._keys.datasets))

    # -- helpers ---------------------------------------------------------------------------
    def _redis_time_ms(self) -> int:
        seconds, micros = self._store.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000
