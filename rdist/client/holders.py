"""Futures kept alive by shared structures: a queue's items, a variable's value, a dataset.

Such a structure lives in Redis and may outlive every client; the futures in it must
keep their keys alive meanwhile (in dask the scheduler counts them as wanted by the
structure). Here each stored value that holds futures gets a *holder* id
(``holder:<kind>:<name>:<n>``, :func:`new_holder`), a pseudo-client of the scheduler:

- storing: the putting client makes the holder want the keys (``wire.PassKeys`` with
  the holder as taker) and flushes that to the scheduler's stream *before* the value
  becomes visible in Redis -- whoever reads it next finds the keys held;
- taking (a queue item): the getting client wants the keys itself and the holder gives
  them up, in one message and in that order, so they are never unwanted in between;
- reading (a variable, a dataset): the reader wants the keys; the holder keeps them
  until the value is replaced or deleted, which gives them up.

The scheduler records a holder in ``who_wants`` like a client, so holders survive its
restarts; having no heartbeat, a holder is never "lost", and a client closing or dying
leaves the holders its values made alone.

Values travel as msgpack (queues, variables: futures as an extension type, anywhere in
lists and dicts) or pickled (datasets: any object, dask collections included, futures
pickled by key); both are wrapped as ``[holder or None, payload]``.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from rdist.client.future import Future
from rdist.protocol import serialize, wire

if TYPE_CHECKING:
    from rdist.client.client import Client
    from rdist.client.ledger import Ledger
    from rdist.client.sender import Sender

#: msgpack extension type of a future inside a queue item or a variable's value (its key)
FUTURE_EXT = 1
_counter = itertools.count()


def new_holder(kind: str, name: str) -> str:
    """A fresh holder id for one stored value of the structure ``kind``/``name``."""
    return f"{wire.HOLDER_PREFIX}{kind}:{name}:{uuid.uuid4().hex[:12]}{next(_counter)}"


class Holdings:
    """One client's side of holders: what it stores, takes and gives up."""

    def __init__(self, client: Client, sender: Sender, ledger: Ledger) -> None:
        self._client = client
        self._sender = sender
        self._ledger = ledger

    def hold(self, holder: str, keys: list[str]) -> None:
        """``holder`` wants ``keys`` once this returns: the message is on the scheduler's
        stream, after everything this client sent before (the tasks making the keys)."""
        if keys:
            self._sender.post(wire.PassKeys(list(dict.fromkeys(keys)), taker=holder))
            self._sender.flush()

    def take(self, keys: list[str], giver: str = "") -> None:
        """This client wants ``keys`` (its futures of them exist already); then ``giver``,
        if any, gives them up."""
        if keys or giver:
            msg = wire.PassKeys(list(dict.fromkeys(keys)), taker=self._client.id, giver=giver)
            self._sender.post(msg, direct=True)

    def give_up(self, holder: str, keys: list[str]) -> None:
        """``holder`` no longer wants ``keys`` (its value was replaced or deleted)."""
        if keys:
            self._sender.post(wire.PassKeys(list(dict.fromkeys(keys)), giver=holder))

    def future(self, key: str) -> Future:
        """A future of this client for ``key``, made by reading a stored value."""
        future = Future._named(key, self._client)
        self._ledger.restart_cancelled([future])
        return future


def hold_futures(futures: list[Future], holder: str) -> None:
    """``holder`` wants the keys of ``futures``, through the client of each (so that the
    message follows the one that made the key)."""
    by_client: dict[int, tuple[Any, list[str]]] = {}
    for f in futures:
        if f.client is None:
            raise ValueError(f"future {f.key!r} was released: it cannot be stored")
        by_client.setdefault(id(f.client), (f.client, []))[1].append(f._name)
    for client, keys in by_client.values():
        client.holdings.hold(holder, keys)


# -- msgpack values (queues, variables) ---------------------------------------------------------


def pack_data(value: Any, what: str) -> tuple[bytes, list[Future]]:
    """``value`` as msgpack, futures anywhere in it as extension values; the futures."""
    found: list[Future] = []

    def default(obj: Any) -> Any:
        if isinstance(obj, Future):
            found.append(obj)
            return msgpack.ExtType(FUTURE_EXT, obj._name.encode())
        raise TypeError(f"{type(obj).__name__} is not msgpack data")

    try:
        packed: bytes = msgpack.packb(value, default=default, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(
            f"{what} holds msgpack data (numbers, strings, bytes, lists, dicts) or futures, "
            f"not {type(value).__name__}: {exc}"
        ) from None
    return packed, found


def unpack_data(payload: bytes, bind: Callable[[str], Future]) -> tuple[Any, list[str]]:
    """The value packed by :func:`pack_data`, futures bound by ``bind(key)``; their keys."""
    keys: list[str] = []

    def ext_hook(code: int, data: bytes) -> Any:
        if code != FUTURE_EXT:
            return msgpack.ExtType(code, data)
        key = data.decode()
        keys.append(key)
        return bind(key)

    value = msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=ext_hook)
    return value, keys


# -- pickled values (datasets) -------------------------------------------------------------------

_binding = threading.local()


def _bound_future(key: str) -> Any:
    """Unpickling a dataset: a future it held becomes a future of the reading client."""
    bind: Callable[[str], Future] | None = getattr(_binding, "bind", None)
    if bind is None:
        raise RuntimeError(f"future {key!r} unpickled outside of get_dataset")
    _binding.keys.append(key)
    return bind(key)


def pickle_objects(value: Any) -> tuple[bytes, list[Future]]:
    """``value`` pickled (any object, dask collections too), futures in it by key."""
    found: list[Future] = []

    def hook(obj: Any) -> Any:
        if isinstance(obj, Future):
            found.append(obj)
            return (_bound_future, (obj._name,))
        return None

    return serialize.to_blob(value, hook), found


def unpickle_objects(blob: bytes, bind: Callable[[str], Future]) -> tuple[Any, list[str]]:
    """The value of :func:`pickle_objects`, futures bound by ``bind(key)``; their keys."""
    _binding.bind, _binding.keys = bind, []
    try:
        value = serialize.from_blob(blob)
        return value, list(_binding.keys)
    finally:
        _binding.bind, _binding.keys = None, []


# -- the stored form: [holder or None, held keys, payload] -----------------------------------------


def wrap(holder: str | None, keys: list[str], payload: bytes) -> bytes:
    wrapped: bytes = msgpack.packb([holder, keys, payload], use_bin_type=True)
    return wrapped


def unwrap(stored: bytes) -> tuple[str | None, list[str], bytes]:
    """The holder, held keys and payload of a stored value (TypeError for a foreign one)."""
    try:
        holder, keys, payload = msgpack.unpackb(stored, raw=False)
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        raise TypeError(f"not a stored rdist value: {exc}") from None
    if not (
        isinstance(payload, bytes)
        and (holder is None or isinstance(holder, str))
        and isinstance(keys, list)
        and all(isinstance(k, str) for k in keys)
    ):
        raise TypeError("not a stored rdist value")
    return holder, keys, payload


def _held(kind: str, name: str, payload: bytes, futures: list[Future]) -> bytes:
    holder = None
    keys = list(dict.fromkeys(f._name for f in futures))
    if futures:
        holder = new_holder(kind, name)
        hold_futures(futures, holder)
    return wrap(holder, keys, payload)


def store_data(value: Any, kind: str, name: str, what: str) -> bytes:
    """``value`` packed for a queue or a variable, its futures (if any) held first."""
    payload, futures = pack_data(value, what)
    return _held(kind, name, payload, futures)


def store_objects(value: Any, kind: str, name: str) -> bytes:
    """``value`` pickled for a dataset, its futures (if any) held first."""
    payload, futures = pickle_objects(value)
    return _held(kind, name, payload, futures)


def load(holdings: Holdings, stored: bytes, take: bool) -> Any:
    """A stored value with its futures bound to the holdings' client, which now wants
    their keys; ``take``: the holder gives them up (a queue item taken out)."""
    holder, keys, payload = unwrap(stored)
    if payload[:3] == serialize.BLOB_MAGIC:
        value, _ = unpickle_objects(payload, holdings.future)
    else:
        value, _ = unpack_data(payload, holdings.future)
    if keys:
        holdings.take(keys, giver=holder if take and holder is not None else "")
    return value


def release_stored(holdings: Holdings, stored: bytes | None) -> None:
    """A stored value was replaced or deleted: its holder gives its keys up."""
    if stored is None:
        return
    try:
        holder, keys, _ = unwrap(stored)
    except TypeError:
        return
    if holder is not None:
        holdings.give_up(holder, keys)


__all__ = [
    "Holdings",
    "hold_futures",
    "load",
    "new_holder",
    "pack_data",
    "pickle_objects",
    "release_stored",
    "store_data",
    "store_objects",
    "unpack_data",
    "unpickle_objects",
    "unwrap",
    "wrap",
]
