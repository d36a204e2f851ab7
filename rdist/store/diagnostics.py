"""The façades for what the diagnostics store: the profiler's batches, the spans' totals.

Workers append a :class:`~rdist.protocol.wire.ProfileBatch` about once a second while
tasks run (the stream is capped: a recent history); ``client.profile``, the performance
report and the dashboard read the batches of a time window back. Entry ids are Redis's
clock in milliseconds, so a window is read by id range (a little wider than asked: the
batches' own times, taken on the worker, decide).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from rdist.protocol.wire import MalformedMessage, ProfileBatch, SpanTotals
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


#: Spans kept in the ``spans`` index (the oldest are dropped past it; their totals expire).
SPANS_KEPT = 10_000
#: A span's totals expire this long after the last task added to them (seconds).
SPAN_TTL = 7 * 24 * 3600


class Spans:
    """``spans`` (sorted set: span id -> last update) and ``span:<id>`` (its totals)."""

    __slots__ = ("_store", "name")

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.name = store.keys.spans

    def add(
        self,
        ident: str,
        names: list[str],
        totals: tuple[int, int, float, int],
        now: float,
        pipe: Any,
    ) -> None:
        """Add ``(count, erred, duration, nbytes)`` of one report's runs to a span."""
        count, erred, duration, nbytes = totals
        key = self._store.keys.span(ident)
        pipe.hset(key, mapping={"name": json.dumps(names), "stop": repr(now)})
        pipe.hsetnx(key, "start", repr(now))
        pipe.hincrby(key, "count", count)
        if erred:
            pipe.hincrby(key, "erred", erred)
        pipe.hincrbyfloat(key, "duration", duration)
        pipe.hincrby(key, "nbytes", nbytes)
        pipe.expire(key, SPAN_TTL)
        pipe.zadd(self.name, {ident: now})

    def trim(self, pipe: Any) -> None:
        pipe.zremrangebyrank(self.name, 0, -(SPANS_KEPT + 1))

    def recent(self, since: float | None = None, count: int = SPANS_KEPT) -> list[str]:
        """Ids of the spans updated since ``since`` (epoch seconds), oldest first."""
        lower = "-inf" if since is None else since
        ids = self._store.redis.zrangebyscore(self.name, lower, "+inf", start=0, num=count)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def get_many(self, ids: list[str]) -> dict[str, SpanTotals]:
        """The totals of the spans that exist (and decode)."""
        if not ids:
            return {}
        pipe = self._store.pipeline()
        for ident in ids:
            pipe.hgetall(self._store.keys.span(ident))
        out = {}
        for ident, fields in zip(ids, pipe.execute()):
            if not fields:
                continue
            try:
                out[ident] = SpanTotals.from_fields(ident, fields)
            except MalformedMessage as exc:
                log.warning("span %s skipped: %s", ident, exc)
        return out
