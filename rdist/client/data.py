"""The client's side of the data plane: large results, scatter, replicate and rebalance.

Large results come straight from the workers holding them, by the transfer mode's rules
(``RDIST_TRANSFER``: ``p2p``, ``redis`` or ``auto``, see :mod:`rdist.comm.transfer`), so a
client outside the workers' network (a laptop, a Heroku one-off dyno) still gets its data.

``replicate`` and ``rebalance`` are planned here from the scheduler's records (who holds
what, and how many bytes -- spilled data counts, it is still held) and carried out by the
workers: each target is asked, on its stream, to copy a batch of keys from their holders
(``gather-keys``); it reports the new replicas to the scheduler before it answers. Extra
copies are dropped by the scheduler (``drop-replicas``), which never drops the last one.
A final ``barrier`` round trip through the scheduler makes ``who_has`` / ``has_what``
exact when the call returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rdist.client.answers import Answers
from rdist.client.introspection import task_records
from rdist.client.large import Large, data_key
from rdist.client.options import worker_list
from rdist.comm.pool import ConnectionPool
from rdist.comm.relay import RedisRelay, Replies
from rdist.comm.security import Security
from rdist.comm.transfer import Gatherer, frames_nbytes, transfer_mode
from rdist.protocol import serialize, wire
from rdist.store import RedisStore

if TYPE_CHECKING:
    from rdist.client.sender import Sender

log = logging.getLogger("rdist.client")

#: Values up to this size (serialized) are also stored in Redis by scatter.
SMALL_BYTES = 64 * 1024
#: How long replicate / rebalance wait for one worker to copy its batch.
COPY_TIMEOUT = 300.0


class ClientData:
    """One client's data plane: fetching, scattering, copying between workers."""

    def __init__(
        self,
        store: RedisStore,
        client_id: str,
        sender: Sender,
        answers: Answers,
        workers: Callable[[], dict[str, wire.WorkerRecord]],
        timeout: Callable[[], float],
    ) -> None:
        self.store = store
        self.client_id = client_id
        self._sender = sender
        self._answers = answers
        self._workers = workers
        self._timeout = timeout
        self.mode = transfer_mode()
        #: answers to the Redis relay's requests (``published``, ``loaded``)
        self.relay_replies = Replies()
        self._gatherer: Gatherer | None = None
        self._peers: ConnectionPool | None = None

    @property
    def gatherer(self) -> Gatherer:
        if self._gatherer is None or self._gatherer.mode != self.mode:
            relay = RedisRelay(self.store, ("c", self.client_id), self.relay_replies)
            self._gatherer = Gatherer(self._peer_pool(), self.mode, relay)
        return self._gatherer

    def _peer_pool(self) -> ConnectionPool:
        if self._peers is None:
            secret = self.store.meta.existing_secret()
            if secret is None:
                raise RuntimeError("cluster secret missing from Redis: is a scheduler running?")
            # TLS settings from the configuration (RDIST_TLS_CERT, ...), as the workers'
            self._peers = ConnectionPool(secret, security=Security.from_config().check())
        return self._peers

    def on_relay_reply(self, msg: wire.Published | wire.Loaded) -> None:
        """A ``published`` or ``loaded`` answer, for the relay request waiting on it."""
        self.relay_replies.resolve(msg)

    def close(self) -> None:
        if self._peers is not None:
            self._peers.close()

    # -- results and scatter ---------------------------------------------------------------
    def fetch(
        self, keys: list[str], holders: dict[str, list[str]]
    ) -> tuple[dict[str, Any], list[str]]:
        """Values from their holders; keys that moved since we heard of them (replicate,
        rebalance, a hand-off) are asked of the holders the scheduler records now."""
        found, missing = self.gatherer.fetch(keys, holders)
        if missing:
            records = self.store.tasks.get_many(missing)
            moved = {
                k: [w for w in records[k].who_has if w not in holders.get(k, ())]
                for k in missing
                if k in records
            }
            moved = {k: ws for k, ws in moved.items() if ws}
            if moved:
                more, missing = self.gatherer.fetch(list(moved), moved)
                found.update(more)
                missing = [k for k in keys if k not in found]
        return {k: serialize.loads(frames) for k, frames in found.items()}, missing

    def scatter(
        self, items: list[tuple[str | None, Any]], targets: list[str], broadcast: bool, hash: bool
    ) -> list[wire.KeyInMemory]:
        """Put values on workers (small ones in Redis too); where each one is now."""
        values = []
        for key, value in items:
            frames = serialize.dumps(value)
            name = data_key(value, frames, hash) if key is None else key
            values.append(Large(name, frames, frames_nbytes(frames)))
        return self.scatter_serialized(values, targets, broadcast)

    def scatter_serialized(
        self, values: list[Large], targets: list[str], broadcast: bool = False
    ) -> list[wire.KeyInMemory]:
        """``scatter`` of values already serialized (large arguments, see
        :mod:`rdist.client.large`)."""
        placed: list[wire.KeyInMemory] = []
        small: dict[str, bytes] = {}
        per_worker: dict[str, dict[str, list[Any]]] = {}
        for i, (key, frames, nbytes) in enumerate(values):
            blob = serialize.frames_to_blob(frames) if nbytes <= SMALL_BYTES else None
            if blob is not None and len(blob) > SMALL_BYTES:
                blob = None
            holders = list(targets) if broadcast else [targets[i % len(targets)]]
            for address in holders:
                per_worker.setdefault(address, {})[key] = frames
            if blob is not None:
                small[key] = blob
            placed.append(wire.KeyInMemory(key, nbytes, blob is not None, holders))
        for address, batch in per_worker.items():
            self.gatherer.put(address, batch)
        self.store.results.put_many(small)
        return placed

    # -- replicate and rebalance -----------------------------------------------------------
    def _holdings(self, keys: list[str] | None) -> tuple[dict[str, list[str]], dict[str, int]]:
        """who_has and nbytes of the keys in memory, from the scheduler's records (after a
        barrier: a client may hear of a result before the scheduler recorded it)."""
        self.barrier()
        records = task_records(self.store, keys)
        who_has = {k: list(r.who_has) for k, r in records.items() if r.state == "memory"}
        nbytes = {k: records[k].nbytes for k in who_has}
        return who_has, nbytes

    def _pool(self, workers: Any) -> list[str]:
        info = self._workers()
        wanted = worker_list(workers)
        pool = [a for a, w in info.items() if not wanted or a in wanted or w.name in wanted]
        if wanted and not pool:
            raise ValueError(f"no worker matches {wanted}; known workers: {sorted(info)}")
        return sorted(pool)

    def replicate(self, keys: list[str], n: int | None, workers: Any) -> None:
        pool = self._pool(workers)
        if not pool or not keys:
            return
        n = len(pool) if n is None else max(1, min(int(n), len(pool)))
        who_has, nbytes = self._holdings(keys)
        load = _bytes_per_worker(pool, who_has, nbytes)
        copies: dict[str, dict[str, list[str]]] = {}
        drops: dict[str, list[str]] = {}
        for key in keys:
            holders = who_has.get(key)
            if not holders:
                continue
            here = [w for w in holders if w in load]
            if len(here) < n:
                for target in sorted(
                    (w for w in pool if w not in holders), key=lambda w: (load[w], w)
                )[: n - len(here)]:
                    copies.setdefault(target, {})[key] = holders
                    load[target] += nbytes[key]
            elif len(here) > n:
                extra = sorted(here, key=lambda w: (-load[w], w))[: len(here) - n]
                drops[key] = extra
                for w in extra:
                    load[w] -= nbytes[key]
        self._copy(copies)
        self._finish(drops)

    def rebalance(self, keys: list[str] | None, workers: Any) -> None:
        pool = self._pool(workers)
        if len(pool) < 2:
            return
        who_has, nbytes = self._holdings(keys)
        moves = plan_rebalance(pool, who_has, nbytes)
        copies: dict[str, dict[str, list[str]]] = {}
        drops: dict[str, list[str]] = {}
        for key, sender, recipient in moves:
            copies.setdefault(recipient, {})[key] = [sender]
            drops.setdefault(key, []).append(sender)
        done = self._copy(copies)
        self._finish({k: [s for s in senders if (k, s) in done] for k, senders in drops.items()})

    def _copy(self, copies: dict[str, dict[str, list[str]]]) -> set[tuple[str, str]]:
        """Ask each target to copy its keys; returns ``{(key, source)}`` of the copies made."""
        store = self.store
        requests = {}
        pipe = store.pipeline()
        reply_to = wire.ReplyTo("c", self.client_id)
        for target, wanted in copies.items():
            request_id = self._answers.expect()
            requests[request_id] = (target, wanted)
            store.streams.to_worker(target, wire.GatherKeys(request_id, wanted, reply_to), pipe)
        if requests:
            pipe.execute()
        done: set[tuple[str, str]] = set()
        for request_id, (target, wanted) in requests.items():
            alive = lambda t=target: store.workers.exists(t)  # noqa: E731
            try:
                answer: wire.Gathered = self._answers.one(request_id, COPY_TIMEOUT, alive)
            except (TimeoutError, ConnectionError) as exc:
                log.warning(
                    "client %s: %s did not copy %d keys: %s",
                    self.client_id,
                    target,
                    len(wanted),
                    exc,
                )
                continue
            if answer.missing:
                log.warning(
                    "client %s: %s could not copy %s", self.client_id, target, answer.missing
                )
            done.update((k, s) for k in answer.keys for s in wanted.get(k, ()))
        return done

    def _finish(self, drops: dict[str, list[str]]) -> None:
        """Drop extra copies (the scheduler keeps at least one), then wait until the
        scheduler has recorded everything sent so far."""
        drops = {k: v for k, v in drops.items() if v}
        if drops:
            self._sender.post(wire.DropReplicas(self.client_id, drops))
        self.barrier()

    def barrier(self, timeout: float | None = None) -> None:
        """Return once the scheduler has handled (and recorded) all we sent before."""
        request_id = self._answers.expect()
        self._sender.post(wire.Barrier(self.client_id, request_id))
        self._answers.one(request_id, timeout or self._timeout())


def _bytes_per_worker(
    pool: Iterable[str], who_has: dict[str, list[str]], nbytes: dict[str, int]
) -> dict[str, int]:
    load = {w: 0 for w in pool}
    for key, holders in who_has.items():
        for w in holders:
            if w in load:
                load[w] += nbytes.get(key, 0)
    return load


def plan_rebalance(
    pool: list[str], who_has: dict[str, list[str]], nbytes: dict[str, int]
) -> list[tuple[str, str, str]]:
    """Moves ``(key, sender, recipient)`` that bring every worker of ``pool`` near the mean
    of bytes held; a move is made only when it narrows the gap between the two (pure)."""
    load = _bytes_per_worker(pool, who_has, nbytes)
    held = {w: [k for k, hs in who_has.items() if w in hs] for w in pool}
    mean = sum(load.values()) / len(pool)
    moves = []
    for sender in sorted(pool, key=lambda w: (-load[w], w)):
        for key in sorted(held[sender], key=lambda k: (-nbytes.get(k, 0), k)):
            size = nbytes.get(key, 0)
            if load[sender] <= mean or size <= 0:
                break
            recipient = min(
                (w for w in pool if w not in who_has[key] and w != sender),
                key=lambda w: (load[w], w),
                default=None,
            )
            if recipient is None or load[recipient] + size >= load[sender]:
                continue
            moves.append((key, sender, recipient))
            load[sender] -= size
            load[recipient] += size
            who_has[key] = [w for w in who_has[key] if w != sender] + [recipient]
    return moves
