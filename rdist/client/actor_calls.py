"""Actor calls through Redis, for one client: where its process cannot reach the actor's
worker directly (transfer mode ``redis``, or ``auto`` after a refused connection).

A call goes to the worker's stream as a ``wire.ActorCall``; the worker answers on this
client's stream (``wire.ActorAnswer``), where the listener hands the answer to
:class:`~rdist.client.answers.Answers` by the call's id. The direct path (a connection to
the worker's data server) is in :mod:`rdist.actors.calls`; both give the same futures.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Any

from rdist import task_context
from rdist.client.answers import Answers
from rdist.protocol import wire
from rdist.store import RedisStore


class ActorRelay:
    """Sends actor calls on workers' streams and waits for their answers."""

    def __init__(self, store: RedisStore, client_id: str, answers: Answers) -> None:
        self._store = store
        self._client_id = client_id
        self._answers = answers

    def call(self, address: str, key: str, name: str, args: bytes, attribute: bool) -> str:
        """Send one call; returns its id (to :meth:`wait` on)."""
        request_id = self._answers.expect(1)
        msg = wire.ActorCall(request_id, self._client_id, key, name, args, attribute)
        self._store.streams.to_worker(address, msg)
        return request_id

    def answer(self, request_id: str, timeout: float = 0.0) -> wire.ActorAnswer | None:
        """The answer once it arrived (waiting up to ``timeout`` for it), else None; an
        answer returned is forgotten here."""
        found: wire.ActorAnswer | None = self._answers.first(request_id, timeout)
        if found is not None:
            self._answers.forget(request_id)
        return found

    def worker_alive(self, address: str) -> bool:
        return self._store.workers.exists(address)

    def forget(self, request_id: str) -> None:
        self._answers.forget(request_id)


def create_actor(cls: type, *args: Any, **kwargs: Any) -> Any:
    """The task of ``submit(cls, *args, actor=True)``: the instance stays on the worker
    running it, a proxy to it is the task's result."""
    context = task_context.current()
    if context is None:
        raise RuntimeError("an actor is made by a task: client.submit(cls, actor=True)")
    return context.actor_host().create(context.key, cls, args, kwargs)


def actor_call(
    cls: Callable[..., Any], args: tuple[Any, ...], key: str | None
) -> tuple[Callable[..., Any], tuple[Any, ...], str]:
    """``submit(cls, *args, actor=True)`` as the task making the actor: never pure (each
    call makes an actor of its own), keyed by the class's name as in dask."""
    if not isinstance(cls, type):
        raise TypeError(f"actor=True submits a class, not {type(cls).__name__}")
    return create_actor, (cls, *args), key or f"{cls.__name__}-{uuid.uuid4().hex}"


def actor_map(
    cls: Callable[..., Any], iterables: tuple[Iterable[Any], ...], key: Any
) -> tuple[Callable[..., Any], tuple[Iterable[Any], ...], Any]:
    """``map(cls, ..., actors=True)``: one actor per element, keys prefixed by the class."""
    if not isinstance(cls, type):
        raise TypeError(f"actors=True maps a class, not {type(cls).__name__}")
    if not iterables:
        raise TypeError("map() needs at least one iterable")
    return create_actor, (repeat(cls), *iterables), key if key is not None else cls.__name__
