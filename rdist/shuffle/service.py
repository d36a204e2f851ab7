"""A worker's side of the exchange: sending pieces to owners, receiving and handing them out.

Messages on the data plane (the worker's data server hands every ``shuffle-*`` op here):

- ``shuffle-push`` ``{id, source, items}`` + frames: pieces of input partition ``source``
  for output partitions owned here (``items`` as :func:`rdist.comm.transfer.encode_frame_items`,
  keyed by the output partition's number); answered once stored, so a transfer task that
  finished has delivered everything it split.
- ``shuffle-pull`` ``{id, part}``: the pieces of output ``part`` held here, removed (an
  unpack the scheduler placed elsewhere than on the owner asks for them).

The connections are the worker's own pool: authenticated (HMAC challenge on the cluster's
secret) and TLS when configured, like every other transfer between workers.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from rdist.comm.transfer import encode_frame_items, is_local, split_items
from rdist.shuffle.inbox import DEFAULT_MEMORY_BUDGET, Inbox

if TYPE_CHECKING:
    from rdist.worker.server import Worker

PUSH_OP = "shuffle-push"
PULL_OP = "shuffle-pull"
#: serialized bytes per push message: large enough to amortize a round trip, small enough
#: that the receiver's memory is not flooded by one message
PUSH_BYTES = 32 * 2**20
#: pushes in flight from one worker (to all peers together)
SENDERS = 4

_services: weakref.WeakKeyDictionary[Any, ShuffleService] = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


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
        self.inbox = Inbox(getattr(worker.data, "_base", None), budget)
        self.senders = ThreadPoolExecutor(SENDERS, thread_name_prefix="rdist-shuffle")

    @property
    def address(self) -> str:
        return str(self.worker.address)

    # -- receiving -------------------------------------------------------------------------
    def handle(self, header: dict[str, Any], frames: list[Any]) -> tuple[Any, ...]:
        op = header.get("op")
        exchange = header.get("id")
        if not isinstance(exchange, str):
            return {"error": f"{op}: no exchange id"}, []
        if op == PUSH_OP:
            source = header.get("source")
            if not isinstance(source, int):
                return {"error": f"{op}: no source partition"}, []
            pieces = {int(k): v for k, v in split_items(header, frames).items()}
            self.inbox.add(exchange, source, pieces)
            return {"ok": True}, []
        if op == PULL_OP:
            part = header.get("part")
            if not isinstance(part, int):
                return {"error": f"{op}: no output partition"}, []
            taken = self.inbox.take(exchange, part)
            reply, out = encode_frame_items(((str(s), f) for s, f in taken), compress=False)
            reply["ok"] = True
            return reply, out
        return {"error": f"unknown op {op!r}"}, []

    # -- sending ---------------------------------------------------------------------------
    def push(self, exchange: str, source: int, by_owner: dict[str, dict[int, list[Any]]]) -> None:
        """Deliver serialized pieces (owner -> output -> frames); returns once all are stored."""
        pending = []
        for owner, pieces in by_owner.items():
            if owner == self.address:
                self.inbox.add(exchange, source, pieces)
                continue
            for batch in _batches(pieces, PUSH_BYTES):
                pending.append(self.senders.submit(self._send, owner, exchange, source, batch))
        for fut in pending:
            fut.result()  # a peer that cannot be reached fails the transfer task

    def _send(self, owner: str, exchange: str, source: int, pieces: dict[int, list[Any]]) -> None:
        header, frames = encode_frame_items(
            ((str(p), f) for p, f in pieces.items()), compress=not is_local(owner)
        )
        header.update(op=PUSH_OP, id=exchange, source=source)
        reply, _ = self.worker.dataplane.pool.request(owner, header, frames)
        if not reply.get("ok"):
            raise ConnectionError(f"{owner} refused shuffle {exchange}: {reply.get('error')}")

    def pull(self, owner: str, exchange: str, part: int) -> list[tuple[int, list[Any]]]:
        reply, frames = self.worker.dataplane.pool.request(
            owner, {"op": PULL_OP, "id": exchange, "part": part}
        )
        if not reply.get("ok"):
            raise ConnectionError(f"{owner} cannot give shuffle {exchange}: {reply.get('error')}")
        return sorted((int(s), f) for s, f in split_items(reply, frames).items())


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
