"""The façade for rdist's streams: sending messages, the capped logs, the dead letters.

Every entry carries one payload field (``m``): an encoded wire message or record. Writes
take an optional ``pipe`` like the tables' (see :mod:`rdist.store.tables`). Reading the
inbound streams in batches is :meth:`RedisStore.read_group` / :meth:`RedisStore.read`,
which own the connections a blocking read needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdist.protocol.wire import ClusterEvent, Heartbeat, Message, TopicEvent
from rdist.store.keys import PAYLOAD_FIELD

if TYPE_CHECKING:
    from rdist.store.connection import RedisStore

#: The capped streams keep about this many entries (MAXLEN ~: trimmed in whole nodes).
EVENTS_MAXLEN = 10_000
HEARTBEATS_MAXLEN = 1_000
DEADLETTER_MAXLEN = 10_000
#: events kept per topic (dask keeps 100,000 per topic in the scheduler's memory)
TOPIC_MAXLEN = 100_000
#: The task stream keeps about this many task runs (dask's scheduler keeps 100,000): not
#: entries, which are report batches of one run or of thousands (capped in entries, the
#: stream held 52 MB after a million no-op tasks).
TASKSTREAM_RUNS = 100_000
#: Runs written past the cap before the oldest entries are trimmed (in one pass).
TASKSTREAM_SLACK = 10_000
#: Each writer (a store's façade) asks for a trim once per this many runs it wrote: the
#: stream holds at most cap + slack + this many runs per writer.
TASKSTREAM_TRIM_EVERY = 2_000
#: The field of a task-stream entry that says how many runs it carries.
RUNS_FIELD = "n"
#: The trimming script (sent whole with EVAL: it rides a report's pipeline, where a
#: script unknown to a restarted Redis would fail the whole report; it runs rarely)
_TASKSTREAM_TRIM = (Path(__file__).parent / "lua" / "taskstream_trim.lua").read_text()
#: A dead letter keeps this much of the entry it sets aside (enough to see what it was).
DEADLETTER_RAW_BYTES = 4_096


def _payload(msg: Message | bytes) -> bytes:
    return msg if isinstance(msg, bytes) else msg.encode()


class Streams:
    """Named sends to every stream of one cluster."""

    __slots__ = ("_runs_written", "_store", "keys")

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.keys = store.keys
        #: task runs written since this façade last asked for a trim (several threads
        #: add to it unlocked: a lost addition only delays a trim a little)
        self._runs_written = 0

    def _target(self, pipe: Any) -> Any:
        return pipe if pipe is not None else self._store.redis

    def _add(
        self, stream: str, payload: bytes, pipe: Any, maxlen: int | None = None, create: bool = True
    ) -> None:
        if not create:
            self._target(pipe).xadd(stream, {PAYLOAD_FIELD: payload}, nomkstream=True)
        elif maxlen is None:
            self._target(pipe).xadd(stream, {PAYLOAD_FIELD: payload})
        else:
            self._target(pipe).xadd(
                stream, {PAYLOAD_FIELD: payload}, maxlen=maxlen, approximate=True
            )

    # -- inbound streams -------------------------------------------------------------------
    def to_scheduler(self, msg: Message | bytes, pipe: Any = None) -> None:
        self._add(self.keys.sched, _payload(msg), pipe)

    def to_worker(self, address: str, msg: Message | bytes, pipe: Any = None) -> None:
        self._add(self.keys.worker_stream(address), _payload(msg), pipe)

    def to_client(
        self, client: str, msg: Message | bytes, pipe: Any = None, create: bool = False
    ) -> None:
        """A message on a client's stream -- only while it exists: the client makes it as
        it joins (``create``) and it goes when the client leaves, so what is sent to a
        client that left (a late result a worker reports to it directly) is dropped rather
        than leave a stream nobody reads."""
        self._add(self.keys.client_stream(client), _payload(msg), pipe, create=create)

    def mark_client_stream(self, client: str, msg: Message | bytes) -> bytes:
        """Add ``msg`` to a client's stream (making the stream if it is gone) at once and
        return its entry id: the client keeps this entry as the stream's oldest, so that
        its absence tells that Redis lost entries (see ``rdist.client.listener``)."""
        entry_id = self._store.redis.xadd(
            self.keys.client_stream(client), {PAYLOAD_FIELD: _payload(msg)}
        )
        return entry_id if isinstance(entry_id, bytes) else str(entry_id).encode()

    def has_entry(self, stream: str, entry_id: bytes) -> bool:
        """Whether ``stream`` still holds the entry ``entry_id``."""
        return bool(self._store.redis.xrange(stream, entry_id, entry_id, count=1))

    def reply(self, kind: str, ident: str, msg: Message | bytes, pipe: Any = None) -> None:
        """An answer to whoever asked: a worker (``w``) or a client (``c``); nobody (``n``)."""
        if kind == "n":
            return
        if kind == "c":
            self.to_client(ident, msg, pipe)
        else:
            self.to_worker(ident, msg, pipe)

    def drop_worker_streams(self, addresses: Iterable[str], pipe: Any = None) -> None:
        names = [self.keys.worker_stream(a) for a in addresses]
        if names:
            self._target(pipe).delete(*names)

    def drop_client_streams(self, clients: Iterable[str], pipe: Any = None) -> None:
        names = [self.keys.client_stream(c) for c in clients]
        if names:
            self._target(pipe).delete(*names)

    def acknowledge(self, stream: str, group: str, ids: list[bytes], pipe: Any = None) -> None:
        if ids:
            self._target(pipe).xack(stream, group, *ids)

    def delete_entries(self, stream: str, ids: list[bytes], pipe: Any = None) -> None:
        if ids:
            self._target(pipe).xdel(stream, *ids)

    # -- capped logs -----------------------------------------------------------------------
    def log_event(self, event: ClusterEvent | bytes, pipe: Any = None) -> None:
        payload = event if isinstance(event, bytes) else event.encode()
        self._add(self.keys.events, payload, pipe, EVENTS_MAXLEN)

    def topic_event(self, topic: str, event: TopicEvent | bytes, pipe: Any = None) -> None:
        """One user event on ``topic`` (its stream capped at TOPIC_MAXLEN)."""
        self._target(pipe).sadd(self.keys.topics, topic)
        payload = event if isinstance(event, bytes) else event.encode()
        self._add(self.keys.topic(topic), payload, pipe, TOPIC_MAXLEN)

    def topic_names(self) -> list[str]:
        names = self._store.redis.smembers(self.keys.topics)
        return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    def heartbeat(self, beat: Heartbeat, pipe: Any = None) -> None:
        self._add(self.keys.heartbeats, beat.encode(), pipe, HEARTBEATS_MAXLEN)

    def task_runs(self, payload: bytes, pipe: Any = None, runs: int = 1) -> None:
        """One task-stream entry (a report's ``runs`` task runs and transfers, see
        ``rdist.protocol.taskstream``): an XADD and an INCRBY of the run counter, and
        every :data:`TASKSTREAM_TRIM_EVERY` runs the script that drops the oldest entries
        past :data:`TASKSTREAM_RUNS` (a script per report cost Redis ~20 us more each)."""
        runs = max(1, runs)
        target, keys = self._target(pipe), self.keys
        target.xadd(keys.taskstream, {PAYLOAD_FIELD: payload, RUNS_FIELD: runs})
        target.incrby(keys.taskstream_runs, runs)
        self._runs_written += runs
        if self._runs_written >= TASKSTREAM_TRIM_EVERY:
            self._runs_written = 0
            self.trim_task_runs(target)

    def trim_task_runs(self, pipe: Any = None) -> None:
        """Drop the oldest task-stream entries once it holds more than
        :data:`TASKSTREAM_RUNS` + :data:`TASKSTREAM_SLACK` runs (down to the cap)."""
        keys = self.keys
        self._target(pipe).eval(
            _TASKSTREAM_TRIM,
            2,
            keys.taskstream,
            keys.taskstream_runs,
            TASKSTREAM_RUNS,
            TASKSTREAM_SLACK,
        )

    def dead_letter(
        self,
        stream: str,
        entry_id: bytes | str,
        raw: Any,
        reason: str,
        pipe: Any = None,
        error: BaseException | None = None,
        deliveries: int = 1,
    ) -> None:
        """Set an entry aside with why: its stream, id, the reason, the exception its
        handling raised (if any), how often it was delivered, and the start of it."""
        if isinstance(raw, (bytes, bytearray, memoryview)):
            kept = bytes(raw[:DEADLETTER_RAW_BYTES])
        else:
            kept = repr(raw)[:DEADLETTER_RAW_BYTES].encode()
        fields: dict[str, Any] = {
            "stream": stream,
            "id": entry_id,
            "reason": reason[:500],
            "raw": kept,
            "deliveries": deliveries,
        }
        if error is not None:
            fields["error"] = f"{type(error).__name__}: {error}"[:500]
        self._target(pipe).xadd(
            self.keys.deadletter, fields, maxlen=DEADLETTER_MAXLEN, approximate=True
        )

    def dead_letters(self, count: int = 1000) -> list[dict[str, str]]:
        """The newest dead letters, oldest first, as text (operators and tests read them)."""
        out = []
        for _, fields in reversed(self.newest(self.keys.deadletter, count)):
            out.append(
                {
                    (k.decode() if isinstance(k, bytes) else str(k)): (
                        v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                    )
                    for k, v in fields.items()
                }
            )
        return out

    # -- reading back (dashboard, tests) ---------------------------------------------------
    def newest(self, stream: str, count: int = 1) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return list(self._store.redis.xrevrange(stream, count=count))

    def before(
        self, stream: str, upper: str, count: int, lower: str = "-"
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to ``count`` entries at or before id ``upper`` ("+" for the newest) and at or
        after ``lower`` ("-" for the oldest), newest first."""
        return list(self._store.redis.xrevrange(stream, max=upper, min=lower, count=count))

    def follow(
        self, last_ids: dict[str, Any], count: int, block_ms: int
    ) -> list[tuple[Any, list[tuple[bytes, dict[bytes, bytes]]]]]:
        """XREAD several streams after the given ids (the dashboard's live feed)."""
        return list(self._store.redis.xread(last_ids, count=count, block=block_ms) or [])

    def dead_letter_entry(self, letter_id: str) -> dict[bytes, bytes] | None:
        """The fields of one dead letter, or None when it is gone (trimmed, requeued)."""
        found = self._store.redis.xrange(self.keys.deadletter, letter_id, letter_id, count=1)
        return dict(found[0][1]) if found else None

    def requeue(self, letter_id: str, stream: str, payload: bytes) -> str:
        """Put a dead letter's payload back on its stream and drop the letter, atomically
        (MULTI): it is handled once more as a new entry. Returns the new entry's id."""
        pipe = self._store.redis.pipeline(transaction=True)
        pipe.xadd(stream, {PAYLOAD_FIELD: payload})
        pipe.xdel(self.keys.deadletter, letter_id)
        new_id = pipe.execute()[0]
        return new_id.decode() if isinstance(new_id, bytes) else str(new_id)

    # -- call stacks of running tasks (the dashboard's worker page) ----------------------------
    def put_stacks(self, request_id: str, payload: bytes, ttl: int = 60, pipe: Any = None) -> None:
        self._target(pipe).set(self.keys.stacks(request_id), payload, ex=ttl)

    def get_stacks(self, request_id: str) -> bytes | None:
        value = self._store.redis.get(self.keys.stacks(request_id))
        return bytes(value) if value is not None else None

    def length(self, stream: str) -> int:
        return int(self._store.redis.xlen(stream))
