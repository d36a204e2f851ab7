"""Turning ``submit`` and ``map`` calls (and graphs from ``rdist.client.collections``) into
graph updates for the scheduler, and Futures for the caller.

Each call becomes one ``wire.UpdateGraph`` (a big ``map`` or graph several, sent as they
are packed so the cluster starts on the first tasks at once, and so that no message
passes :data:`MESSAGE_BYTES` by much), posted ``direct``: the calling thread sends it
itself when nobody else is sending. Each distinct function travels once per client,
beside the first message that needs it.

Everything is checked before anything is sent (keys, keywords, futures of a closed
client, a task depending on itself): a bad call raises at the call and never shares a
message with good ones. Large arguments are scattered first (:mod:`rdist.client.large`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rdist.client import graph, keynames, large, spans
from rdist.client.future import Future, futures_of
from rdist.client.options import TaskOptions
from rdist.exceptions import ClosedClientError
from rdist.protocol import spec, wire

if TYPE_CHECKING:
    from rdist.client.client import Client
    from rdist.client.ledger import Ledger
    from rdist.client.sender import Sender

#: map() sends its tasks in chunks growing from the first to the largest size
MAP_FIRST_CHUNK, MAP_MAX_CHUNK = 256, 4096
#: A graph update carries tasks up to about this many bytes (specs and rows); a bigger
#: call is sent as several, in order (see ``rdist.client.sender.MAX_ENTRY_BYTES``).
MESSAGE_BYTES = 4 << 20
#: What a task row costs in a message besides its key, spec and dependencies' names.
ROW_BYTES = 32
#: Functions remembered by identity (their hash and pickle); the cache starts over past it.
FUNCTION_CACHE = 1000

#: One task to send: its key, its packed spec and the keys it depends on.
PackedTask = tuple[str, bytes, list[str]]
#: ``place(values, workers)``: scatter large values (before the tasks needing them) and
#: return futures holding them
Place = Callable[[list[large.Large], list[str] | None], list[Future]]


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def task_bytes(key: str, packed_spec: bytes, deps: list[str]) -> int:
    """About what one task adds to a graph update."""
    return ROW_BYTES + len(key) + len(packed_spec) + (sum(map(len, deps)) if deps else 0)


def check_futures(found: Iterable[Future], what: str) -> None:
    """Futures passed to a call must belong to a client that is still open."""
    for f in found:
        client = f.client
        if client is None or client.status != "running":
            raise ClosedClientError(
                f"{what} holds future {f.key!r}, whose client is closed (or the future "
                "was released): submit that work again on an open client"
            )


class Submitter:
    """Packs calls into tasks and sends them for one client."""

    def __init__(self, client: Client, sender: Sender, ledger: Ledger, place: Place) -> None:
        self._client = client  #: the Futures made here are this client's
        self._client_id = client.id
        self._sender = sender
        self._ledger = ledger
        self._place = place
        self._func_cache: dict[int, tuple[Any, bytes, bytes]] = {}

    def function(self, func: Callable[..., Any]) -> tuple[bytes, bytes]:
        """``(hash, pickled)`` of a function, remembered while the same object is passed."""
        cached = self._func_cache.get(id(func))
        if cached is not None and cached[0] is func:
            return cached[1], cached[2]
        data = graph.function_bytes(func)
        large.check_function(graph.funcname(func), data)
        func_hash = spec.function_hash(data)
        if len(self._func_cache) > FUNCTION_CACHE:
            self._func_cache.clear()
        self._func_cache[id(func)] = (func, func_hash, data)
        return func_hash, data

    def _pack(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], pure: bool
    ) -> tuple[bytes, list[str], int, list[large.Large]]:
        plain = graph.PLAIN
        if all(type(a) in plain for a in args) and (
            not kwargs or all(type(v) in plain for v in kwargs.values())
        ):
            packed = graph.pack_plain(args, kwargs)
            if packed is not None:
                return packed
        found = futures_of((args, kwargs)) if args or kwargs else []
        if found:
            check_futures(found, "an argument")
        return graph.pack_arguments(args, kwargs, lambda _: found, Future, pure)

    def submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: Any,
        pure: bool,
        options: TaskOptions,
    ) -> Future:
        if not callable(func):
            raise TypeError("First input to submit must be a callable function")
        name = None if key is None else keynames.check_key(key)
        func_hash, func_bytes = self.function(func)
        blob, deps, mode, scattered = self._pack(args, kwargs, pure)
        if name is None:
            name = graph.task_key(graph.funcname(func), func_hash, blob, pure)
        elif name in deps:
            raise ValueError(
                f"key={key!r} is also the key of one of its arguments' futures: a task "
                "cannot depend on itself; choose another key"
            )
        held = self._place(scattered, options.workers) if scattered else []
        task = (name, spec.pack_spec(func_hash, blob, mode, spans.current()), deps)
        future = self.send([task], {func_hash: func_bytes}, options)[0]
        if held:
            self._ledger.pin(future._name, held)
        return future

    def map(
        self,
        func: Callable[..., Any],
        iterables: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: Any,
        pure: bool,
        options: TaskOptions,
    ) -> list[Future]:
        if not callable(func):
            raise TypeError("First input to map must be a callable function")
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        arg_tuples: Iterable[tuple[Any, ...]] = zip(*iterables)
        names = None
        if key is not None and not isinstance(key, str):  # keys given: one per task
            listed = list(arg_tuples)
            names, arg_tuples = _map_keys(key, len(listed)), listed
        # else the argument tuples are made as they are packed: a million of them at
        # once would be most of what a big map holds at its peak
        func_hash, func_bytes = self.function(func)
        prefix = key if isinstance(key, str) else graph.funcname(func)
        funcs = {func_hash: func_bytes}
        tag = spans.current()
        with gc_paused():  # a big map makes millions of objects: no collections meanwhile
            tasks: list[PackedTask] = []
            futures: list[Future] = []
            pins: dict[str, list[Future]] = {}
            chunk, size = MAP_FIRST_CHUNK, 0
            for i, args in enumerate(arg_tuples):
                blob, deps, mode, scattered = self._pack(args, kwargs, pure)
                if names is None:
                    name = graph.task_key(prefix, func_hash, blob, pure)
                elif (name := names[i]) in deps:
                    raise ValueError(
                        f"key[{i}]={key[i]!r} is also the key of one of its arguments' "
                        "futures: a task cannot depend on itself"
                    )
                if scattered:
                    pins[name] = self._place(scattered, options.workers)
                packed = spec.pack_spec(func_hash, blob, mode, tag)
                tasks.append((name, packed, deps))
                size += task_bytes(name, packed, deps)
                if len(tasks) >= chunk or size >= MESSAGE_BYTES:
                    # send as we go: the cluster starts on the first tasks while we pack on
                    futures += self._send_pinned(tasks, funcs, options, pins)
                    tasks, pins, size = [], {}, 0
                    chunk = min(chunk * 2, MAP_MAX_CHUNK)
            if tasks:
                futures += self._send_pinned(tasks, funcs, options, pins)
        return futures

    def _send_pinned(
        self,
        tasks: list[PackedTask],
        funcs: dict[bytes, bytes],
        options: TaskOptions,
        pins: dict[str, list[Future]],
    ) -> list[Future]:
        futures = self.send(tasks, funcs, options)
        for name, held in pins.items():
            self._ledger.pin(name, held)
        return futures

    def send(
        self, tasks: list[PackedTask], funcs: dict[bytes, bytes], options: TaskOptions
    ) -> list[Future]:
        """Send tasks in one message; a future for each (the client wants them all)."""
        names = [k for k, _, _ in tasks]
        futures = Future._submitted(names, self._client)
        msg = wire.UpdateGraph(
            self._client_id,
            tasks=options.rows(tasks),
            wanted=names,
            specs={k: s for k, s, _ in tasks},
            # every time: the scheduler stores a function while a task names it, and may
            # have dropped it since we last sent it (rdist.scheduler.functions)
            funcs={h: b for h, b in funcs.items() if h},
        )
        self._sender.post(msg, direct=True)
        return futures

    def send_graph(
        self,
        rows: list[wire.TaskRow],
        specs: dict[str, bytes],
        wanted: list[str],
        scattered: list[large.Large] | None = None,
        workers: list[str] | None = None,
    ) -> dict[str, Future]:
        """Send a whole graph (rows in the order to run them); futures for ``wanted``.

        Its large values are scattered first; the rows go in slices of about
        :data:`MESSAGE_BYTES`, each slice after the ones it depends on (the scheduler
        links a task to dependencies it already knows), each wanted key in the slice of
        its row (a key with no row -- data already there -- in the last)."""
        client = self._client
        held = self._place(scattered, workers) if scattered else []
        futures = dict(zip(wanted, Future._submitted(wanted, client)))
        slices = _slices(rows, specs)
        wanted_in = _wanted_per_slice(slices, list(futures))
        for index, part in enumerate(slices):
            msg = wire.UpdateGraph(
                self._client_id,
                tasks=part,
                wanted=wanted_in[index],
                specs={row.key: specs[row.key] for row in part if row.key in specs},
            )
            self._sender.post(msg, direct=True)
        for future in futures.values() if held else ():
            # the scattered data lives as long as any of the graph's results does
            self._ledger.pin(future._name, held)
        return futures


def _map_keys(key: Any, n: int) -> list[str] | None:
    """The keys of map's tasks when given as a list (each checked), else None."""
    if key is None or isinstance(key, str):
        return None
    if not isinstance(key, (list, tuple)):
        raise TypeError(
            f"map's key must be a str (a prefix) or a list of keys, not {type(key).__name__}"
        )
    if len(key) < n:
        raise ValueError(f"map got {len(key)} keys for {n} tasks")
    names = [keynames.check_key(k, f"key[{i}]") for i, k in enumerate(key[:n])]
    if len(set(names)) < len(names):
        raise ValueError("map's keys must be distinct: two tasks cannot share a key")
    return names


def _slices(rows: list[wire.TaskRow], specs: dict[str, bytes]) -> list[list[wire.TaskRow]]:
    """Consecutive runs of ``rows`` of about MESSAGE_BYTES each (at least one slice)."""
    out: list[list[wire.TaskRow]] = [[]]
    size = 0
    for row in rows:
        cost = task_bytes(row.key, specs.get(row.key, b""), row.deps)
        if out[-1] and size + cost > MESSAGE_BYTES:
            out.append([])
            size = 0
        out[-1].append(row)
        size += cost
    return out


def _wanted_per_slice(slices: list[list[wire.TaskRow]], wanted: list[str]) -> list[list[str]]:
    where = {row.key: i for i, part in enumerate(slices) for row in part}
    last = len(slices) - 1
    out: list[list[str]] = [[] for _ in slices]
    for key in wanted:
        out[where.get(key, last)].append(key)
    return out
