"""The worker's side of actors: the instances it holds, and running their methods.

``client.submit(Counter, actor=True)`` runs :func:`rdist.client.actor_calls.create_actor`
as an ordinary task: the worker's :class:`ActorHost` makes the instance and keeps it, and
an :class:`~rdist.actors.proxy.Actor` proxy is the task's (small) result. The instance
lives until the task's key is released (its last future dropped: the proxies hold one) or
its worker goes.

Calls arrive two ways and run the same way -- one at a time per worker, as dask's default
(a second call waits for the first; ``async def`` methods run on the host's event loop
thread instead, so one may wait for another):

- on the data plane (:meth:`ActorHost.handle_request`): a request on an authenticated
  connection to the worker's data server, answered on that connection -- the fast path;
- on the worker's stream (:meth:`ActorHost.call_from_stream`), answered on the caller's
  stream -- where peers cannot reach each other (transfer mode ``redis``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from rdist.protocol import serialize, wire

if TYPE_CHECKING:
    from rdist.store import RedisStore

log = logging.getLogger("rdist.actors")

#: the data-plane request of an actor call (``rdist.comm`` routes it to the host)
ACTOR_OP = "actor"


class NoSuchActor(KeyError):
    """The worker holds no actor of that key (released, or the worker restarted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such actor"


class ActorHost:
    """The actors of one worker, and the lock that runs their methods one at a time."""

    def __init__(self, address: str, bind_thread: Callable[[], None] = lambda: None) -> None:
        self.address = address
        self._bind_thread = bind_thread  #: makes get_worker() work inside actor methods
        self._actors: dict[str, Any] = {}
        self._lock = threading.Lock()  #: held while a method runs (dask: one actor thread)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._stream_calls: ThreadPoolExecutor | None = None

    # -- the instances ------------------------------------------------------------------------
    def create(self, key: str, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Make the actor ``key`` here; its proxy (the task's result)."""
        from rdist.actors.proxy import Actor

        self._actors[key] = cls(*args, **kwargs)
        return Actor(cls, self.address, key)

    def discard(self, keys: list[str]) -> None:
        """The keys were released here: their actors go (cheap when there are none)."""
        if self._actors:
            for key in keys:
                self._actors.pop(key, None)

    def clear(self) -> None:
        self._actors.clear()

    def __contains__(self, key: str) -> bool:
        return key in self._actors

    def __len__(self) -> int:
        return len(self._actors)

    # -- running ------------------------------------------------------------------------------
    def run(
        self, key: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], attribute: bool
    ) -> Any:
        """Read attribute ``name`` of actor ``key``, or call its method with the arguments."""
        instance = self._actors.get(key)
        if instance is None:
            raise NoSuchActor(
                f"worker {self.address} holds no actor {key!r}: it was released (every "
                "future and proxy of it dropped) or its worker restarted"
            )
        if attribute:
            return getattr(instance, name)
        method = getattr(instance, name)
        if inspect.iscoroutinefunction(method):
            return self.run_coroutine(method(*args, **kwargs))
        self._bind_thread()
        with self._lock:
            return method(*args, **kwargs)

    def run_coroutine(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the worker's event loop and wait for it: ``async def``
        actor methods share that loop thread (not the lock), so a method waiting on an
        ``asyncio.Event`` lets another one set it; ``async def`` tasks run there too."""
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=_run_then_close, args=(loop,), name="rdist-actor-loop", daemon=True
                ).start()
                self._loop = loop
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def outcome(
        self, key: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], attribute: bool
    ) -> tuple[bool, Any]:
        """``(True, value)`` of one call, or ``(False, (exception, traceback text))``."""
        try:
            return True, self.run(key, name, args, kwargs, attribute)
        except BaseException as exc:  # the method's failure is the caller's to see
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            return False, (exc, text)

    # -- the data plane -----------------------------------------------------------------------
    def handle_request(self, header: dict[str, Any], frames: list[Any]) -> tuple[Any, ...]:
        """``{"op": "actor", "key", "name", "attribute"}`` + the pickled ``(args, kwargs)``
        -> ``{"ok": bool}`` + the pickled value, or ``(exception, traceback)``."""
        key, name = header.get("key"), header.get("name")
        try:
            if not isinstance(key, str) or not isinstance(name, str):
                raise TypeError("an actor call names a key and a name")
            args, kwargs = serialize.loads(frames) if frames else ((), {})
        except Exception as exc:
            return _reply(False, (exc, ""))
        ok, value = self.outcome(key, name, args, kwargs, bool(header.get("attribute")))
        return _reply(ok, value)

    # -- the stream ---------------------------------------------------------------------------
    def call_from_stream(self, msg: wire.ActorCall, store: RedisStore) -> None:
        """Run a call that came through Redis (off the stream thread, in arrival order) and
        answer on the caller's stream."""
        with self._loop_lock:
            if self._stream_calls is None:
                self._stream_calls = ThreadPoolExecutor(1, thread_name_prefix="rdist-actor")
        self._stream_calls.submit(self._answer, msg, store)

    def _answer(self, msg: wire.ActorCall, store: RedisStore) -> None:
        try:
            args, kwargs = serialize.from_blob(msg.args) if msg.args else ((), {})
            ok, value = self.outcome(msg.key, msg.method, args, kwargs, msg.attribute)
        except serialize.SerializationError as exc:
            ok, value = False, (exc, "")
        try:
            blob = serialize.to_blob(value if ok else _portable(value))
        except serialize.SerializationError as exc:
            ok, blob = False, serialize.to_blob(_portable((exc, "")))
        try:
            store.streams.to_client(msg.client, wire.ActorAnswer(msg.id, ok, blob))
        except Exception:
            log.exception("actor %s: cannot answer %s", msg.key, msg.client)

    def close(self) -> None:
        self.clear()
        if self._stream_calls is not None:
            self._stream_calls.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


def _run_then_close(loop: asyncio.AbstractEventLoop) -> None:
    """The actor loop's thread: runs it until :meth:`ActorHost.close` stops it, then frees
    its selector and self-pipe."""
    try:
        loop.run_forever()
    finally:
        loop.close()


def _portable(error: tuple[BaseException, str]) -> tuple[BaseException, str]:
    """The error, or a stand-in when the exception itself cannot be pickled."""
    exc, text = error
    try:
        serialize.dumps(exc)
        return error
    except serialize.SerializationError:
        return RuntimeError(f"{type(exc).__name__}: {exc}"), text


def _reply(ok: bool, value: Any) -> tuple[dict[str, Any], list[Any]]:
    if ok:
        try:
            return {"ok": True}, serialize.dumps(value)
        except serialize.SerializationError as exc:
            return {"ok": False}, serialize.dumps(_portable((exc, "")))
    return {"ok": False}, serialize.dumps(_portable(value))
