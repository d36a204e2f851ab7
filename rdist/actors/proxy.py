"""The :class:`Actor` proxy: a remote object on one worker, as dask's ``Actor``.

``future = client.submit(Counter, actor=True)``; ``counter = future.result()`` is an
``Actor``: ``counter.increment()`` returns an :class:`~rdist.actors.calls.ActorFuture` at
once, ``counter.n`` reads an attribute (blocking), ``dir(counter)`` lists what the class
offers. A proxy pickles by name (class, worker address, key), so it can be passed to
tasks, put in queues and published; where a client is at hand, a proxy holds a future of
its key, which keeps the actor alive while any proxy of it does.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from typing import Any

from rdist.actors.calls import ActorFuture, Caller

_callers: weakref.WeakKeyDictionary[Any, Caller] = weakref.WeakKeyDictionary()
_callers_lock = threading.Lock()


def _caller_of(client: Any) -> Caller:
    with _callers_lock:
        caller = _callers.get(client)
        if caller is None:
            caller = _callers[client] = Caller(client)
        return caller


def _client_here() -> Any:
    """The client a proxy uses here (a task's client, the default one), or None."""
    from rdist.primitives.base import resolve_client

    try:
        return resolve_client()
    except ValueError:
        return None


class Actor:
    """A proxy to an object living on a worker (``distributed.Actor``)."""

    def __init__(self, cls: type, address: str, key: str, hold: bool = False) -> None:
        self._cls = cls
        self._address = address
        self.key = key
        self._client: Any = None
        self._future: Any = None  #: keeps the actor's key wanted while this proxy lives
        if hold:
            self._hold()

    def _hold(self) -> None:
        client = _client_here()
        if client is None:
            return
        self._client = client
        self._future = client.holdings.future(self.key)
        client.holdings.take([self.key])

    @classmethod
    def _rebuilt(cls, actor_cls: type, address: str, key: str) -> Actor:
        return cls(actor_cls, address, key, hold=True)

    def __reduce__(self) -> Any:
        return (Actor._rebuilt, (self._cls, self._address, self.key))

    @property
    def worker(self) -> str:
        """The address of the worker holding the actor."""
        return self._address

    # -- calls --------------------------------------------------------------------------------
    def _call(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attribute: bool,
        coroutine: bool = False,
    ) -> ActorFuture:
        client = self._client if self._client is not None else _client_here()
        if client is None:
            raise ValueError(
                f"actor {self.key!r}: no client here to call it through; create a Client "
                "(inside a task, the worker's client is used)"
            )
        caller = _caller_of(client)
        return caller.call(self.key, self._address, name, args, kwargs, attribute, coroutine)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        member = getattr(self._cls, name, None)
        if callable(member) and not isinstance(member, type):
            coroutine = inspect.iscoroutinefunction(member)

            def call(*args: Any, **kwargs: Any) -> ActorFuture:
                return self._call(name, args, kwargs, False, coroutine)

            call.__name__ = name
            call.__doc__ = getattr(member, "__doc__", None)
            return call
        # an attribute (of the class or of the instance): read it now, as dask does
        return self._call(name, (), {}, attribute=True).result()

    def __dir__(self) -> list[str]:
        return sorted(n for n in dir(self._cls) if not n.startswith("_"))

    def __repr__(self) -> str:
        return f"<Actor: {self._cls.__name__}, key={self.key}>"
