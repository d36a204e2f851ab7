"""Moving data through Redis, for peers that cannot reach each other.

Where dynos (or containers) are firewalled from each other, data goes through the one
service everybody reaches. A requester asks the holder, through the holder's worker
stream, to publish a batch of keys; the holder writes each key's serialized frames in
chunks under a key of its own with a time to live, and answers on the requester's stream;
the requester reads the chunks and deletes them::

    requester -> worker:<holder>     {"op": "publish", "id", "keys": [...], "to": [kind, id]}
    holder    -> Redis               hash  transfer:<id>:<key>   (TTL, see below)
    holder    -> <requester stream>  {"op": "published", "id", "keys": [...], "missing": [...]}
    requester -> Redis               HGETALL, then DEL

Pushing data to a worker (scatter in ``redis`` mode) is the same the other way round: the
client writes the chunks, then ``{"op": "load", ...}`` to the worker, which answers
``{"op": "loaded", ...}``. ``kind`` is ``"w"`` (a worker address) or ``"c"`` (a client id).

Chunk hash layout: field ``m`` holds msgpack ``{"head": frames header, "n": [chunks per
frame]}``; field ``<i>.<j>`` holds chunk ``j`` of frame ``i`` (at most :data:`CHUNK_BYTES`).
Frames are lz4-compressed where that pays (Redis memory and bandwidth are dear). Every
hash expires after ``RDIST_TRANSFER_TTL`` seconds (default 120) even if nobody reads it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from rdist.comm.buffers import host_buffer
from rdist.protocol import serialize
from rdist.protocol.wire import Load, Loaded, Message, Publish, Published, RelayMeta, ReplyTo
from rdist.store import RedisStore

log = logging.getLogger("rdist.comm")
M = TypeVar("M", bound=Message)

CHUNK_BYTES = 4 * 1024 * 1024
#: Bytes queued on one pipeline before it is sent (bounds the client-side buffering).
PIPELINE_BYTES = 64 * 1024 * 1024
DEFAULT_TTL = 120
#: How long a requester waits for the holder's answer before giving up on it.
REPLY_TIMEOUT = 60.0
#: While waiting, how often to check the holder is still registered.
ALIVE_CHECK_SECONDS = 2.0


def ttl_seconds() -> int:
    return int(os.environ.get("RDIST_TRANSFER_TTL", DEFAULT_TTL))


class Replies:
    """Answers awaited on this process's own stream, by request id (any message with an
    ``id``; a map with an ``"id"`` is accepted too, from readers not decoding yet)."""

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[threading.Event, list[Any]]] = {}
        self._lock = threading.Lock()

    def expect(self, request_id: str) -> None:
        with self._lock:
            self._waiting[request_id] = (threading.Event(), [])

    def resolve(self, msg: Published | Loaded) -> bool:
        with self._lock:
            waiter = self._waiting.get(msg.id)
        if waiter is None:
            return False
        waiter[1].append(msg)
        waiter[0].set()
        return True

    def wait(self, request_id: str, timeout: float, alive: Callable[[], bool] | None = None) -> Any:
        with self._lock:
            event, box = self._waiting[request_id]
        deadline = time.monotonic() + timeout
        try:
            while not event.wait(min(ALIVE_CHECK_SECONDS, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"no answer to transfer request {request_id} within {timeout} s"
                    )
                if alive is not None and not alive():
                    raise ConnectionError("the peer left before answering")
            return box[0]
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)


def _typed(answer: Any, cls: type[M]) -> M:
    if not isinstance(answer, cls):
        raise TypeError(f"expected a {cls.__name__} answer, got {type(answer).__name__}")
    return answer


class RedisRelay:
    """One process's side of the Redis path: ``reply_to`` names its own stream."""

    def __init__(
        self,
        store: RedisStore,
        reply_to: tuple[str, str],
        replies: Replies,
        timeout: float = REPLY_TIMEOUT,
    ) -> None:
        self.store = store
        self.reply_to = ReplyTo(reply_to[0], reply_to[1])
        self.replies = replies
        self.timeout = timeout

    def _alive(self, worker: str) -> Callable[[], bool]:
        return lambda: self.store.workers.exists(worker)

    # -- writing and reading chunks --------------------------------------------------------
    def write(self, request_id: str, items: dict[str, list[Any]]) -> None:
        """Chunks of every item, in pipelines of bounded size, each hash with a TTL."""
        ttl = ttl_seconds()
        transfers = self.store.transfers
        pipe, queued = transfers.pipeline(), 0
        for key, frames in items.items():
            head, parts = serialize.encode_frames(frames, compress=True)
            counts = []
            for i, part in enumerate(parts):
                view = memoryview(part).cast("B")
                pieces = [view[j : j + CHUNK_BYTES] for j in range(0, view.nbytes, CHUNK_BYTES)]
                counts.append(len(pieces))
                for j, piece in enumerate(pieces):
                    transfers.put_chunk(request_id, key, f"{i}.{j}", piece, pipe)
                    queued += piece.nbytes
                    if queued >= PIPELINE_BYTES:
                        transfers.keep_alive(request_id, key, ttl, pipe)
                        pipe.execute()
                        pipe, queued = transfers.pipeline(), 0
            transfers.seal(request_id, key, RelayMeta(head, counts).encode(), ttl, pipe)
        pipe.execute()

    def read(self, request_id: str, keys: list[str]) -> dict[str, list[Any]]:
        """The frames of ``keys`` written under ``request_id``; the hashes are deleted."""
        out = {}
        for key, fields in zip(keys, self.store.transfers.take(request_id, keys)):
            meta = fields.get(b"m")
            if meta is None:  # expired before we read it
                raise ConnectionError(f"data of {key!r} expired in Redis before it was read")
            info = RelayMeta.decode(meta)
            frames = [_assemble(fields, i, n, writable=i > 0) for i, n in enumerate(info.chunks)]
            out[key] = serialize.decode_frames(info.head, frames)
        return out

    # -- fetching (requester) and publishing (holder) --------------------------------------
    def fetch(self, holder: str, keys: list[str]) -> dict[str, list[Any]]:
        request_id = uuid.uuid4().hex
        self.replies.expect(request_id)
        self.store.streams.to_worker(holder, Publish(request_id, keys, self.reply_to))
        answer = self.replies.wait(request_id, self.timeout, self._alive(holder))
        published = _typed(answer, Published)
        return self.read(request_id, [k for k in published.keys if k in keys])

    def publish(self, msg: Publish, frames_of: Callable[[list[str]], dict[str, list[Any]]]) -> None:
        """Write the requested keys we hold, then answer (also when that failed)."""
        keys, error = msg.keys, None
        try:
            found = frames_of(keys)
            self.write(msg.id, found)
        except Exception as exc:
            log.exception("publishing %d keys through Redis failed", len(keys))
            found, error = {}, f"{type(exc).__name__}: {exc}"
        missing = [k for k in keys if k not in found]
        answer = Published(msg.id, list(found), missing, error)
        self.store.streams.reply(msg.to.kind, msg.to.ident, answer)

    # -- pushing (client) and loading (worker) ---------------------------------------------
    def push(self, worker: str, items: dict[str, list[Any]]) -> None:
        request_id = uuid.uuid4().hex
        self.write(request_id, items)
        self.replies.expect(request_id)
        self.store.streams.to_worker(worker, Load(request_id, list(items), self.reply_to))
        answer = self.replies.wait(request_id, self.timeout, self._alive(worker))
        error = _typed(answer, Loaded).error
        if error:
            raise RuntimeError(f"worker {worker} could not load scattered data: {error}")

    def load(self, msg: Load, store_frames: Callable[[dict[str, list[Any]]], None]) -> None:
        error = None
        try:
            store_frames(self.read(msg.id, msg.keys))
        except Exception as exc:
            log.exception("loading data pushed through Redis failed")
            error = f"{type(exc).__name__}: {exc}"
        self.store.streams.reply(msg.to.kind, msg.to.ident, Loaded(msg.id, error))


def _assemble(fields: dict[bytes, bytes], frame: int, count: int, writable: bool) -> Any:
    pieces = [fields[f"{frame}.{j}".encode()] for j in range(count)]
    if len(pieces) == 1 and not writable:
        return pieces[0]
    buf = host_buffer(sum(len(p) for p in pieces))
    view, pos = memoryview(buf).cast("B"), 0
    for piece in pieces:
        view[pos : pos + len(piece)] = piece
        pos += len(piece)
    return buf
