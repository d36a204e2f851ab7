"""What a client can ask about the cluster: workers, where data is, ``run``, ``story``.

Most answers come straight from the records in Redis (the ``workers`` and ``tasks``
hashes, through their façades), so they need no scheduler round trip. ``run`` and
``story`` ask the processes themselves, on their streams, and collect the answers that
come back on the client's stream (see :mod:`rdist.client.answers`) within the client's
timeout: a process that does not answer is reported, never waited on for ever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from rdist.client import graph
from rdist.client.answers import Answers
from rdist.client.options import worker_list
from rdist.protocol import serialize, wire
from rdist.store import RedisStore

if TYPE_CHECKING:
    from rdist.client.ledger import Ledger
    from rdist.client.sender import Sender

log = logging.getLogger("rdist.client")

#: Worker statuses that count as present (a closing worker takes no new work).
PRESENT = ("running", "paused")
#: The source name of the scheduler's story records.
SCHEDULER_SOURCE = "scheduler"


def running_workers(store: RedisStore) -> dict[str, wire.WorkerRecord]:
    """The workers present now, by address."""
    return {a: r for a, r in store.workers.all().items() if r.status in PRESENT}


def task_records(store: RedisStore, keys: list[str] | None) -> dict[str, wire.TaskRecord]:
    """The scheduler's records of ``keys`` (of every task when None) that exist."""
    if keys is not None:
        return store.tasks.get_many(keys)
    return {k: r for k, r in store.tasks.all() if isinstance(r, wire.TaskRecord)}


class StoryEvent(NamedTuple):
    """One transition of one key, as ``source`` (``"scheduler"`` or a worker) recorded it."""

    source: str
    key: str
    start: str
    finish: str
    stimulus_id: str
    time: float


def merge_stories(
    replies: Iterable[wire.StoryReply], expected: list[str]
) -> tuple[list[StoryEvent], list[str]]:
    """Every source's records in time order (a source's own order kept among equal times),
    and the expected sources that did not answer (pure)."""
    answered: dict[str, wire.StoryReply] = {}
    for reply in replies:
        answered.setdefault(reply.source, reply)
    events = [
        StoryEvent(reply.source, *row) for reply in answered.values() for row in reply.records
    ]
    events.sort(key=lambda e: e.time)
    unanswered = [s for s in expected if s not in answered]
    return events, unanswered[: max(0, len(expected) - len(answered))]


def story_key(key_or_stimulus: Any) -> str:
    """A key as the records name it: a Future's key, a dask tuple key's name, or as given."""
    name = getattr(key_or_stimulus, "_name", None)
    return name if isinstance(name, str) else graph.key_name(key_or_stimulus)


class Introspection:
    """The introspection calls of one client."""

    def __init__(
        self,
        store: RedisStore,
        client_id: str,
        timeout: Callable[[], float],
        ledger: Ledger,
        sender: Sender,
        answers: Answers,
    ) -> None:
        self._store = store
        self._client_id = client_id
        self._timeout = timeout  #: the client's timeout, read when a call starts
        self._ledger = ledger
        self._sender = sender
        self._answers = answers

    # -- workers ---------------------------------------------------------------------------
    def workers(self) -> dict[str, wire.WorkerRecord]:
        return running_workers(self._store)

    def scheduler_info(self, cluster_name: str, address: str) -> dict[str, Any]:
        workers = {}
        for worker, record in sorted(self.workers().items()):
            info = record.to_wire()
            info["id"] = record.name
            workers[worker] = info
        return {"type": "Scheduler", "id": cluster_name, "address": address, "workers": workers}

    def nthreads(self, workers: Any = None) -> dict[str, int]:
        wanted = worker_list(workers)
        return {
            a: w.nthreads
            for a, w in sorted(self.workers().items())
            if not wanted or a in wanted or w.name in wanted
        }

    def targets(self, workers: Any, timeout: float | None) -> list[str]:
        """The addresses ``workers`` names (default: all), waiting for a first worker."""
        info = self.workers()
        if not info:
            self.wait_for_workers(1, timeout=timeout or self._timeout())
            info = self.workers()
        wanted = worker_list(workers)
        if wanted:
            chosen = [a for a, w in info.items() if a in wanted or w.name in wanted]
            if not chosen:
                raise ValueError(f"no worker matches {wanted}; known workers: {sorted(info)}")
            return sorted(chosen)
        return sorted(info)

    def wait_for_workers(self, n_workers: int = 1, timeout: float | None = None) -> None:
        """Block until ``n_workers`` workers are present (woken by join events, no polling)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events_key = self._store.keys.events
        last: bytes | str = "$"
        reader = self._store.clone()
        try:
            while len(self.workers()) < n_workers:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"only {len(self.workers())} of {n_workers} workers "
                        f"arrived within {timeout} s"
                    )
                block = int(1000 * min(1.0, remaining if remaining is not None else 1.0)) or 1
                got = reader.read(events_key, last, 100, block)
                if got:
                    last = got[-1][0]
                elif reader.url.startswith("fakeredis://"):
                    time.sleep(0.01)  # fakeredis answers a blocking read at once
        finally:
            reader.close()

    # -- where data is ---------------------------------------------------------------------
    def who_has(self, keys: list[str]) -> dict[str, list[str]]:
        records = self._store.tasks.get_many(keys)
        told = self._ledger.told_who_has()
        # a worker notifies the client before the scheduler records the holder: what the
        # client was told answers until the record catches up
        out = {}
        for key in keys:
            record = records.get(key)
            out[key] = list(record.who_has) if record and record.who_has else told.get(key, [])
        return out

    def has_what(self, workers: Any = None) -> dict[str, list[str]]:
        wanted = worker_list(workers)
        out: dict[str, list[str]] = {a: [] for a in self.workers()}
        records = task_records(self._store, None)
        for key, record in records.items():
            if record.state == "memory":
                for address in record.who_has:
                    out.setdefault(address, []).append(key)
        for key, holders in self._ledger.told_who_has().items():
            known = records.get(key)
            if known is None or known.state != "memory":  # the record has not caught up
                for address in holders:
                    if address in out:
                        out[address].append(key)
        return {a: sorted(ks) for a, ks in out.items() if not wanted or a in wanted}

    # -- asking the processes ----------------------------------------------------------------
    def run(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workers: Any,
        wait: bool,
        on_error: str,
    ) -> Any:
        """``function(*args, **kwargs)`` on every worker (or ``workers``): ``{address: result}``."""
        targets = self.targets(workers, None) if workers else sorted(self.workers())
        if not targets:
            return {}
        request_id = self._answers.expect(len(targets))
        blob = serialize.to_blob((function, args, kwargs))
        self._to_workers(targets, wire.Run(self._client_id, request_id, blob).encode())
        if not wait:
            self._answers.forget(request_id)
            return None
        timeout = self._timeout() * 4
        replies = {r.worker: r for r in self._answers.collect(request_id, timeout)}
        if len(replies) < len(targets):
            silent = sorted(set(targets) - set(replies))
            raise TimeoutError(f"run: {len(silent)} workers did not answer within {timeout} s")
        out = {}
        for address, reply in sorted(replies.items()):
            loaded = serialize.from_blob(reply.value)
            if not reply.ok:  # (exception, traceback)
                if on_error == "raise":
                    raise loaded[0]
                loaded = loaded[0]
            out[address] = loaded
        return out

    def story(
        self, keys_or_stimuli: Iterable[Any], on_error: str = "raise", timeout: float | None = None
    ) -> list[StoryEvent]:
        """The transition records of these keys (or stimulus ids) from the scheduler and
        every worker, merged in time order; see ``Client.story``."""
        if on_error not in ("raise", "ignore"):
            raise ValueError(f"on_error must be 'raise' or 'ignore', not {on_error!r}")
        keys = [story_key(k) for k in keys_or_stimuli]
        workers = sorted(self.workers())  # a closing worker is not asked: it may not answer
        expected = [SCHEDULER_SOURCE, *workers]
        request_id = self._answers.expect(len(expected))
        request = wire.StoryRequest(self._client_id, request_id, keys).encode()
        self._sender.flush()  # what this client sent before is part of the story
        pipe = self._store.pipeline()
        self._store.streams.to_scheduler(request, pipe=pipe)
        self._to_workers(workers, request, pipe)
        timeout = self._timeout() if timeout is None else timeout
        replies = self._answers.collect(request_id, timeout)
        events, missing = merge_stories(replies, expected)
        if missing:
            problem = f"story: no answer from {', '.join(missing)} within {timeout} s"
            if on_error == "raise":
                raise TimeoutError(problem)
            log.warning("client %s: %s; returning the other records", self._client_id, problem)
        return events

    def _to_workers(self, addresses: list[str], payload: bytes, pipe: Any = None) -> None:
        """One message to each of ``addresses`` (and whatever ``pipe`` holds): one round trip."""
        pipe = pipe if pipe is not None else self._store.pipeline()
        for address in addresses:
            self._store.streams.to_worker(address, payload, pipe=pipe)
        pipe.execute()
