"""Counts of tasks by state, task group and worker, swept from the ``tasks`` hash in slices.

The scheduler keeps no counters in Redis, so the dashboard counts for itself. A full HSCAN
of a million records takes seconds, so a sweep advances a bounded number of records per
call and readers see the last *complete* sweep (plus how far the current one got). Memory
stays bounded: counters only, with at most ``MAX_GROUPS`` task groups.
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
#: Groups past ``MAX_GROUPS`` are counted under this name.
OTHER_GROUP = "(other groups)"
SLICE = 1_000


@dataclass
class Counts:
    by_state: Counter[str] = field(default_factory=Counter)
    groups: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    processing: Counter[str] = field(default_factory=Counter)  #: worker -> tasks assigned
    memory_bytes: int = 0
    scanned: int = 0

    def add(self, key: str, record: wire.TaskRecord) -> None:
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
        self.scanned += 1

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
    """Sweeps the tasks hash in slices; thread-safe (the live feed and requests share it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor = 0
        self._partial = Counts()
        self._done: Counts | None = None
        self.completed_at = 0.0

    def advance(self, store: RedisStore, budget: int = 20_000) -> bool:
        """Scan up to ``budget`` records; True when this call completed a sweep."""
        with self._lock:
            scanned = 0
            while scanned < budget:
                # records that do not decode are skipped (and logged) by the façade
                self._cursor, chunk = store.tasks.scan(self._cursor, count=SLICE)
                for key, record in chunk.items():
                    self._partial.add(key, record)
                scanned += max(len(chunk), 1)
                if self._cursor == 0:
                    self._done, self._partial = self._partial, Counts()
                    self.completed_at = time.time()
                    return True
            return False

    def snapshot(
        self, store: RedisStore, max_age: float = 1.0, budget: int = 20_000
    ) -> dict[str, Any]:
        """The latest complete counts, advancing the sweep when they are older than ``max_age``."""
        if time.time() - self.completed_at >= max_age:
            self.advance(store, budget)
        with self._lock:
            done = self._done
            out = done.to_json() if done is not None else self._partial.to_json()
            out["complete"] = done is not None
            out["age"] = round(time.time() - self.completed_at, 3) if done is not None else None
            out["sweep_progress"] = self._partial.scanned
            return out
