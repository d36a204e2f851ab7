"""Live updates: one background task reads Redis and pushes to subscribed Socket.IO clients.

It wakes on new task-stream and event entries with a blocking XREAD (no sleep loop on a
real Redis), forwards them within ``FLUSH_SECONDS``, and once per interval pushes status and
worker snapshots -- computed only when someone subscribed to them. Browsers join one room
per topic, so a page receives only what it shows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from rdist.protocol import wire
from rdist.protocol.taskstream import decode_batch
from rdist.store import RedisStore
from rdist.store.connection import ConnectionErrors
from rdist.store.health import Backoff
from rdist.store.keys import PAYLOAD_FIELD
from rdist.web import queries
from rdist.web.census import TaskCensus
from rdist.web.history import History

log = logging.getLogger("rdist.web")

TOPICS = ("status", "workers", "runs", "events", "history")
#: Worker fields the Status page's bars need.
STATUS_WORKER_FIELDS = (
    "address",
    "name",
    "nthreads",
    "memory",
    "memory_limit",
    "cpu",
    "executing",
    "stored_bytes",
    "spilled_bytes",
    "status",
)
FLUSH_SECONDS = 0.25
READ_COUNT = 500
#: Heartbeats read back at start for the history (the stream keeps about 1,000).
BACKFILL_BEATS = 2_000
#: Seconds over which tasks/s is measured (as ``queries.task_rate``).
RATE_WINDOW = 10.0
#: Records of the census sweep per tick, and how long it rests after a slice (times the
#: slice's own duration: 3 bounds the sweep to a quarter of the web process's time).
SWEEP_BUDGET = 20_000
SWEEP_REST = 3.0


def status_snapshot(
    store: RedisStore,
    census: TaskCensus,
    max_age: float = 1.0,
    infos: list[dict[str, Any]] | None = None,
    rate: float | None = None,
    history: History | None = None,
) -> dict[str, Any]:
    """What the Status page shows: task counts and groups, worker totals and bars, throughput.

    ``tasks.total`` and ``task_count`` are the exact count now (as ``/api/tasks`` says);
    the per-state counts come from the census's last complete sweep (``tasks.stale``)."""
    infos = queries.workers(store) if infos is None else infos
    tasks = census.snapshot(store, max_age=max_age)
    processing = tasks.get("processing", {})
    io = history.latest_rates() if history is not None else {}
    compact = []
    for w in infos:
        row = {k: w.get(k) for k in STATUS_WORKER_FIELDS}
        row["processing"] = processing.get(w["address"], 0)
        row.update(io.get(w["address"], {}))
        compact.append(row)
    return {
        "time": time.time(),
        "cluster": store.keys.cluster,
        "tasks": tasks,
        "task_count": tasks["total"],
        "workers": queries.worker_summary(infos),
        "worker_list": compact,
        "rate": queries.task_rate(store) if rate is None else rate,
        "point": history.latest() if history is not None else None,
    }


def workers_snapshot(
    store: RedisStore,
    census: TaskCensus,
    max_age: float = 1.0,
    infos: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The workers table, with the tasks the scheduler has assigned to each (from the census)."""
    infos = queries.workers(store) if infos is None else [dict(w) for w in infos]
    processing = census.snapshot(store, max_age=max_age).get("processing", {})
    for info in infos:
        info["processing"] = processing.get(info["address"], 0)
    return {"time": time.time(), "workers": infos}


class LiveFeed:
    """The background task and the subscriptions of connected clients."""

    def __init__(
        self, store: RedisStore, socketio: Any, census: TaskCensus, interval: float = 1.0
    ) -> None:
        self.store = store
        self.socketio = socketio
        self.census = census
        self.interval = max(0.1, interval)
        self.history = History(self.interval)
        self._sampled = 0.0
        self._sweep_after = 0.0
        self._finished: Counter[int] = Counter()  #: epoch second -> runs that ended in it
        self._counting_since = 0.0
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._subscriptions: dict[str, set[str]] = {}
        self._started = False
        self._runs: list[dict[str, Any]] = []
        self._transfers: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []

    # -- subscriptions -------------------------------------------------------------------
    def subscribe(self, sid: str, topics: list[str]) -> list[str]:
        wanted = [t for t in topics if t in TOPICS]
        with self._lock:
            self._subscriptions.setdefault(sid, set()).update(wanted)
        self.start()
        return wanted

    def drop(self, sid: str) -> None:
        with self._lock:
            self._subscriptions.pop(sid, None)

    def wanted(self, topic: str) -> bool:
        with self._lock:
            return any(topic in topics for topics in self._subscriptions.values())

    # -- the task --------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._started or self.stop_event.is_set():
                return
            self._started = True
        self.socketio.start_background_task(self.run)

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        """Until :meth:`stop`: a bug or an odd reply is logged, never ends live updates."""
        self.census.background = True  # this thread sweeps: requests only read
        self._backfill()
        reader = self.store.clone()
        backoff = Backoff("dashboard", self.store.url, log)
        last: dict[str, str] | None = None
        next_tick = next_flush = 0.0
        try:
            while not self.stop_event.is_set():
                try:
                    last = last or self._latest_ids(reader)
                    now = time.monotonic()
                    if now >= next_tick:
                        self._tick()
                        next_tick = now + self.interval
                    if now >= next_flush:
                        self._flush()
                        next_flush = now + FLUSH_SECONDS
                    self._read(reader, last, min(next_tick, next_flush) - time.monotonic())
                    backoff.succeeded()
                except ConnectionErrors as exc:
                    backoff.wait(exc, self.stop_event)  # a permanent error raises
                except Exception:
                    log.exception("dashboard: live feed step failed; going on")
                    self.stop_event.wait(1.0)
        finally:
            reader.close()

    def _backfill(self) -> None:
        """The minutes before this dashboard started, from the workers' capped heartbeats
        (a dashboard restarted mid-run does not begin with empty charts)."""
        try:
            beats = []
            for _, fields in self.store.streams.newest(self.store.keys.heartbeats, BACKFILL_BEATS):
                try:
                    beats.append(wire.Heartbeat.decode(fields.get(PAYLOAD_FIELD)).to_wire())
                except wire.MalformedMessage:
                    continue
            records = {w["address"]: w for w in queries.workers(self.store)}
            added = self.history.backfill(beats, records, self.interval)
            log.debug("dashboard: %d points of history from %d heartbeats", added, len(beats))
        except ConnectionErrors as exc:
            log.warning("dashboard: no history from the heartbeats (%s)", exc)

    def _latest_ids(self, reader: RedisStore) -> dict[str, str]:
        """Start after what exists now: history comes from the API, the feed sends what is new."""
        self._counting_since = time.time()
        ids = {}
        for stream in (reader.keys.taskstream, reader.keys.events):
            newest = reader.streams.newest(stream, 1)
            ids[stream] = queries.as_text(newest[0][0]) if newest else "0-0"
        return ids

    def _read(self, reader: RedisStore, last: dict[str, str], wait: float) -> None:
        block_ms = max(1, int(wait * 1000))
        started = time.monotonic()
        reply = reader.streams.follow(last, READ_COUNT, block_ms)
        shown = self.wanted("runs")  # (once a read: runs are pushed only to their room)
        for stream, entries in _streams(reply):
            for entry_id, fields in entries:
                last[stream] = queries.as_text(entry_id)
                self._collect(stream, last[stream], fields.get(PAYLOAD_FIELD), shown)
        if not reply and time.monotonic() - started < block_ms / 2000:
            self.stop_event.wait(min(wait, 0.05))  # fakeredis answers at once: do not spin

    def _collect(self, stream: str, entry_id: str, payload: bytes | None, shown: bool) -> None:
        if stream == self.store.keys.taskstream:
            runs = decode_batch(payload)
            finished = self._finished
            for run in runs:
                finished[int(run.stop)] += 1  # (the rate: sampled for the history always)
            if shown:  # the runs themselves only for a page that shows them
                self._runs.extend(r.to_json() for r in runs)
                self._transfers.extend(queries.transfers_of(payload))
        else:
            self._events.append(queries.decode_event(entry_id, payload))

    def _flush(self) -> None:
        runs, self._runs = self._runs[-queries.MAX_RUNS_SHOWN :], []
        transfers, self._transfers = self._transfers[-queries.MAX_RUNS_SHOWN :], []
        events, self._events = self._events, []
        if runs or transfers:
            self.socketio.emit("runs", {"runs": runs, "transfers": transfers}, to="runs")
        if events:
            self.socketio.emit("events", {"events": events}, to="events")

    def _rate(self, now: float) -> float:
        """Tasks finished per second over the last ``RATE_WINDOW`` s, from the runs this
        feed read anyway (no second read of the task stream each tick); until it has
        watched a whole window, from the stream as ``/api/status`` does."""
        if not self._counting_since or now - self._counting_since < RATE_WINDOW:
            return queries.task_rate(self.store, RATE_WINDOW, now)
        low = now - RATE_WINDOW
        for second in [s for s in self._finished if s <= low - RATE_WINDOW]:
            del self._finished[second]
        finished = sum(n for second, n in self._finished.items() if low < second <= now)
        return round(finished / RATE_WINDOW, 2)

    def _sweep_census(self, now: float) -> None:
        """One slice of the census sweep -- only while someone reads the counts, and at
        most a quarter of the time, so the requests of a million-task cluster stay quick."""
        began = time.monotonic()
        if not self.census.read_recently(now) or began < self._sweep_after:
            return
        self.census.advance(self.store, SWEEP_BUDGET)
        self._sweep_after = time.monotonic() + SWEEP_REST * (time.monotonic() - began)

    def _tick(self) -> None:
        """Sample the history (always: a page opened later shows the minutes before it),
        then push what subscribers want, from the same reads."""
        now = time.time()
        infos = queries.workers(self.store, now)
        rate = self._rate(now)
        previous, self._sampled = self._sampled, now
        self.history.sample(now, infos, rate)
        self._sweep_census(now)
        if self.wanted("status"):
            snapshot = status_snapshot(
                self.store, self.census, self.interval, infos, rate, self.history
            )
            self.socketio.emit("status", snapshot, to="status")
        if self.wanted("workers"):
            snapshot = workers_snapshot(self.store, self.census, self.interval, infos)
            self.socketio.emit("workers", snapshot, to="workers")
        if self.wanted("history"):
            self.socketio.emit("history", self.history.to_json(since=previous), to="history")


def _streams(reply: Any) -> list[tuple[str, list[Any]]]:
    """XREAD replies as ``[(stream, entries)]`` (RESP2 lists or RESP3 maps)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(queries.as_text(k), v[0]) for k, v in reply.items()]
    return [(queries.as_text(stream), entries) for stream, entries in reply]
