"""How many workers the work wants: dask's ``adaptive_target``, as pure functions.

No Redis, no clock: a :class:`Load` snapshot comes in (tasks waiting for a thread, per
task group; the workers with what they process and hold; the task groups' durations), a
number or a list of workers comes out. :mod:`rdist.adapt` measures the snapshot from
Redis and acts on the answer (``cluster.adapt``); the dashboard serves the same number
(``/api/adaptive``, ``rdist_adaptive_target`` in ``/metrics``) for KEDA or an operator.

The rule is dask's scheduler's:

- **CPU**: the expected seconds of work -- the queued tasks (the first 100 counted, the
  rest extrapolated) plus what the workers are processing -- divided by the target
  duration (``5 s``: "finish what is there within five seconds") is the number of threads
  wanted; a few long tasks do not ask for more threads than there are tasks; threads
  become workers at the cluster's threads per worker;
- **memory**: when the workers hold more than 60 % of their memory limits, twice the
  workers;
- the larger of the two wins; below the present number, the cluster shrinks only by the
  workers :func:`workers_to_close` finds idle and cheap to retire.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: dask's ``distributed.adaptive.target-duration``: finish the work there is in this long.
TARGET_DURATION = 5.0
#: The expected duration of a task of a group never seen to finish (dask's default).
UNKNOWN_DURATION = 0.5
#: Queued tasks counted one by one; the rest are extrapolated from these.
SAMPLE = 100
#: Memory pressure: more workers when this fraction of the memory limits is used.
MEMORY_PRESSURE = 0.6
#: Workers retired on scale-down keep this many times the data's bytes in memory limits.
MEMORY_RATIO = 2.0


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """One worker as the adaptive rule sees it."""

    address: str
    nthreads: int = 1
    memory_limit: int = 0  #: bytes (0: no limit)
    nbytes: int = 0  #: bytes of results it holds
    processing: int = 0  #: tasks assigned to it and not finished
    occupancy: float = 0.0  #: expected seconds of the work assigned to it


@dataclass(frozen=True, slots=True)
class Load:
    """A snapshot of the cluster's work."""

    #: task group -> tasks ready to run but on no worker (queued, or no worker fits)
    queued: dict[str, int] = field(default_factory=dict)
    #: task group -> average seconds per task, of the tasks seen to finish
    durations: dict[str, float] = field(default_factory=dict)
    workers: tuple[WorkerLoad, ...] = ()


def group_name(key: str) -> str:
    """A key's task group, as dask's ``key_split``: ``"inc-3f2a.."`` -> ``"inc"``, a dask
    key ``"('x', 1)"`` (its wire name) -> ``"x"``; hash-like and numeric parts dropped."""
    text = key.strip()
    if text.startswith("(") and "," in text:
        text = text[1:].split(",", 1)[0].strip(" '\"")
    words = []
    for word in text.split("-"):
        if word.isdigit() or (len(word) >= 8 and all(c in "0123456789abcdef" for c in word)):
            break
        words.append(word)
    return "-".join(words) or text


def duration(load: Load, group: str) -> float:
    return load.durations.get(group, UNKNOWN_DURATION)


def queued_occupancy(load: Load) -> float:
    """Expected seconds of the queued work: the first :data:`SAMPLE` tasks counted by
    their group's duration, scaled up to all of them (as dask samples its queue)."""
    total = sum(load.queued.values())
    if total == 0:
        return 0.0
    seconds, counted = 0.0, 0
    for group, n in sorted(load.queued.items()):
        take = min(n, SAMPLE - counted)
        if take <= 0:
            break
        seconds += take * duration(load, group)
        counted += take
    return seconds * (total / counted) if total > SAMPLE else seconds


def cpu_target(load: Load, target_duration: float = TARGET_DURATION) -> int:
    """Workers the expected work needs to finish within ``target_duration``."""
    ready = sum(load.queued.values())
    busy = sum(w.occupancy for w in load.workers)
    threads = math.ceil((busy + queued_occupancy(load)) / max(target_duration, 1e-9))
    tasks = ready + sum(w.processing for w in load.workers)
    threads = min(threads, tasks)  # a few long tasks ask for no more threads than tasks
    if load.workers:
        nthreads = sum(max(1, w.nthreads) for w in load.workers)
        workers = math.ceil(threads / nthreads * len(load.workers))
    else:
        workers = threads  # one thread per worker, until one is seen
    if ready and not load.workers:
        workers = max(1, workers)
    return workers


def memory_target(load: Load) -> int:
    limit = sum(w.memory_limit for w in load.workers)
    used = sum(w.nbytes for w in load.workers)
    if limit > 0 and used > MEMORY_PRESSURE * limit:
        return 2 * len(load.workers)
    return 0


def adaptive_target(load: Load, target_duration: float = TARGET_DURATION) -> int:
    """The number of workers the work wants now (dask's ``Scheduler.adaptive_target``)."""
    target = max(cpu_target(load, target_duration), memory_target(load))
    if target >= len(load.workers):
        return target
    return len(load.workers) - len(workers_to_close(load, target))


def workers_to_close(
    load: Load, target: int | None = None, memory_ratio: float = MEMORY_RATIO
) -> list[str]:
    """Workers that can leave cheaply, as dask's ``workers_to_close``: idle ones (nothing
    processing), those holding the fewest bytes first, while the others keep at least
    ``memory_ratio`` times the data in memory limits, and no more than bring the cluster
    down to ``target``. Without a target one worker stays (``client.retire_workers()``);
    with ``target=0`` an idle cluster holding no data may go (``adapt(minimum=0)``), one
    holding data keeps a worker for it."""
    workers = sorted(load.workers, key=lambda w: (w.nbytes, w.address))
    limit = sum(w.memory_limit for w in workers)
    data = sum(w.nbytes for w in workers)
    floor = 1 if target is None else max(0, target)
    most = len(workers) - max(floor, 1 if data else 0)
    out: list[str] = []
    for w in workers:
        if len(out) >= most:
            break
        if w.processing:
            continue
        if limit and data and limit - w.memory_limit < memory_ratio * data:
            continue  # the others could not hold the data comfortably
        limit -= w.memory_limit
        out.append(w.address)
    return out
