"""The dashboard's memory of the last minutes: capped time series kept in the web process.

Every chart (tasks/s, memory, CPU, network, disk; the cluster's and each worker's) starts
with the last ``RETENTION`` seconds on page load instead of an empty line. The live feed
samples once per interval from what it reads anyway (the workers hash, the task-stream
rate), so history costs Redis nothing more and the scheduler nothing at all. Memory is
bounded: ``RETENTION / interval`` points (at most ``MAX_POINTS``) per series, at most
``MAX_WORKERS`` workers, each point a tuple of numbers.

Network and disk arrive as cumulative counters on the worker records; a series holds
their rates (bytes per second between two samples of the same worker).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

#: Seconds of history kept (the issue asks for at least ten minutes).
RETENTION = 15 * 60.0
MAX_POINTS = 1_800
MAX_WORKERS = 256

#: Fields of a cluster point, in order.
CLUSTER_FIELDS = (
    "time",
    "rate",
    "memory",
    "memory_limit",
    "managed",
    "spilled",
    "cpu",
    "executing",
    "net_sent",
    "net_recv",
    "disk_read",
    "disk_write",
)
#: Fields of a worker point, in order.
WORKER_FIELDS = (
    "time",
    "memory",
    "managed",
    "spilled",
    "cpu",
    "executing",
    "net_sent",
    "net_recv",
    "disk_read",
    "disk_write",
)
COUNTERS = ("net_sent", "net_recv", "disk_read", "disk_write")


def _number(info: dict[str, Any], field: str) -> float:
    try:
        return float(info.get(field) or 0)
    except (TypeError, ValueError):
        return 0.0


class History:
    """Time series of the cluster and of each worker; thread-safe (feed writes, requests read)."""

    def __init__(self, interval: float = 1.0, retention: float = RETENTION) -> None:
        self.retention = retention
        self.points = max(2, min(MAX_POINTS, int(retention / max(interval, 0.1)) + 1))
        self._lock = threading.Lock()
        self._cluster: deque[tuple[float, ...]] = deque(maxlen=self.points)
        self._workers: dict[str, deque[tuple[float, ...]]] = {}
        self._names: dict[str, str] = {}
        #: worker -> (time, counters) of its previous sample, for rates
        self._counters: dict[str, tuple[float, tuple[float, ...]]] = {}

    def rates(self, address: str, now: float, info: dict[str, Any]) -> tuple[float, ...]:
        """Bytes per second of each counter since this worker's previous sample."""
        current = tuple(_number(info, c) for c in COUNTERS)
        previous = self._counters.get(address)
        self._counters[address] = (now, current)
        if previous is None or now <= previous[0]:
            return (0.0,) * len(COUNTERS)
        elapsed = now - previous[0]
        # a restarted worker starts its counters again: no negative rate
        return tuple(max(0.0, (c - p) / elapsed) for c, p in zip(current, previous[1]))

    def sample(self, now: float, workers: list[dict[str, Any]], rate: float) -> None:
        """One point for the cluster and one per worker (``workers``: queries.workers rows)."""
        with self._lock:
            totals = [0.0] * (len(CLUSTER_FIELDS) - 2)
            hosts: set[str] = set()
            for info in workers:
                address = str(info.get("address", ""))
                if address not in self._workers and len(self._workers) >= MAX_WORKERS:
                    continue
                point = self._worker_point(address, now, info)
                part = _cluster_part(info, point)
                host = str(info.get("host") or address)
                if host in hosts:  # the network counters are the host's: count them once
                    part = part[:6] + (0.0, 0.0) + part[8:]
                hosts.add(host)
                totals = [t + v for t, v in zip(totals, part)]
            self._cluster.append((round(now, 3), float(rate), *totals))
            self._forget_old(now)

    def backfill(
        self, beats: list[dict[str, Any]], records: dict[str, dict[str, Any]], interval: float
    ) -> int:
        """Points from before this process started, rebuilt from the capped ``heartbeats``
        stream (``beats``: heartbeat fields, any order; ``records``: the workers' current
        rows, for names, hosts and limits). Beats are grouped by ``interval``; tasks/s comes
        from the change of each worker's ``executed`` count. Returns the points added."""
        buckets: dict[float, dict[str, dict[str, Any]]] = {}
        step = max(interval, 1.0)  # workers beat once a second
        for beat in beats:
            moment = (float(beat.get("last_seen") or 0) // step) * step
            if moment > 0:
                buckets.setdefault(moment, {})[str(beat["worker"])] = beat
        executed: dict[str, tuple[float, float]] = {}
        latest: dict[str, tuple[float, dict[str, Any]]] = {}
        added = 0
        for moment in sorted(buckets):
            for address, beat in buckets[moment].items():
                latest[address] = (moment, beat)
            # a worker whose beat fell in the next bucket keeps its last one a moment, so
            # the cluster's sums do not dip between workers' beats
            current = {a: b for a, (m, b) in latest.items() if moment - m <= 3 * step}
            rows, finished = [], 0.0
            for address, beat in current.items():
                known = records.get(address, {})
                rows.append({**beat, **{k: known.get(k) for k in ("name", "host", "memory_limit")}})
                rows[-1]["address"] = address
            for address, beat in buckets[moment].items():  # rates from fresh beats only
                count = float(beat.get("executed") or 0)
                before = executed.get(address)
                if before is not None and moment > before[0] and count >= before[1]:
                    finished += (count - before[1]) / (moment - before[0])
                executed[address] = (moment, count)
            self.sample(moment, rows, round(finished, 2))
            added += 1
        return added

    def _worker_point(self, address: str, now: float, info: dict[str, Any]) -> tuple[float, ...]:
        rates = self.rates(address, now, info)
        memory = _number(info, "memory")
        managed = min(memory, _number(info, "stored_bytes")) if memory else 0.0
        point = (
            round(now, 3),
            memory,
            managed,
            _number(info, "spilled_bytes"),
            _number(info, "cpu"),
            _number(info, "executing"),
            *(round(r, 1) for r in rates),
        )
        series = self._workers.get(address)
        if series is None:
            series = self._workers[address] = deque(maxlen=self.points)
        series.append(point)
        self._names[address] = str(info.get("name") or address)
        return point

    def _forget_old(self, now: float) -> None:
        """Workers with no point in the retained window are dropped (a departed worker's
        line stays on the charts until it scrolls out)."""
        horizon = now - self.retention
        for address in [a for a, s in self._workers.items() if not s or s[-1][0] < horizon]:
            del self._workers[address]
            self._names.pop(address, None)
            self._counters.pop(address, None)

    def latest(self) -> dict[str, float] | None:
        """The newest cluster point by field name (the Status page appends it live)."""
        with self._lock:
            return dict(zip(CLUSTER_FIELDS, self._cluster[-1])) if self._cluster else None

    def latest_rates(self) -> dict[str, dict[str, float]]:
        """Each worker's newest network and disk rates (bytes/s), for the bars."""
        with self._lock:
            out = {}
            for address, series in self._workers.items():
                if series:
                    out[address] = dict(zip(COUNTERS, series[-1][6:]))
            return out

    def to_json(self, since: float = 0.0, workers: bool = True) -> dict[str, Any]:
        """Columns rather than rows: ``{"cluster": {"time": [...], "rate": [...]}, ...}``."""
        with self._lock:
            out: dict[str, Any] = {
                "retention": self.retention,
                "cluster": _columns(CLUSTER_FIELDS, [p for p in self._cluster if p[0] > since]),
            }
            if workers:
                out["workers"] = {
                    address: {
                        "name": self._names.get(address, address),
                        **_columns(WORKER_FIELDS, [p for p in series if p[0] > since]),
                    }
                    for address, series in sorted(self._workers.items())
                }
            return out


def _cluster_part(info: dict[str, Any], point: tuple[float, ...]) -> tuple[float, ...]:
    """A worker's share of the cluster point (the fields after time and rate)."""
    memory, managed, spilled, cpu, executing = point[1:6]
    return (memory, _number(info, "memory_limit"), managed, spilled, cpu, executing, *point[6:])


def _columns(names: tuple[str, ...], points: list[tuple[float, ...]]) -> dict[str, list[float]]:
    return {name: [p[i] for p in points] for i, name in enumerate(names)}
