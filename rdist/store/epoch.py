"""The cluster epoch: how every process tells that Redis lost data.

The key ``epoch`` holds a random token. The scheduler sets one when it starts leading
and finds none -- Redis came back empty (a restart without persistence, ``FLUSHALL``) --
and sets a new one when it leads again after losing Redis while leading (a fail-over:
the promoted replica may miss the last writes). Workers and clients read it with their
heartbeats (:class:`EpochWatch`): when it changes, they re-announce what they hold and
re-submit what they wait for (``rdist.scheduler.reconcile``). A process only acts on a
*new* epoch, set after the scheduler rebuilt its state, so what it sends lands there.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rdist.store.connection import RedisStore

log = logging.getLogger("rdist.store")


class Epoch:
    """The ``epoch`` key of one cluster."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.key = store.keys.epoch

    def current(self) -> str | None:
        raw = self._store.redis.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw

    def read(self, pipe: Any) -> None:
        """Queue a read of the epoch on ``pipe`` (its reply: bytes or None)."""
        pipe.get(self.key)

    def begin(self, new: bool = False) -> tuple[str, bool]:
        """At the start of a leadership: the epoch, and whether it is a new one -- set
        when there is none (Redis lost everything) or when ``new`` (Redis failed while
        this scheduler led)."""
        token = secrets.token_hex(8)
        if new:
            self._store.redis.set(self.key, token)
            return token, True
        if self._store.redis.set(self.key, token, nx=True):
            return token, True
        return self.current() or token, False


class EpochWatch:
    """The epoch a process saw last; says once when a new one appears (pure).

    The first epoch a process sees after joining without one (it started before any
    scheduler led) counts as new too: it may have missed the change, and acting once
    more costs little (a re-announcement is idempotent). Processes read the epoch when
    they join, so this is rare."""

    def __init__(self) -> None:
        self.seen: str | None = None
        self.lost = False  #: the epoch vanished: a new one will follow

    def start(self, current: bytes | str | None) -> None:
        """The epoch as of joining: no news."""
        self.seen = _text(current)

    def changed(self, current: bytes | str | None) -> bool:
        """Whether ``current`` is an epoch other than the one this process saw."""
        current = _text(current)
        if current is None:
            self.lost = self.lost or self.seen is not None
            return False
        if current == self.seen:
            return False
        self.seen, self.lost = current, False
        return True


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
