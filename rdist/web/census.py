"""Counts of tasks by state, task group and worker, swept from the ``tasks`` hash in slices.

The scheduler keeps no counters in Redis, so the dashboard counts for itself. A full HSCAN
of a million records takes seconds, so a sweep advances a bounded number of records per
call and readers see the last *complete* sweep (plus how far the current one got). Memory
stays bounded: counters only, with at most ``MAX_GROUPS`` task groups.

Totals agree across pages: every answer carries the exact count of records now (HLEN, the
number ``/api/tasks`` gives too) as ``total``, and the sweep's own count as ``counted``;
``stale`` says they differ (records came or went since the sweep began). A hash of at
most ``EXACT_AT_ONCE`` records is swept at once whenever the two differ, so a cluster
that forgot a killed client's 400k tasks shows zero at once, not the old count for a
minute; a bigger one says "recounting" until the feed's sweep catches up.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from rdist.protocol import wire
from rdist.store import RedisStore
from rdist.web.queries import STATES, key_group

MAX_GROUPS = 200
#: Clients followed one by one, and the keys each wants that are kept (the roots its
#: graphs are walked from, see ``explore.clients``).
MAX_CLIENTS = 50
MAX_CLIENT_KEYS = 500
#: Groups past ``MAX_GROUPS`` are counted under this name.
OTHER_GROUP = "(other groups)"
SLICE = 1_000
#: A hash this small is counted exactly whenever its count changed (a few milliseconds).
EXACT_AT_ONCE = 2_000
#: The live feed keeps sweeping while someone read the counts this recently.
READERS_SECONDS = 60.0


@dataclass
class Counts:
    by_state: Counter[str] = field(default_factory=Counter)
    groups: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    processing: Counter[str] = field(default_factory=Counter)  #: worker -> tasks assigned
    #: client -> how many tasks it wants, and up to ``MAX_CLIENT_KEYS`` of their keys
    wanted: Counter[str] = field(default_factory=Counter)
    client_keys: dict[str, list[str]] = field(default_factory=dict)
    memory_bytes: int = 0
    scanned: int = 0

    def add(self, key: str, record: wire.TaskRecord | wire.TaskSummary) -> None:
        state = record.state
        self.by_state[state] += 1
        group = key_group(key)
        if group not in self.groups and len(self.groups) >= MAX_GROUPS:
            group = OTHER_GROUP
        self.groups[group][state] += 1
        if state == "processing" and record.processing_on:
            self.processing[record.processing_on] += 1
        if state == "memory":
            self.memory_bytes += record.nbytes
        for client in record.who_wants:
            self._count_client(client, key)
        self.scanned += 1

    def _count_client(self, client: str, key: str) -> None:
        if client not in self.wanted and len(self.wanted) >= MAX_CLIENTS:
            return
        self.wanted[client] += 1
        keys = self.client_keys.setdefault(client, [])
        if len(keys) < MAX_CLIENT_KEYS:
            keys.append(key)

    def to_json(self) -> dict[str, Any]:
        groups = sorted(self.groups.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        return {
            "by_state": {s: self.by_state.get(s, 0) for s in STATES} | dict(self.by_state),
            "groups": [
                {"name": name, "total": sum(c.values()), **{s: c.get(s, 0) for s in STATES}}
                for name, c in groups
            ],
            "processing": dict(self.processing),
            "memory_bytes": self.memory_bytes,
            "total": self.scanned,
        }


class TaskCensus:
    """Sweeps the tasks hash in slices; thread-safe (the live feed and requests share it).

    With a live feed running (``background``), only the feed sweeps -- once per tick,
    while someone read the counts in the last ``READERS_SECONDS`` -- and a request only
    reads the last complete counts: no page waits for a slice of a million records. An
    app without a feed (tests, ``create_app`` alone) sweeps on request as it always did.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  #: guards the published counts
        self._sweep = threading.Lock()  #: guards the sweep under way (cursor, partial)
        self._cursor = 0
        self._partial = Counts()
        self._done: Counts | None = None
        self.completed_at = 0.0
        self.background = False  #: the live feed sweeps; requests only read
        self.last_read = 0.0

    def advance(self, store: RedisStore, budget: int = 20_000) -> bool:
        """Scan up to ``budget`` records; True when this call completed a sweep."""
        with self._sweep:
            scanned = 0
            while scanned < budget:
                # records that do not decode are skipped (and logged) by the façade
                self._cursor, chunk = store.tasks.scan_summaries(self._cursor, count=SLICE)
                for key, summary in chunk:
                    self._partial.add(key, summary)
                scanned += max(len(chunk), 1)
                if self._cursor == 0:
                    with self._lock:
                        self._done, self._partial = self._partial, Counts()
                        self.completed_at = time.time()
                    return True
            return False

    def restart(self) -> None:
        """Drop the sweep under way: the next :meth:`advance` starts from the beginning."""
        with self._sweep:
            self._cursor, self._partial = 0, Counts()

    def read_recently(self, now: float) -> bool:
        return now - self.last_read <= READERS_SECONDS

    def snapshot(
        self, store: RedisStore, max_age: float = 1.0, budget: int = 20_000
    ) -> dict[str, Any]:
        """The latest complete counts, advancing the sweep when they are older than
        ``max_age`` (unless the live feed sweeps), and at once for a small hash."""
        total = store.tasks.count()
        self.last_read = time.time()
        done = self._done
        if total <= min(EXACT_AT_ONCE, budget) and (done is None or done.scanned != total):
            self.restart()  # small enough to count exactly now
            self.advance(store, budget)
        elif not self.background and time.time() - self.completed_at >= max_age:
            self.advance(store, budget)
        with self._lock:
            done, completed_at = self._done, self._completed_at_or_none()
        out = done.to_json() if done is not None else Counts().to_json()  # done: never mutated
        out["counted"] = out["total"]
        out["total"] = total
        out["stale"] = done is None or done.scanned != total
        out["complete"] = done is not None
        out["age"] = round(time.time() - completed_at, 3) if completed_at is not None else None
        out["sweep_progress"] = self._partial.scanned
        return out

    def _completed_at_or_none(self) -> float | None:
        return self.completed_at if self._done is not None else None

    def clients(self, store: RedisStore, max_age: float = 1.0) -> dict[str, Any]:
        """Per client: how many tasks it wants and (some of) their keys, from the same
        sweep as :meth:`snapshot`."""
        self.snapshot(store, max_age)
        with self._lock:
            done = self._done
        if done is None:
            return {"wanted": {}, "keys": {}, "complete": False}
        return {
            "wanted": dict(done.wanted),
            "keys": {c: list(k) for c, k in done.client_keys.items()},
            "complete": True,
        }
