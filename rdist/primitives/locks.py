"""``Semaphore``, ``Lock`` and ``MultiLock`` (as dask.distributed's), with leases in Redis.

A lease lives in Redis with a time to live; the :class:`LeaseKeeper` of the holder's
process renews it while the process lives. A holder that dies (SIGKILL) stops renewing,
so its leases lapse after ``lease_timeout`` seconds and waiters take them; should such a
holder come back and release late, Redis refuses (its lease id is no longer there), so it
never frees a lease somebody else holds now. Every lease carries a fencing token that grows
with each acquisition of the semaphore: hand it to an external resource to refuse writes
from a holder whose lease lapsed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
import weakref
from typing import Any

from rdist.primitives.base import Primitive
from rdist.store.primitives import Lease, Primitives, Wait
from rdist.timeouts import seconds

log = logging.getLogger("rdist.primitives")

#: dask's ``distributed.scheduler.locks.lease-timeout`` default
DEFAULT_LEASE_TIMEOUT = 30.0
#: a wait for a release is cut this short at most, so that a lapse (which nothing
#: announces) is noticed within the lapsing lease's own expiry
MAX_WAIT_SLICE = 60.0


class LeaseKeeper:
    """Renews the leases one process holds through one store, from one daemon thread.

    It refers to its store weakly: a keeper must not keep a closed client's store alive
    (the Lock objects holding leases do, for as long as they hold them)."""

    _keepers: weakref.WeakKeyDictionary[Primitives, LeaseKeeper] = weakref.WeakKeyDictionary()
    _keepers_lock = threading.Lock()

    @classmethod
    def of(cls, primitives: Primitives) -> LeaseKeeper:
        with cls._keepers_lock:
            keeper = cls._keepers.get(primitives)
            if keeper is None:
                keeper = cls._keepers[primitives] = cls(primitives)
            return keeper

    def __init__(self, primitives: Primitives) -> None:
        self._store_ref = weakref.ref(primitives)
        self._lock = threading.Condition()
        #: (semaphore name or None for multi-locks) -> lease id -> (lease, its timeout in ms)
        self._held: dict[str | None, dict[str, tuple[Lease, int]]] = {}
        self.lost: set[str] = set()  #: lease ids found lapsed when renewing
        self._thread: threading.Thread | None = None

    def add(self, name: str | None, lease: Lease, lease_ms: int) -> None:
        with self._lock:
            self._held.setdefault(name, {})[lease.lease_id] = (lease, lease_ms)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="rdist-leases", daemon=True)
                self._thread.start()
            self._lock.notify()

    def remove(self, name: str | None, lease: Lease) -> None:
        with self._lock:
            self._held.get(name, {}).pop(lease.lease_id, None)
            self.lost.discard(lease.lease_id)

    def _interval(self) -> float:
        timeouts = [ms for leases in self._held.values() for _, ms in leases.values()]
        return min(timeouts) / 3000 if timeouts else math.inf

    def _run(self) -> None:
        while True:
            with self._lock:
                interval = self._interval()
                if interval == math.inf:
                    self._thread = None
                    return
                self._lock.wait(interval)
                batch = {
                    name: list(leases.values()) for name, leases in self._held.items() if leases
                }
            for name, leases in batch.items():
                self._renew(name, leases)

    def _renew(self, name: str | None, leases: list[tuple[Lease, int]]) -> None:
        lease_ms = min(ms for _, ms in leases)
        primitives = self._store_ref()
        if primitives is None:  # nothing holding a lease is left
            return
        try:
            if name is None:
                kept = primitives.renew_locks([lease for lease, _ in leases], lease_ms)
            else:
                kept = primitives.renew(name, [lease for lease, _ in leases], lease_ms)
        except Exception as exc:  # Redis away: the next round tries again, leases may lapse
            log.warning(
                "could not renew %d leases of %s: %s", len(leases), name or "multi-locks", exc
            )
            return
        with self._lock:
            for (lease, _), ok in zip(leases, kept):
                if not ok and self._held.get(name, {}).pop(lease.lease_id, None) is not None:
                    log.warning("the lease of %s lapsed before it was renewed", name or lease.names)
                    self.lost.add(lease.lease_id)


def _lease_ms(lease_timeout: Any) -> int:
    timeout = seconds(lease_timeout, "lease_timeout")
    timeout = DEFAULT_LEASE_TIMEOUT if timeout is None else timeout
    if not timeout > 0:
        raise ValueError(f"lease_timeout must be a positive duration, not {lease_timeout!r}")
    return max(1, int(timeout * 1000)) if math.isfinite(timeout) else 10**13


def _deadline(blocking: bool, timeout: Any) -> float:
    """When to give up: at once when not ``blocking``, never for no ``timeout`` (seconds,
    or text like ``"200ms"``)."""
    if not blocking:
        if timeout is not None:
            raise ValueError("can't specify a timeout for a non-blocking call")
        return time.monotonic()
    limit = seconds(timeout)
    return math.inf if limit is None else time.monotonic() + limit


class Semaphore(Primitive):
    """At most ``max_leases`` holders at a time across the cluster (``distributed.Semaphore``)."""

    def __init__(
        self,
        max_leases: int = 1,
        name: str | None = None,
        register: bool = True,
        scheduler_rpc: Any = None,
        loop: Any = None,
        client: Any = None,
        lease_timeout: float | None = None,
    ) -> None:
        if not isinstance(max_leases, int) or isinstance(max_leases, bool) or max_leases < 1:
            raise ValueError(f"max_leases must be a positive integer, not {max_leases!r}")
        super().__init__(name or f"semaphore-{uuid.uuid4().hex}", client)
        self.max_leases = max_leases
        self.lease_timeout = lease_timeout
        self._lease_ms = _lease_ms(lease_timeout)
        self._leases: list[Lease] = []
        self._keeper = LeaseKeeper.of(self._primitives)

    def __reduce__(self) -> Any:
        return (type(self)._rebuilt, (self.max_leases, self.name, self.lease_timeout))

    @classmethod
    def _rebuilt(cls, max_leases: int, name: str, lease_timeout: float | None) -> Semaphore:
        return cls(max_leases, name, lease_timeout=lease_timeout)

    def acquire(self, timeout: Any = None, blocking: bool = True) -> bool:
        """Take a lease, waiting up to ``timeout`` (seconds, or text like ``"1s"``); True
        when taken."""
        deadline = _deadline(blocking, timeout)
        lease_id = uuid.uuid4().hex
        while True:
            got = self._primitives.acquire(self.name, lease_id, self.max_leases, self._lease_ms)
            if isinstance(got, Lease):
                self._leases.append(got)
                self._keeper.add(self.name, got, self._lease_ms)
                return True
            if not self._wait(got, deadline, self._primitives.semaphore_released(self.name)):
                return False

    def _wait(self, wait: Wait, deadline: float, stream: str) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._primitives.wait_after(
            stream, wait.after, min(remaining, wait.max_ms / 1000, MAX_WAIT_SLICE)
        )
        return True

    def release(self) -> bool:
        """Give the oldest lease back; False when it had lapsed meanwhile (taken by nobody
        else through us: Redis refuses a stale release)."""
        if not self._leases:
            raise RuntimeError(
                f"{type(self).__name__} {self.name!r}: released more often than acquired"
            )
        lease = self._leases.pop(0)
        self._keeper.remove(self.name, lease)
        released = self._primitives.release(self.name, lease)
        if not released:
            log.warning(
                "%s %r: the lease had lapsed before its release", type(self).__name__, self.name
            )
        return released

    def get_value(self) -> int:
        """How many leases are held now (by anyone)."""
        return self._primitives.held(self.name)

    def close(self) -> None:
        """Forget the semaphore (every holder's leases with it)."""
        for lease in self._leases:
            self._keeper.remove(self.name, lease)
        self._leases = []
        self._primitives.drop_semaphore(self.name)

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name} max_leases={self.max_leases}>"


class Lock(Semaphore):
    """A cluster-wide mutex (``distributed.Lock``): a semaphore of one lease."""

    def __init__(
        self,
        name: str | None = None,
        client: Any = None,
        scheduler_rpc: Any = None,
        loop: Any = None,
        lease_timeout: float | None = None,
    ) -> None:
        super().__init__(
            1, name or f"lock-{uuid.uuid4().hex}", client=client, lease_timeout=lease_timeout
        )

    def __reduce__(self) -> Any:
        return (Lock, (self.name, None, None, None, self.lease_timeout))

    def acquire(self, blocking: bool = True, timeout: Any = None) -> bool:  # type: ignore[override]
        """As ``threading.Lock.acquire`` (not re-entrant: a second acquire through the same
        object waits like anybody else's); ``timeout`` in seconds or text like ``"1s"``;
        True when taken."""
        return super().acquire(timeout=timeout, blocking=blocking)

    def release(self) -> bool:
        if not self._leases:
            raise ValueError(f"Lock {self.name!r} is not yet acquired")
        return super().release()

    def locked(self) -> bool:
        return self.get_value() > 0

    def __enter__(self) -> Lock:
        self.acquire()
        return self


class MultiLock(Primitive):
    """Several named locks taken together, all (or ``num_locks``) or none (as dask's)."""

    def __init__(
        self,
        names: list[str] | tuple[str, ...] = (),
        client: Any = None,
        lease_timeout: float | None = None,
    ) -> None:
        names = list(dict.fromkeys(names))  # a name given twice is one lock
        if not all(isinstance(n, str) and n for n in names):
            raise TypeError(f"MultiLock names must be non-empty strings, not {names!r}")
        super().__init__("multilock", client)
        self.names = names
        self.lease_timeout = lease_timeout
        self._lease_ms = _lease_ms(lease_timeout)
        self._lease: Lease | None = None
        self._keeper = LeaseKeeper.of(self._primitives)

    def __reduce__(self) -> Any:
        return (MultiLock, (self.names, None, self.lease_timeout))

    def acquire(
        self, blocking: bool = True, timeout: Any = None, num_locks: int | None = None
    ) -> bool:
        """Take ``num_locks`` of the names (default all) at once, waiting up to ``timeout``
        (seconds, or text like ``"1s"``); True when taken."""
        if self._lease is not None:
            raise RuntimeError(f"MultiLock {self.names} is already held by this object")
        needed = len(self.names) if num_locks is None else num_locks
        if not 0 <= needed <= len(self.names):
            raise ValueError(
                f"num_locks must be between 0 and {len(self.names)}, not {num_locks!r}"
            )
        deadline = _deadline(blocking, timeout)
        lease_id = uuid.uuid4().hex
        while True:
            got = self._primitives.acquire_locks(self.names, needed, lease_id, self._lease_ms)
            if isinstance(got, Lease):
                self._lease = got
                self._keeper.add(None, got, self._lease_ms)
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            slice_ = min(remaining, got.max_ms / 1000, MAX_WAIT_SLICE)
            self._primitives.wait_after(self._primitives.multilock_released, got.after, slice_)

    def release(self) -> bool:
        if self._lease is None:
            raise ValueError(f"MultiLock {self.names} is not yet acquired")
        lease, self._lease = self._lease, None
        self._keeper.remove(None, lease)
        return self._primitives.release_locks(lease)

    def locked(self) -> bool:
        """Whether any of the names is held now (by anyone)."""
        return any(self._primitives.locks_held(self.names))

    def __enter__(self) -> MultiLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<MultiLock: {self.names}>"
