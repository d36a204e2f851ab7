"""How a process reaches actors: the :class:`ActorFuture` of a call, and its two paths.

- **direct** (transfer modes ``p2p`` and ``auto``): one authenticated connection from this
  process to each actor worker's data server (:class:`Channel`), calls pipelined on it
  and answered on it in order, read by one thread per connection. No Redis, no scheduler:
  a round trip is the network's plus the method's time.
- **through Redis** (``redis``, and ``auto`` for a worker whose server refused us): the
  call goes on the worker's stream, the answer comes on the calling client's stream
  (:class:`~rdist.client.actor_calls.ActorRelay`).

A call whose worker is gone -- the connection breaks, or the worker's record disappears
while we wait -- errs with :class:`ActorLost`, naming the actor and the worker: an actor
lives exactly as long as its worker.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rdist.actors.host import ACTOR_OP
from rdist.comm.core import Comm, connect
from rdist.comm.transfer import transfer_mode
from rdist.protocol import serialize
from rdist.timeouts import seconds

if TYPE_CHECKING:
    from rdist.client.actor_calls import ActorRelay

#: While waiting for an answer, how often to look whether the actor's worker still lives.
ALIVE_CHECK_SECONDS = 2.0
CONNECT_SECONDS = 5.0


class ActorLost(ConnectionError):
    """The worker holding the actor is gone (and the actor with it: actors do not move)."""


def lost(key: str, address: str, why: object) -> ActorLost:
    return ActorLost(
        f"actor {key!r} is lost: its worker {address} is gone ({why}); an actor lives only "
        "as long as the worker it was made on"
    )


class ActorFuture:
    """The outcome of one actor method call (as dask's): ``result(timeout)``, ``done()``,
    awaitable. Its value is kept once it arrived."""

    __slots__ = ("_event", "_ok", "_payload", "_value", "_fetch", "_alive", "key", "address")

    def __init__(self, key: str, address: str) -> None:
        self.key = key
        self.address = address
        self._event = threading.Event()
        self._ok = False
        self._payload: Any = None  #: frames (direct), a blob (Redis) or an exception
        self._value: Any = _UNSET
        #: the Redis path's wait for the answer: ``fetch(timeout) -> settled?``
        self._fetch: Callable[[float], bool] | None = None
        self._alive: Callable[[], bool] | None = None

    # -- settling (the transports) -------------------------------------------------------
    def _settle(self, ok: bool, payload: Any) -> None:
        self._ok, self._payload = ok, payload
        self._event.set()

    def _fail(self, error: BaseException) -> None:
        self._value = _UNSET
        self._settle(False, error)

    # -- the caller's side ---------------------------------------------------------------
    def done(self) -> bool:
        if not self._event.is_set() and self._fetch is not None:
            self._fetch(0.0)
        return self._event.is_set()

    def result(self, timeout: Any = None) -> Any:
        limit = seconds(timeout)
        if not self._wait(limit):
            raise TimeoutError(f"actor call on {self.key!r} not done after {timeout} s")
        if self._value is _UNSET:
            self._value = self._load()
        if self._ok:
            return self._value
        raise self._value

    def _wait(self, limit: float | None) -> bool:
        deadline = None if limit is None else time.monotonic() + limit
        while not self._event.is_set():
            remaining = ALIVE_CHECK_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            step = min(remaining, ALIVE_CHECK_SECONDS)
            if self._fetch is not None:
                if self._fetch(step):
                    break
            elif self._event.wait(step):
                break
            if self._alive is not None and not self._alive():
                self._fail(lost(self.key, self.address, "its record left the cluster"))
        return True

    def _load(self) -> Any:
        payload = self._payload
        if isinstance(payload, BaseException):
            return payload
        try:
            if isinstance(payload, bytes):
                value = serialize.from_blob(payload)
            else:
                value = serialize.loads(payload)
        except serialize.SerializationError as exc:
            self._ok = False
            return exc
        if self._ok:
            return value
        error, text = value
        if text and hasattr(error, "add_note"):
            error.add_note("Remote traceback (actor method):\n" + text.rstrip())
        return error

    def __await__(self) -> Any:
        return self._async_result().__await__()

    async def _async_result(self) -> Any:
        if not self._event.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self._wait, None)
        return self.result()

    def __repr__(self) -> str:
        return "<ActorFuture>" if not self._event.is_set() else "<ActorFuture: done>"


_UNSET: Any = object()


# -- direct: a connection to the actor's worker ------------------------------------------------


class Channel:
    """Calls to one worker's actors on one connection: sent in order (under a lock),
    answered in order, the answers read by a thread of their own."""

    def __init__(self, address: str, comm: Comm, on_broken: Callable[[Channel], None]) -> None:
        self.address = address
        self._comm = comm
        self._on_broken = on_broken
        self._sending = threading.Lock()
        self._pending: deque[ActorFuture] = deque()
        self._broken: BaseException | None = None
        threading.Thread(target=self._read, name="rdist-actor-answers", daemon=True).start()

    def call(self, future: ActorFuture, header: dict[str, Any], frames: list[Any]) -> None:
        with self._sending:
            if self._broken is not None:
                future._fail(lost(future.key, self.address, self._broken))
                return
            self._pending.append(future)  # before sending: the answer may come at once
            try:
                self._comm.send(header, frames)
            except (ConnectionError, OSError) as exc:
                self._break(exc)

    def idle(self) -> bool:
        return not self._pending and self._broken is None

    def close(self) -> None:
        self._break(ConnectionError("closed"))

    def _read(self) -> None:
        while True:
            try:
                header, frames = self._comm.recv()
            except Exception as exc:  # closed, reset, garbage: every pending call is lost
                self._break(exc)
                return
            try:
                future = self._pending.popleft()
            except IndexError:  # an answer nobody asked for: the stream is out of step
                self._break(RuntimeError("unexpected answer"))
                return
            future._settle(bool(header.get("ok")), frames)

    def _break(self, why: BaseException) -> None:
        if self._broken is None:
            self._broken = why
            self._on_broken(self)
            self._comm.close()
        while self._pending:
            future = self._pending.popleft()
            future._fail(lost(future.key, self.address, why))


class Channels:
    """This process's channels: per worker address one for the calls that keep their
    order, and a few more for coroutine methods -- each of those is sent on a channel with
    nothing pending, so that one may wait for another (``await event.wait()`` while
    ``set()`` comes) instead of queueing behind it on one connection."""

    def __init__(self) -> None:
        self._ordered: dict[tuple[str, bytes], Channel] = {}
        self._spare: dict[tuple[str, bytes], list[Channel]] = {}
        self._lock = threading.Lock()

    def get(self, address: str, secret: bytes, free: bool = False) -> Channel:
        """The channel to ``address`` (``free``: one with no call pending); raises
        ConnectionError/OSError when a connection cannot be opened."""
        where = (address, secret)
        with self._lock:
            if not free and where in self._ordered:
                return self._ordered[where]
            if free:
                for channel in self._spare.get(where, ()):
                    if channel.idle():
                        return channel
        channel = Channel(address, connect(address, secret, CONNECT_SECONDS), self._drop)
        with self._lock:
            if free:
                self._spare.setdefault(where, []).append(channel)
                return channel
            if where not in self._ordered:
                self._ordered[where] = channel
                return channel
            found = self._ordered[where]
        channel.close()  # another thread connected first
        return found

    def _drop(self, channel: Channel) -> None:
        with self._lock:
            for where, ordered in list(self._ordered.items()):
                if ordered is channel:
                    del self._ordered[where]
            for spare in self._spare.values():
                if channel in spare:
                    spare.remove(channel)


CHANNELS = Channels()


# -- choosing the path -------------------------------------------------------------------------


class Caller:
    """How one client reaches actors (one per client, made on first use)."""

    def __init__(self, client: Any) -> None:
        self._store = client.store
        self._relay: ActorRelay = client.actor_relay
        self._mode = transfer_mode()
        self._secret: bytes | None = None
        #: workers whose data server refused us (``auto``): reached through Redis
        self._through_redis: set[str] = set()

    def call(
        self,
        key: str,
        address: str,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attribute: bool = False,
        coroutine: bool = False,
    ) -> ActorFuture:
        """Call ``name`` of the actor ``key`` on ``address`` (``coroutine``: an ``async
        def`` method, which may wait for other calls)."""
        future = ActorFuture(key, address)
        future._alive = lambda: self._relay.worker_alive(address)
        if self._mode != "redis" and address not in self._through_redis:
            try:
                channel = CHANNELS.get(address, self._cluster_secret(), free=coroutine)
            except (ConnectionError, OSError) as exc:
                if self._mode == "p2p" or not self._relay.worker_alive(address):
                    future._fail(lost(key, address, exc))
                    return future
                self._through_redis.add(address)  # alive, yet unreachable: through Redis
            else:
                header = {"op": ACTOR_OP, "key": key, "name": name, "attribute": attribute}
                frames = serialize.dumps((args, kwargs)) if args or kwargs else []
                channel.call(future, header, frames)
                return future
        self._call_through_redis(future, name, args, kwargs, attribute)
        return future

    def _call_through_redis(
        self,
        future: ActorFuture,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attribute: bool,
    ) -> None:
        relay = self._relay
        blob = serialize.to_blob((args, kwargs)) if args or kwargs else b""
        request_id = relay.call(future.address, future.key, name, blob, attribute)

        def fetch(timeout: float) -> bool:
            answer = relay.answer(request_id, timeout)
            if answer is not None:
                future._settle(answer.ok, answer.value)
            return answer is not None

        future._fetch = fetch

    def _cluster_secret(self) -> bytes:
        if self._secret is None:
            secret = self._store.meta.existing_secret()
            if secret is None:
                raise ConnectionError("the cluster secret is missing from Redis")
            self._secret = secret
        return self._secret
