"""The transfer protocol on top of a :class:`~rdist.comm.core.Comm`.

Requests (msgpack header, frames)::

    {"op": "get", "keys": [...], "compress": bool}
        -> {"status": "OK", "items": [[key, head, nframes], ...], "missing": [...]} + frames
        -> {"status": "busy"}   too many transfers are going out: ask again later
    {"op": "put", "items": [[key, head, nframes], ...]} + frames  ->  {"ok": True}

``head`` is :func:`rdist.protocol.serialize.encode_frames`'s header (frame sizes and lz4
flags). Many keys travel in one request; a requester batches keys per peer up to
:data:`BATCH_BYTES`, runs a bounded number of requests at once, and retries a busy peer
with backoff (trying other holders first). Transfer modes (``RDIST_TRANSFER``):

- ``p2p``   straight to the peer; a peer that cannot be reached counts as not having the data.
- ``redis`` always through Redis in chunks (:mod:`rdist.comm.relay`), for networks where
  peers cannot reach each other (Heroku's common runtime).
- ``auto``  (default) straight to the peer; a failed connection falls back to Redis, and
  that peer is reached through Redis for a while.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rdist.comm.handshake import PeerBusy
from rdist.comm.pool import ConnectionPool
from rdist.protocol import serialize

log = logging.getLogger("rdist.comm")

MODES = ("p2p", "redis", "auto")
#: Bytes asked of one peer in one request (dask uses 50 MB too): large enough to amortise
#: the round trip, small enough that the first dependent tasks can start early.
BATCH_BYTES = 50_000_000
#: Transfers a worker serves at once before answering "busy".
MAX_OUTGOING = 6
#: Requests a worker (or client) runs at once to fetch data.
MAX_INCOMING = 4
#: Replies below this size are served even when busy: refusing costs more than sending.
SMALL_REPLY = 1 << 20
#: How long a peer that refused our connection is reached through Redis (auto mode).
UNREACHABLE_SECONDS = 60.0
#: Give up on a peer that answers "busy" for this long.
BUSY_GIVE_UP_SECONDS = 120.0

OK, BUSY, FAILED = "ok", "busy", "failed"
FramesOf = Callable[[list[str]], dict[str, list[Any]]]


def transfer_mode(value: str | None = None) -> str:
    """``value``, else the configuration's ``comm.transfer`` (``RDIST_TRANSFER``,
    ``RDIST_COMM__TRANSFER``, the YAML file; ``auto`` by default); rejects unknown modes."""
    if not value:
        from rdist.config import load_config

        value = str(load_config().get("comm.transfer"))
    mode = value.strip().lower()
    if mode not in MODES:
        raise ValueError(f"transfer mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


# -- items: many serialized values in one message -----------------------------------------


def encode_frame_items(
    items: Iterable[tuple[str, list[Any]]], compress: bool = False
) -> tuple[dict[str, Any], list[Any]]:
    """``[(key, serialized frames)]`` -> (header with ``items``, frames to send)."""
    header_items, out = [], []
    for key, frames in items:
        head, parts = serialize.encode_frames(frames, compress=compress)
        header_items.append([key, head, len(parts)])
        out.extend(parts)
    return {"items": header_items}, out


def encode_items(
    values: dict[str, Any], compress: bool = False
) -> tuple[dict[str, Any], list[Any]]:
    return encode_frame_items(((k, serialize.dumps(v)) for k, v in values.items()), compress)


def split_items(header: dict[str, Any], frames: list[Any]) -> dict[str, list[Any]]:
    """The serialized frames of each key of a message (decompressed, not unpickled)."""
    out, pos = {}, 0
    for key, head, count in header.get("items", ()):
        out[key] = serialize.decode_frames(head, frames[pos : pos + count])
        pos += count
    return out


def decode_items(header: dict[str, Any], frames: list[Any]) -> dict[str, Any]:
    return {key: serialize.loads(parts) for key, parts in split_items(header, frames).items()}


def frames_nbytes(frames: list[Any]) -> int:
    return sum(serialize.frame_nbytes(f) for f in frames)


# -- the serving side ----------------------------------------------------------------------


class Gate:
    """A counter of transfers in progress that refuses, rather than waits, when full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def try_enter(self, force: bool = False) -> bool:
        with self._lock:
            if self.active >= self.limit and not force:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


class DataServer:
    """Answers ``get`` and ``put`` requests from the data a worker holds."""

    def __init__(
        self,
        frames_of: FramesOf,
        nbytes_of: Callable[[list[str]], int],
        put: Callable[[dict[str, list[Any]]], None],
        max_outgoing: int = MAX_OUTGOING,
    ) -> None:
        self.frames_of = frames_of
        self.nbytes_of = nbytes_of
        self.put = put
        self.gate = Gate(max_outgoing)
        self.refused = 0  #: "busy" answers given (tests and metrics)
        self.served = 0  #: keys sent

    def handle(self, header: dict[str, Any], frames: list[Any]) -> tuple[Any, ...]:
        op = header.get("op")
        if op == "get":
            return self._get(header)
        if op == "put":
            self.put(split_items(header, frames))
            return {"ok": True}, []
        return {"error": f"unknown op {op!r}"}, []

    def _get(self, header: dict[str, Any]) -> tuple[Any, ...]:
        keys = [k for k in header.get("keys", ()) if isinstance(k, str)]
        small = self.nbytes_of(keys) <= SMALL_REPLY
        if not self.gate.try_enter(force=small):
            self.refused += 1
            return {"status": "busy"}, []
        try:
            found = self.frames_of(keys)
            reply, out = encode_frame_items(found.items(), compress=bool(header.get("compress")))
        except BaseException:
            self.gate.leave()
            raise
        reply["status"] = "OK"
        reply["missing"] = [k for k in keys if k not in found]
        self.served += len(found)
        return reply, out, self.gate.leave


# -- the fetching side ---------------------------------------------------------------------


def plan_batches(
    wanted: dict[str, tuple[list[str], int]], me: str = "", max_bytes: int = BATCH_BYTES
) -> list[tuple[str, list[str]]]:
    """Group keys by the peer to ask, then cut each peer's keys into requests of at most
    ``max_bytes`` (at least one key each). Keys with no other holder than ``me`` get the
    peer ``""`` (nobody to ask). A key goes to the holder already chosen for most bytes."""
    per_peer: dict[str, list[str]] = {}
    planned: dict[str, int] = {}
    for key, (holders, nbytes) in wanted.items():
        candidates = [h for h in holders if h and h != me]
        if not candidates:
            per_peer.setdefault("", []).append(key)
            continue
        peer = max(candidates, key=lambda h: (planned.get(h, 0), -candidates.index(h)))
        per_peer.setdefault(peer, []).append(key)
        planned[peer] = planned.get(peer, 0) + max(1, nbytes)
    batches: list[tuple[str, list[str]]] = []
    for peer, keys in per_peer.items():
        batch: list[str] = []
        size = 0
        for key in keys:
            nbytes = max(1, wanted[key][1])
            if batch and size + nbytes > max_bytes and peer:
                batches.append((peer, batch))
                batch, size = [], 0
            batch.append(key)
            size += nbytes
        if batch:
            batches.append((peer, batch))
    return batches


@dataclass
class Backoff:
    """Exponential delays with jitter: 10 ms, 20 ms, ... up to ``cap``."""

    base: float = 0.01
    cap: float = 1.0
    attempt: int = field(default=0)

    def next(self) -> float:
        delay = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt += 1
        return delay * (0.5 + random.random() / 2)


def is_local(address: str) -> bool:
    """Peers on this host: compression never pays on loopback."""
    host = address.split("://", 1)[-1].rpartition(":")[0].strip("[]")
    return address.startswith("inproc://") or host in _local_names()


_LOCAL: set[str] = set()


def _local_names() -> set[str]:
    if not _LOCAL:
        names = {"127.0.0.1", "localhost", "::1", "0.0.0.0", socket.gethostname()}
        try:
            names.add(socket.gethostbyname(socket.gethostname()))
        except OSError:
            pass
        _LOCAL.update(names)
    return _LOCAL


class Gatherer:
    """Fetches serialized data from the peers holding it, by the transfer mode's rules."""

    def __init__(
        self,
        pool: ConnectionPool,
        mode: str = "auto",
        relay: Any = None,
        me: str = "",
        busy_give_up: float = BUSY_GIVE_UP_SECONDS,
    ) -> None:
        self.pool = pool
        self.mode = transfer_mode(mode)
        self.relay = relay
        self.me = me
        self.busy_give_up = busy_give_up
        self.unreachable: dict[str, float] = {}  #: peer -> monotonic time until which we use Redis
        self.busy_answers = 0

    def fetch(
        self, keys: list[str], holders: dict[str, list[str]]
    ) -> tuple[dict[str, list[Any]], list[str]]:
        """``(frames by key, keys no holder could give)``; asks the first listed holder first."""
        order = {k: [h for h in holders.get(k, ()) if h and h != self.me] for k in keys}
        got: dict[str, list[Any]] = {}
        backoff = Backoff()
        deadline = time.monotonic() + self.busy_give_up
        while True:
            groups: dict[str, list[str]] = {}
            for key in keys:
                if key not in got and order[key]:
                    groups.setdefault(order[key][0], []).append(key)
            if not groups:
                break
            busy = []
            for peer, group in groups.items():
                status, found = self._from_peer(peer, group)
                got.update(found)
                if status == BUSY and time.monotonic() < deadline:
                    busy.append(peer)
                    for key in group:  # let another holder, if any, go first next round
                        order[key] = order[key][1:] + order[key][:1]
                    continue
                for key in group:
                    if key not in found:
                        order[key].remove(peer)
            if busy and len(busy) == len(groups):
                time.sleep(backoff.next())
        return got, [k for k in keys if k not in got]

    def _from_peer(self, peer: str, keys: list[str]) -> tuple[str, dict[str, list[Any]]]:
        if self.mode == "redis" or (self.mode == "auto" and self._unreachable(peer)):
            return self._via_redis(peer, keys)
        try:
            header, frames = self.pool.request(
                peer, {"op": "get", "keys": keys, "compress": not is_local(peer)}
            )
        except PeerBusy:  # at its connection cap: like a "busy" answer, not unreachable
            self.busy_answers += 1
            return BUSY, {}
        except ValueError as exc:  # a holder address that does not parse (bad input)
            log.warning("cannot fetch %d keys from %r: %s", len(keys), peer, exc)
            return FAILED, {}
        except (ConnectionError, OSError) as exc:
            if self.mode == "auto" and self.relay is not None:
                log.warning(
                    "cannot reach %s (%s): moving its data through Redis for %g s",
                    peer,
                    exc,
                    UNREACHABLE_SECONDS,
                )
                self.unreachable[peer] = time.monotonic() + UNREACHABLE_SECONDS
                self.pool.drop(peer)
                return self._via_redis(peer, keys)
            log.warning("fetching %d keys from %s failed: %s", len(keys), peer, exc)
            return FAILED, {}
        if header.get("status") == "busy":
            self.busy_answers += 1
            return BUSY, {}
        return OK, split_items(header, frames)

    def _unreachable(self, peer: str) -> bool:
        until = self.unreachable.get(peer)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self.unreachable[peer]
        return False

    def _via_redis(self, peer: str, keys: list[str]) -> tuple[str, dict[str, list[Any]]]:
        if self.relay is None:
            return FAILED, {}
        try:
            return OK, self.relay.fetch(peer, keys)
        except Exception as exc:  # the holder is gone, Redis hiccups: other holders may do
            log.warning("fetching %d keys from %s through Redis failed: %s", len(keys), peer, exc)
            return FAILED, {}

    def put(self, address: str, items: dict[str, list[Any]]) -> None:
        """Store serialized values on the worker at ``address`` (scatter, hand-off)."""
        if self.mode == "redis" or (self.mode == "auto" and self._unreachable(address)):
            self._put_via_redis(address, items)
            return
        header, frames = encode_frame_items(items.items(), compress=not is_local(address))
        try:
            self._put_when_admitted(address, {**header, "op": "put"}, frames)
        except (ConnectionError, OSError) as exc:
            if self.mode != "auto" or self.relay is None:
                raise
            log.warning("cannot reach %s (%s): sending data through Redis", address, exc)
            self.unreachable[address] = time.monotonic() + UNREACHABLE_SECONDS
            self._put_via_redis(address, items)

    def _put_when_admitted(self, address: str, header: dict[str, Any], frames: list[Any]) -> None:
        """One ``put``, asked again with backoff while the peer is at its connection cap."""
        backoff = Backoff()
        deadline = time.monotonic() + self.busy_give_up
        while True:
            try:
                self.pool.request(address, header, frames)
                return
            except PeerBusy:
                self.busy_answers += 1
                if time.monotonic() >= deadline:
                    raise
                time.sleep(backoff.next())

    def _put_via_redis(self, address: str, items: dict[str, list[Any]]) -> None:
        if self.relay is None:
            raise ConnectionError(f"cannot reach {address} and no Redis relay is configured")
        self.relay.push(address, items)
