"""``cluster.adapt()``: grow and shrink a cluster with its work (the shell around
:mod:`rdist.adaptive`).

:func:`measure` reads a :class:`~rdist.adaptive.Load` from Redis -- the task records
(or the dashboard's census of them), the worker records, and the recent task stream for
the task groups' durations -- and :class:`Adaptive` acts on the rule's answer every
``interval``, as dask's ``Adaptive``:

- more workers wanted: the cluster scales up at once (never past ``maximum``);
- fewer wanted ``wait_count`` times in a row: the workers that
  :func:`~rdist.adaptive.workers_to_close` picks are retired through
  ``client.retire_workers`` -- their results move to the workers that stay first, and
  their nannies do not replace them -- never below ``minimum``.

:func:`status` is what the dashboard serves (``/api/adaptive``; the target is also
``rdist_adaptive_target`` in ``/metrics``), for KEDA or an operator to scale on.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from typing import Any, Protocol

from rdist import adaptive
from rdist.protocol import taskstream, wire
from rdist.store import RedisStore
from rdist.store.keys import PAYLOAD_FIELD

log = logging.getLogger("rdist.adapt")

#: Task-stream entries read for the durations (each holds one batch of runs).
RECENT_ENTRIES = 200
#: Task states that wait for a thread on no worker.
READY_STATES = ("queued", "no-worker")
PRESENT = ("running", "paused")


def durations(store: RedisStore, entries: int = RECENT_ENTRIES) -> dict[str, float]:
    """Average seconds per task of each group, over the newest task-stream entries."""
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for _, fields in store.streams.before(store.keys.taskstream, "+", entries):
        for run in taskstream.decode_batch(fields.get(PAYLOAD_FIELD)):
            group = adaptive.group_name(run.key)
            total[group] += max(0.0, run.stop - run.start)
            count[group] += 1
    return {g: total[g] / count[g] for g in total}


def measure(store: RedisStore, census: dict[str, Any] | None = None) -> adaptive.Load:
    """The cluster's work now. ``census`` (the dashboard's sweep, see
    :mod:`rdist.web.census`) saves a scan of the tasks hash; without it the records are
    read here."""
    seconds = durations(store)
    records = {a: r for a, r in store.workers.all().items() if r.status in PRESENT}
    queued, processing = _counts(store, census)
    mean = sum(seconds.values()) / len(seconds) if seconds else adaptive.UNKNOWN_DURATION
    workers = tuple(
        adaptive.WorkerLoad(
            address,
            record.nthreads,
            record.memory_limit,
            record.stored_bytes,
            processing.get(address, 0),
            processing.get(address, 0) * mean,
        )
        for address, record in sorted(records.items())
    )
    return adaptive.Load(queued=queued, durations=seconds, workers=workers)


def _counts(
    store: RedisStore, census: dict[str, Any] | None
) -> tuple[dict[str, int], dict[str, int]]:
    """Ready tasks by group and processing tasks by worker."""
    if census is not None:
        queued = {
            g["name"]: n
            for g in census.get("groups", [])
            if (n := sum(int(g.get(s, 0)) for s in READY_STATES))
        }
        return queued, {w: int(n) for w, n in census.get("processing", {}).items()}
    queued_count: dict[str, int] = defaultdict(int)
    processing: dict[str, int] = defaultdict(int)
    for key, record in store.tasks.all():
        if not isinstance(record, wire.TaskRecord):
            continue
        if record.state in READY_STATES:
            queued_count[adaptive.group_name(key)] += 1
        elif record.state == "processing" and record.processing_on:
            processing[record.processing_on] += 1
    return dict(queued_count), dict(processing)


def status(store: RedisStore, census: dict[str, Any] | None = None) -> dict[str, Any]:
    """The adaptive target and what it was computed from (the dashboard's JSON)."""
    load = measure(store, census)
    return {
        "adaptive_target": adaptive.adaptive_target(load),
        "workers": len(load.workers),
        "queued": sum(load.queued.values()),
        "processing": sum(w.processing for w in load.workers),
        "durations": {g: round(s, 6) for g, s in sorted(load.durations.items())},
    }


def exposition(target: int) -> str:
    """The ``/metrics`` lines of the adaptive target (Prometheus text format)."""
    return (
        "# HELP rdist_adaptive_target Workers the current work wants (dask's adaptive_target)\n"
        "# TYPE rdist_adaptive_target gauge\n"
        f"rdist_adaptive_target {int(target)}\n"
    )


class Scalable(Protocol):
    """What :class:`Adaptive` needs of a cluster."""

    redis_url: str
    cluster_name: str

    def scale_up(self, n: int) -> None: ...

    def retire(self, addresses: list[str]) -> None: ...

    def worker_addresses(self) -> dict[str, str]: ...


class Adaptive:
    """Keeps a cluster's size at the adaptive target, within ``minimum``..``maximum``
    (dask's ``Adaptive``: ``stop()`` ends it; ``cluster.adapt()`` again replaces it)."""

    def __init__(
        self,
        cluster: Scalable,
        store: RedisStore,
        minimum: int = 0,
        maximum: float = math.inf,
        interval: float = 1.0,
        wait_count: int = 3,
        target_duration: float = adaptive.TARGET_DURATION,
    ) -> None:
        if maximum < minimum:
            raise ValueError(f"adapt: maximum ({maximum}) is below minimum ({minimum})")
        self.cluster = cluster
        self.store = store
        self.minimum = int(minimum)
        self.maximum = maximum
        self.interval = float(interval)
        self.wait_count = max(1, int(wait_count))
        self.target_duration = float(target_duration)
        self.log: list[tuple[str, int]] = []  #: ("up" | "down", workers after), for tests
        self._downs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rdist-adapt", daemon=True)
        self._thread.start()

    def target(self, load: adaptive.Load) -> int:
        """The rule's answer, clamped to ``minimum``..``maximum``."""
        wanted = adaptive.adaptive_target(load, self.target_duration)
        return int(max(self.minimum, min(self.maximum, wanted)))

    def step(self) -> None:
        """One decision: measure, compare, act."""
        load = measure(self.store)
        present = len(load.workers)
        target = self.target(load)
        if target > present:
            self._downs = 0
            self.cluster.scale_up(target)  # workers still starting count as there
            self.log.append(("up", target))
        elif target < present:
            self._downs += 1
            if self._downs >= self.wait_count:
                self._downs = 0
                self._scale_down(load, target)
        else:
            self._downs = 0

    def _scale_down(self, load: adaptive.Load, target: int) -> None:
        closing = adaptive.workers_to_close(load, max(target, self.minimum))
        if closing:
            self.cluster.retire(closing)
            self.log.append(("down", len(load.workers) - len(closing)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception:  # one failed decision must not end adapting
                log.exception("adapt: a scaling decision failed; trying again")

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)
        self.store.close()
