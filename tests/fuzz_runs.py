"""Writing the fuzz entries of ``tests/fuzz_entries.py`` into Redis, and counting: what
was tried per stream and per record kind, what the mutator did, and the dead letters
the loops wrote (counted as they come: the dead-letter stream is capped at 10,000).

A batch is one hypothesis example (a plan: seed and pool, see ``fuzz_entries``) and one
pipeline; ``check()`` runs after every batch (every loop alive, no process exited).
Entries that still decode into an *order* (a worker joining, a restart, a stop) are not
written: they are commands, not garbage, and would change the cluster under the test.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rdist.protocol import wire
from tests import fuzz_entries as fe

#: Decoded messages that are orders, not garbage: never written.
ORDERS = frozenset(
    {
        "worker-join",
        "worker-leave",
        "worker-lost",
        "worker-status",
        "restart",
        "stop",
        "retire",
        "retire-workers",
        "shutdown",
        "restart-worker",
        "restarted",
        "register-scheduler-plugin",
        "plugin-added",
        "run",
    }
)
#: Where each kind of record is stored: a hash (fields under fuzz names), a stream or a
#: list. (Not fuzzed: ``RelayMeta`` and ``CallStacks``, which live only between a request
#: and its answer under the request's random id.)
RECORD_HOMES = {
    "TaskRecord": ("hash", "tasks"),
    "WorkerRecord": ("hash", "workers"),
    "ClientRecord": ("hash", "clients"),
    "NannyRecord": ("hash", "nannies"),
    "Heartbeat": ("stream", "heartbeats"),
    "TaskStreamBatch": ("stream", "taskstream"),
    "ProfileBatch": ("stream", "profile"),
    "ClusterEvent": ("stream", "events"),
    "LogLine": ("list", "worker_log"),  # one worker's log buffer (``logs:worker:<address>``)
}
#: Valid records that would be *claims* about the cluster, not garbage: not written. A
#: phantom live worker gets tasks; a phantom client is told of every task a restoring
#: scheduler errs (thousands of them, each told of thousands of keys).
CLAIMS = frozenset({"WorkerRecord", "ClientRecord"})
#: Each fuzzed target gets at least this many entries in a full-size run (the issue's
#: figure); ``split`` says whether a size reaches it.
FULL_SHARE = 10_000


def split(total: int, streams: Iterable[str]) -> tuple[dict[str, int], int]:
    """``total`` entries split evenly over the streams and the record kinds: each
    stream's share, and each record kind's."""
    streams = list(streams)
    each = total // (len(streams) + len(RECORD_HOMES))
    return dict.fromkeys(streams, each), each


def record_target(kind: str) -> str:
    shape, attr = RECORD_HOMES[kind]
    return f"{attr} ({shape}, {kind})"


def is_order(channel: wire.Channel, fields: dict[bytes, bytes]) -> bool:
    """Whether the entry decodes into messages one of which is an order (see ORDERS)."""
    try:
        messages = channel.decode(fields.get(b"m"))
    except wire.MalformedMessage:
        return False
    return any(m.OP in ORDERS for m in messages)


def is_valid_record(kind: str, blob: bytes) -> bool:
    cls = getattr(wire, kind)
    try:
        cls.decode(blob)
    except wire.MalformedMessage:
        return False
    return True


@dataclass
class Tally:
    """What the fuzz tried, by target (stream or record kind), and how it was made."""

    tried: Counter[str] = field(default_factory=Counter)
    skipped_orders: Counter[str] = field(default_factory=Counter)
    made: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.tried.values())

    def report(self, title: str, letters: DeadLetterCount, **figures: Any) -> str:
        """The figures of one run: entries tried per target, dead letters, ``figures``."""
        figures = {
            "dead_letters": letters.total,
            "dead_letters_by_stream": dict(letters.by_stream),
            "dead_letters_missed": letters.missed,
            **figures,
        }
        lines = [f"fuzz figures ({title}): {self.total} entries tried"]
        lines += [f"  {target}: {n}" for target, n in sorted(self.tried.items())]
        if self.skipped_orders:
            lines.append(f"  (valid orders not written: {dict(self.skipped_orders)})")
        lines.append(f"  made: {dict(sorted(self.made.items()))}")
        lines += [f"  {name}: {value}" for name, value in figures.items()]
        return "\n".join(lines)


def hypothesis_settings(examples: int) -> Callable[[Any], Any]:
    from hypothesis import HealthCheck, Phase, settings

    return settings(
        max_examples=max(1, examples),
        deadline=None,
        database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )


def fuzz_streams(
    redis: Any,
    targets: dict[str, tuple[str, wire.Channel]],
    share: dict[str, int],
    tally: Tally,
    check: Any,
) -> None:
    """Write ``share[target]`` generated entries into each target stream, a batch per
    hypothesis example (one pipeline), calling ``check()`` after every batch."""
    for target, (stream, channel) in targets.items():
        _until(
            lambda n, t=target, s=stream, c=channel: _stream_run(redis, t, s, c, n, tally, check),
            lambda t=target: share[t] - tally.tried[t],
        )


def fuzz_records(redis: Any, keys: Any, share: int, tally: Tally, check: Any, worker: str) -> None:
    """Write ``share`` generated records of every kind where that kind is stored (hash
    fields under fuzz names beside the real ones, entries of its stream, lines of the log
    buffer of ``worker``)."""
    counter = iter(range(10**9))
    for kind, (shape, attr) in RECORD_HOMES.items():
        home, target = getattr(keys, attr), record_target(kind)
        if shape == "list":
            home = home(worker)
        _until(
            lambda n, k=kind, s=shape, t=target, h=home: _record_run(
                redis, k, s, t, h, n, counter, tally, check
            ),
            lambda t=target: share - tally.tried[t],
        )


def _until(make_run: Any, remaining: Any, rounds: int = 10) -> None:
    """Run hypothesis tests until the share is written: orders left out (and examples
    hypothesis discards) count towards ``max_examples`` but write nothing, so a further
    round tries what is missing."""
    for _ in range(rounds):
        left = remaining()
        if left <= 0:
            return
        with warnings.catch_warnings():
            # a plan's pool may hold a 10,000-character key: its repr is large, and that
            # is no fault of the test
            warnings.filterwarnings("ignore", "Generating overly large repr")
            make_run(left)()


def _stream_run(
    redis: Any, target: str, stream: str, channel: wire.Channel, n: int, tally: Tally, check: Any
) -> Any:
    from hypothesis import given

    batches = -(-n // fe.BATCH)
    size = -(-n // batches)

    @hypothesis_settings(batches)
    @given(fe.PLAN)
    def run(plan: tuple[int, list[Any]]) -> None:
        pipe = redis.pipeline(transaction=False)
        for fields in fe.stream_entries(channel.name, plan, size, tally.made):
            if is_order(channel, fields):
                tally.skipped_orders[target] += 1
                continue
            pipe.xadd(stream, fields)
            tally.tried[target] += 1
        pipe.execute()
        check()

    return run


def _record_run(
    redis: Any,
    kind: str,
    shape: str,
    target: str,
    home: str,
    n: int,
    counter: Any,
    tally: Tally,
    check: Any,
) -> Any:
    from hypothesis import given

    batches = -(-n // fe.BATCH)
    size = -(-n // batches)

    @hypothesis_settings(batches)
    @given(fe.PLAN)
    def run(plan: tuple[int, list[Any]]) -> None:
        pipe = redis.pipeline(transaction=False)
        for blob in fe.records(kind, plan, size, tally.made):
            if kind in CLAIMS and is_valid_record(kind, blob):
                tally.skipped_orders[kind] += 1
                continue
            if shape == "hash":
                pipe.hset(home, f"fuzz-{kind}-{next(counter)}", blob)
            elif shape == "list":
                pipe.rpush(home, blob)
            else:
                pipe.xadd(home, {b"m": blob}, maxlen=10_000, approximate=True)
            tally.tried[target] += 1
        if shape == "list":
            pipe.ltrim(home, -10_000, -1)
        pipe.execute()
        check()

    return run


class DeadLetterCount:
    """Counts the dead letters written after it started, by the stream they came from
    (``sched``, ``worker``, ``client``, ``nanny``), reading the capped dead-letter stream
    every ``interval`` seconds in a thread of its own. ``missed`` says whether entries
    were trimmed before they were read (then the count is a lower bound)."""

    def __init__(self, redis: Any, key: str, interval: float = 0.2) -> None:
        self._redis, self._key, self._interval = redis, key, interval
        newest = redis.xrevrange(key, count=1)
        self._last: bytes | None = newest[0][0] if newest else None
        self.by_stream: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.missed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuzz-deadletters", daemon=True)

    @property
    def total(self) -> int:
        return sum(self.by_stream.values())

    def __enter__(self) -> DeadLetterCount:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()

    def poll(self) -> None:
        redis = self._redis
        if self._last is not None:
            oldest = redis.xrange(self._key, count=1)
            if oldest and _order(oldest[0][0]) > _order(self._last):
                self.missed = True
        while True:
            start = b"(" + self._last if self._last is not None else b"-"
            got = redis.xrange(self._key, min=start, count=5_000)
            if not got:
                return
            for _, fields in got:
                self.by_stream[_source(fields.get(b"stream", b""))] += 1
                reason = fields.get(b"reason", b"").decode(errors="replace")
                self.reasons[reason.split(":")[0][:40]] += 1
            self._last = got[-1][0]


def _order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms), int(seq or 0)


def _source(stream: bytes) -> str:
    """``sched``, ``worker``, ``client``, ``nanny`` of ``rdist:{name}:worker:tcp://...``."""
    tail = stream.decode(errors="replace").rpartition("}:")[2]
    return tail.split(":")[0]
