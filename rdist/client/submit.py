"""Turning ``submit`` and ``map`` calls (and graphs from ``rdist.client.collections``) into
graph updates for the scheduler, and Futures for the caller.

Each call becomes one ``wire.UpdateGraph`` (a big ``map`` a few, sent as they are packed
so the cluster starts on the first tasks at once), posted ``direct``: the calling thread
sends it itself when nobody else is sending. Each distinct function travels once per
client, beside the first message that needs it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rdist.client import graph
from rdist.client.future import Future, futures_of
from rdist.client.options import TaskOptions
from rdist.protocol import spec, wire

if TYPE_CHECKING:
    from rdist.client.client import Client
    from rdist.client.ledger import Ledger
    from rdist.client.sender import Sender

#: map() sends its tasks in chunks growing from the first to the largest size
MAP_FIRST_CHUNK, MAP_MAX_CHUNK = 256, 4096
#: Functions remembered by identity (their hash and pickle); the cache starts over past it.
FUNCTION_CACHE = 1000

#: One task to send: its key, its packed spec and the keys it depends on.
PackedTask = tuple[str, bytes, list[str]]


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Submitter:
    """Packs calls into tasks and sends them for one client."""

    def __init__(self, client: Client, sender: Sender, ledger: Ledger) -> None:
        self._client = client  #: the Futures made here are this client's
        self._client_id = client.id
        self._sender = sender
        self._ledger = ledger
        self._func_cache: dict[int, tuple[Any, bytes, bytes]] = {}

    def function(self, func: Callable[..., Any]) -> tuple[bytes, bytes]:
        """``(hash, pickled)`` of a function, remembered while the same object is passed."""
        cached = self._func_cache.get(id(func))
        if cached is not None and cached[0] is func:
            return cached[1], cached[2]
        data = graph.function_bytes(func)
        func_hash = spec.function_hash(data)
        if len(self._func_cache) > FUNCTION_CACHE:
            self._func_cache.clear()
        self._func_cache[id(func)] = (func, func_hash, data)
        return func_hash, data

    def submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str | None,
        pure: bool,
        options: TaskOptions,
    ) -> Future:
        if not callable(func):
            raise TypeError("First input to submit must be a callable function")
        func_hash, func_bytes = self.function(func)
        blob, deps, mode = graph.pack_arguments(args, kwargs, futures_of, Future)
        if key is None:
            key = graph.task_key(graph.funcname(func), func_hash, blob, pure)
        task = (key, spec.pack_spec(func_hash, blob, mode), deps)
        return self.send([task], {func_hash: func_bytes}, options)[0]

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
        arg_tuples = list(zip(*iterables))
        if isinstance(key, (list, tuple)) and len(key) < len(arg_tuples):
            raise ValueError(f"map got {len(key)} keys for {len(arg_tuples)} tasks")
        func_hash, func_bytes = self.function(func)
        prefix = key if isinstance(key, str) else graph.funcname(func)
        funcs = {func_hash: func_bytes}
        with gc_paused():  # a big map makes millions of objects: no collections meanwhile
            tasks: list[PackedTask] = []
            futures: list[Future] = []
            chunk = MAP_FIRST_CHUNK
            for i, args in enumerate(arg_tuples):
                blob, deps, mode = graph.pack_arguments(args, kwargs, futures_of, Future)
                task_key = (
                    key[i]
                    if isinstance(key, (list, tuple))
                    else graph.task_key(prefix, func_hash, blob, pure)
                )
                tasks.append((task_key, spec.pack_spec(func_hash, blob, mode), deps))
                if len(tasks) >= chunk:
                    # send as we go: the cluster starts on the first tasks while we pack on
                    futures += self.send(tasks, funcs, options)
                    tasks, chunk = [], min(chunk * 2, MAP_MAX_CHUNK)
            if tasks:
                futures += self.send(tasks, funcs, options)
        return futures

    def send(
        self, tasks: list[PackedTask], funcs: dict[bytes, bytes], options: TaskOptions
    ) -> list[Future]:
        """Send tasks in one message; a future for each (the client wants them all)."""
        client = self._client
        futures = [Future(k, client) for k, _, _ in tasks]
        self._ledger.restart_cancelled(futures)
        msg = wire.UpdateGraph(
            self._client_id,
            tasks=options.rows(tasks),
            wanted=[f.key for f in futures],
            specs={k: s for k, s, _ in tasks},
            # every time: the scheduler stores a function while a task names it, and may
            # have dropped it since we last sent it (rdist.scheduler.functions)
            funcs={h: b for h, b in funcs.items() if h},
        )
        self._sender.post(msg, direct=True)
        return futures

    def send_graph(
        self, rows: list[wire.TaskRow], specs: dict[str, bytes], wanted: list[str]
    ) -> dict[str, Future]:
        """Send a whole graph (rows in the order to run them); futures for ``wanted``."""
        client = self._client
        futures = {k: Future(k, client) for k in wanted}
        self._ledger.restart_cancelled(futures.values())
        msg = wire.UpdateGraph(self._client_id, tasks=rows, wanted=list(futures), specs=specs)
        self._sender.post(msg, direct=True)
        return futures
