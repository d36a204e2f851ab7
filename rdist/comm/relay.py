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
from typing import Any

import msgpack

from rdist.comm.buffers import host_buffer
from rdist.protocol import messages, serialize
from rdist.store import RedisStore
from rdist.store.keys import PAYLOAD_FIELD

log = logging.getLogger("rdist.comm")

CHUNK_BYTES = 4 * 1024 * 1024
#: Bytes queued on one pipeline before it is sent (bounds the client-side buffering).
PIPELINE_BYTES = 64 * 1024 * 1024
DEFAULT_TTL = 120
#: How long a requester waits for the holder's answer before giving up on it.
REPLY_TIMEOUT = 60.0
#: While waiting, how often to check the holder is still registered.
ALIVE_CHECK_SECONDS = 2.0

RELAY_OPS = frozenset({"publish", "published", "load", "loaded"})


def ttl_seconds() -> int:
    return int(os.environ.get("RDIST_TRANSFER_TTL", DEFAULT_TTL))


class Replies:
    """Answers awaited on this process's own stream, by request id."""

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def expect(self, request_id: str) -> None:
        with self._lock:
            self._waiting[request_id] = (threading.Event(), [])

    def resolve(self, msg: dict[str, Any]) -> bool:
        with self._lock:
            waiter = self._waiting.get(str(msg.get("id")))
        if waiter is None:
            return False
        waiter[1].append(msg)
        waiter[0].set()
        return True

    def wait(
        self, request_id: str, timeout: float, alive: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
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
        self.reply_to = [reply_to[0], reply_to[1]]
        self.replies = replies
        self.timeout = timeout

    def _stream(self, to: list[str]) -> str:
        kind, ident = to
        keys = self.store.keys
        return keys.worker_stream(ident) if kind == "w" else keys.client_stream(ident)

    def _alive(self, worker: str) -> Callable[[], bool]:
        return lambda: bool(self.store.redis.hexists(self.store.keys.workers, worker))

    # -- writing and reading chunks --------------------------------------------------------
    def write(self, request_id: str, items: dict[str, list[Any]]) -> None:
        """Chunks of every item, in pipelines of bounded size, each hash with a TTL."""
        ttl = ttl_seconds()
        pipe, queued = self.store.pipeline(), 0
        for key, frames in items.items():
            head, parts = serialize.encode_frames(frames, compress=True)
            name = self.store.keys.transfer(request_id, key)
            counts = []
            for i, part in enumerate(parts):
                view = memoryview(part).cast("B")
                pieces = [view[j : j + CHUNK_BYTES] for j in range(0, view.nbytes, CHUNK_BYTES)]
                counts.append(len(pieces))
                for j, piece in enumerate(pieces):
                    pipe.hset(name, f"{i}.{j}", piece)
                    queued += piece.nbytes
                    if queued >= PIPELINE_BYTES:
                        pipe.expire(name, ttl)
                        pipe.execute()
                        pipe, queued = self.store.pipeline(), 0
            pipe.hset(name, "m", msgpack.packb({"head": head, "n": counts}))
            pipe.expire(name, ttl)
        pipe.execute()

    def read(self, request_id: str, keys: list[str]) -> dict[str, list[Any]]:
        """The frames of ``keys`` written under ``request_id``; the hashes are deleted."""
        names = [self.store.keys.transfer(request_id, k) for k in keys]
        pipe = self.store.pipeline()
        for name in names:
            pipe.hgetall(name)
        if names:
            pipe.delete(*names)
        replies = pipe.execute()
        out = {}
        for key, fields in zip(keys, replies):
            meta = fields.get(b"m")
            if meta is None:  # expired before we read it
                raise ConnectionError(f"data of {key!r} expired in Redis before it was read")
            info = msgpack.unpackb(meta)
            frames = [_assemble(fields, i, n, writable=i > 0) for i, n in enumerate(info["n"])]
            out[key] = serialize.decode_frames(info["head"], frames)
        return out

    # -- fetching (requester) and publishing (holder) --------------------------------------
    def fetch(self, holder: str, keys: list[str]) -> dict[str, list[Any]]:
        request_id = uuid.uuid4().hex
        self.replies.expect(request_id)
        self.store.redis.xadd(
            self.store.keys.worker_stream(holder),
            {PAYLOAD_FIELD: messages.encode("publish", id=request_id, keys=keys, to=self.reply_to)},
        )
        answer = self.replies.wait(request_id, self.timeout, self._alive(holder))
        return self.read(request_id, [k for k in answer.get("keys", ()) if k in keys])

    def publish(
        self, msg: dict[str, Any], frames_of: Callable[[list[str]], dict[str, list[Any]]]
    ) -> None:
        """Write the requested keys we hold, then answer (also when that failed)."""
        keys = [k for k in msg.get("keys", ()) if isinstance(k, str)]
        error = None
        try:
            found = frames_of(keys)
            self.write(str(msg["id"]), found)
        except Exception as exc:
            log.exception("publishing %d keys through Redis failed", len(keys))
            found, error = {}, f"{type(exc).__name__}: {exc}"
        self.store.redis.xadd(
            self._stream(list(msg["to"])),
            {
                PAYLOAD_FIELD: messages.encode(
                    "published",
                    id=msg["id"],
                    keys=list(found),
                    missing=[k for k in keys if k not in found],
                    error=error,
                )
            },
        )

    # -- pushing (client) and loading (worker) ---------------------------------------------
    def push(self, worker: str, items: dict[str, list[Any]]) -> None:
        request_id = uuid.uuid4().hex
        self.write(request_id, items)
        self.replies.expect(request_id)
        self.store.redis.xadd(
            self.store.keys.worker_stream(worker),
            {
                PAYLOAD_FIELD: messages.encode(
                    "load", id=request_id, keys=list(items), to=self.reply_to
                )
            },
        )
        answer = self.replies.wait(request_id, self.timeout, self._alive(worker))
        if answer.get("error"):
            raise RuntimeError(f"worker {worker} could not load scattered data: {answer['error']}")

    def load(
        self, msg: dict[str, Any], store_frames: Callable[[dict[str, list[Any]]], None]
    ) -> None:
        error = None
        try:
            store_frames(
                self.read(str(msg["id"]), [k for k in msg.get("keys", ()) if isinstance(k, str)])
            )
        except Exception as exc:
            log.exception("loading data pushed through Redis failed")
            error = f"{type(exc).__name__}: {exc}"
        self.store.redis.xadd(
            self._stream(list(msg["to"])),
            {PAYLOAD_FIELD: messages.encode("loaded", id=msg["id"], error=error)},
        )


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


def check_relay_message(msg: dict[str, Any]) -> bool:
    """True when a relay message has the fields its handler needs."""
    if not isinstance(msg.get("id"), str):
        return False
    if msg["op"] in ("publish", "load"):
        to = msg.get("to")
        return (
            isinstance(msg.get("keys"), list)
            and isinstance(to, list)
            and len(to) == 2
            and to[0] in ("w", "c")
            and isinstance(to[1], str)
        )
    return True
