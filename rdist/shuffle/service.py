"""A worker's side of the exchange: sending pieces to owners, receiving and handing them out.

Messages on the data plane (the worker's data server hands every ``shuffle-*`` op here):

- ``shuffle-push`` ``{id, run, source, items}`` + frames: pieces of input partition ``source``
  for output partitions owned here (``items`` as :func:`rdist.comm.transfer.encode_frame_items`,
  keyed by the output partition's number); answered once stored, so a transfer task that
  finished has delivered everything it split.
- ``shuffle-pull`` ``{id, run, part}``: the pieces of output ``part`` held here, removed (an
  unpack the scheduler placed elsewhere than on the owner asks for them).

Pieces are kept per run (``<id>:<run>`` in the inbox): the first piece of a newer run makes
the pieces of older runs of the same exchange go, and an unpack of an older run is
rescheduled rather than given a partition that may have gone.

The connections are the worker's own pool: authenticated (HMAC challenge on the cluster's
secret) and TLS when configured, like every other transfer between workers.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rdist.comm.transfer import encode_frame_items, is_local, split_items
from rdist.exceptions import Reschedule
from rdist.shuffle.inbox import DEFAULT_MEMORY_BUDGET, Inbox, PiecesGone

#: the worker (``rdist.worker.server.Worker``): not imported, the client imports this package
Worker = Any

PUSH_OP = "shuffle-push"
PULL_OP = "shuffle-pull"
#: serialized bytes per push message: large enough to amortize a round trip, small enough
#: that the receiver's memory is not flooded by one message
PUSH_BYTES = 8 * 2**20
#: pushes in flight from one worker (to all peers together)
SENDERS = 4

_services: weakref.WeakKeyDictionary[Any, ShuffleService] = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


class PeerLost(ConnectionError):
    """The worker at ``address`` cannot be reached (or lost the pieces it was sent)."""

    def __init__(self, address: str, why: str) -> None:
        super().__init__(f"{address}: {why}")
        self.address = address


def service_of(worker: Worker) -> ShuffleService:
    """The worker's exchange service, made on first use (a push may come before any task)."""
    with _services_lock:
        svc = _services.get(worker)
        if svc is None:
            svc = _services[worker] = ShuffleService(worker)
        return svc


def handle(worker: Worker, header: dict[str, Any], frames: list[Any]) -> tuple[Any, ...]:
    """The data-plane hook: one ``shuffle-*`` request of a peer."""
    return service_of(worker).handle(header, frames)


class ShuffleService:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        budget = DEFAULT_MEMORY_BUDGET
        limit = getattr(worker, "memory_limit", 0) or 0
        if limit:  # a quarter of the worker's limit at most: the rest is for the tasks
            budget = min(budget, max(limit // 4, 8 * 2**20))
        # under the worker's own directory: it goes when the worker closes
        self.inbox = Inbox(worker.local_directory, budget)
        self.senders = ThreadPoolExecutor(SENDERS, thread_name_prefix="rdist-shuffle")
        self._lock = threading.Lock()
        self._latest: dict[str, int] = {}  #: exchange -> the newest run seen here
        self.received = 0  #: pieces stored here (tests, metrics)

    def _seen(self, exchange: str, run: int) -> bool:
        """Note ``run`` of ``exchange``; False when a newer run was seen already."""
        with self._lock:
            latest = self._latest.get(exchange, -1)
            if run < latest:
                return False
            self._latest[exchange] = run
        for old in range(latest if latest >= 0 else run, run):
            self.inbox.forget(f"{exchange}:{old}")
        return True

    def _stale(self, exchange: str, run: int) -> bool:
        with self._lock:
            return run < self._latest.get(exchange, -1)

    @property
    def address(self) -> str:
        return str(self.worker.address)

    # -- receiving -------------------------------------------------------------------------
    def handle(self, header: dict[str, Any], frames: list[Any]) -> tuple[Any, ...]:
        op = header.get("op")
        exchange = header.get("id")
        if not isinstance(exchange, str):
            return {"error": f"{op}: no exchange id"}, []
        run = header.get("run")
        if not isinstance(run, int):
            return {"error": f"{op}: no run"}, []
        if op == PUSH_OP:
            source = header.get("source")
            if not isinstance(source, int):
                return {"error": f"{op}: no source partition"}, []
            pieces = {int(k): v for k, v in split_items(header, frames).items()}
            self.add(exchange, run, source, pieces)
            return {"ok": True}, []
        if op == PULL_OP:
            part = header.get("part")
            if not isinstance(part, int):
                return {"error": f"{op}: no output partition"}, []
            if self._stale(exchange, run):
                return {"error": f"run {run} of {exchange} was replaced here"}, []
            try:
                taken = self.inbox.take(f"{exchange}:{run}", part)
            except PiecesGone as exc:
                return {"error": str(exc), "gone": True}, []
            reply, out = encode_frame_items(((str(s), f) for s, f in taken), compress=False)
            reply["ok"] = True
            return reply, out
        return {"error": f"unknown op {op!r}"}, []

    def add(self, exchange: str, run: int, source: int, pieces: dict[int, list[Any]]) -> None:
        if self._seen(exchange, run):  # pieces of a replaced run are dropped
            self.inbox.add(f"{exchange}:{run}", source, pieces)
            self.received += len(pieces)

    def take(self, exchange: str, run: int, part: int) -> list[tuple[int, list[Any]]]:
        """The pieces of output ``part`` of ``run`` held here (Reschedule: a newer run of the
        exchange already replaced them)."""
        if self._stale(exchange, run):
            raise Reschedule()
        return self.inbox.take(f"{exchange}:{run}", part)

    # -- sending ---------------------------------------------------------------------------
    def push(
        self, exchange: str, run: int, source: int, by_owner: dict[str, dict[int, list[Any]]]
    ) -> None:
        """Deliver serialized pieces (owner -> output -> frames); returns once all are stored
        (PeerLost: an owner cannot be reached)."""
        pending = []
        for owner, pieces in by_owner.items():
            if owner == self.address:
                self.add(exchange, run, source, pieces)
                continue
            for batch in _batches(pieces, PUSH_BYTES):
                pending.append(self.senders.submit(self._send, owner, exchange, run, source, batch))
        for fut in pending:
            fut.result()

    def _send(
        self, owner: str, exchange: str, run: int, source: int, pieces: dict[int, list[Any]]
    ) -> None:
        header, frames = encode_frame_items(
            ((str(p), f) for p, f in pieces.items()), compress=not is_local(owner)
        )
        header.update(op=PUSH_OP, id=exchange, run=run, source=source)
        reply, _ = self._request(owner, header, frames)
        if not reply.get("ok"):
            raise PeerLost(owner, f"refused shuffle {exchange}: {reply.get('error')}")

    def pull(self, owner: str, exchange: str, run: int, part: int) -> list[tuple[int, list[Any]]]:
        header = {"op": PULL_OP, "id": exchange, "run": run, "part": part}
        reply, frames = self._request(owner, header, [])
        if reply.get("gone"):
            raise PiecesGone(reply.get("error", ""))
        if not reply.get("ok"):
            raise PeerLost(owner, f"cannot give shuffle {exchange}: {reply.get('error')}")
        return sorted((int(s), f) for s, f in split_items(reply, frames).items())

    def _request(self, owner: str, header: dict[str, Any], frames: list[Any]) -> Any:
        try:
            return self.worker.dataplane.pool.request(owner, header, frames)
        except (ConnectionError, OSError) as exc:
            raise PeerLost(owner, str(exc) or type(exc).__name__) from exc


def _batches(pieces: dict[int, list[Any]], limit: int) -> list[dict[int, list[Any]]]:
    out: list[dict[int, list[Any]]] = [{}]
    size = 0
    for part, frames in pieces.items():
        n = sum(len(memoryview(f).cast("B")) for f in frames)
        if out[-1] and size + n > limit:
            out.append({})
            size = 0
        out[-1][part] = frames
        size += n
    return out
