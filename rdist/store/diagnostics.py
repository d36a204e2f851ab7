"""The façade for what the diagnostics store: the profiler's batches.

Workers append a :class:`~rdist.protocol.wire.ProfileBatch` about once a second while
tasks run (the stream is capped: a recent history); ``client.profile``, the performance
report and the dashboard read the batches of a time window back. Entry ids are Redis's
clock in milliseconds, so a window is read by id range (a little wider than asked: the
batches' own times, taken on the worker, decide).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rdist.protocol.wire import MalformedMessage, ProfileBatch
from rdist.store.keys import PAYLOAD_FIELD

if TYPE_CHECKING:
    from rdist.store.connection import RedisStore

log = logging.getLogger("rdist.store")

#: About this many batches are kept (one per worker and second of work: minutes of it).
PROFILE_MAXLEN = 3_000
#: A window is read this much wider on each side by entry id (clocks of hosts differ).
CLOCK_SLACK_MS = 5_000
#: At most this many entries are read for one window.
MAX_READ = 20_000


class Profiles:
    """``profile``: the sampling profiler's batches."""

    __slots__ = ("_store", "name")

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.name = store.keys.profile

    def add(self, batch: ProfileBatch, pipe: Any = None) -> None:
        target = pipe if pipe is not None else self._store.redis
        target.xadd(
            self.name, {PAYLOAD_FIELD: batch.encode()}, maxlen=PROFILE_MAXLEN, approximate=True
        )

    def between(
        self, start: float | None = None, stop: float | None = None, count: int = MAX_READ
    ) -> list[ProfileBatch]:
        """The batches overlapping ``[start, stop]`` (epoch seconds; None: unbounded),
        oldest first; entries that do not decode are skipped (and logged)."""
        lower = "-" if start is None else str(max(0, int(start * 1000) - CLOCK_SLACK_MS))
        upper = "+" if stop is None else str(int(stop * 1000) + CLOCK_SLACK_MS)
        entries = self._store.redis.xrevrange(self.name, max=upper, min=lower, count=count)
        out = []
        for entry_id, fields in reversed(entries):
            try:
                batch = ProfileBatch.decode(fields.get(PAYLOAD_FIELD), "profile")
            except MalformedMessage as exc:
                log.warning("profile entry %r skipped: %s", entry_id, exc)
                continue
            if (start is None or batch.stop >= start) and (stop is None or batch.start <= stop):
                out.append(batch)
        return out
