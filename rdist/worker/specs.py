"""What a batch of new tasks needs from Redis, loaded in one round trip: their specs, the
functions those reference (each pickled once per cluster, cached here), and their small
inputs (stored in the ``results`` hash)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rdist.exceptions import SpecLost
from rdist.protocol import serialize, spec
from rdist.protocol.wire import Compute

if TYPE_CHECKING:
    from rdist.worker.server import Worker

log = logging.getLogger("rdist.worker")

#: Unpickled task functions kept (least recently loaded dropped first).
FUNCTION_CACHE = 1000


class SpecLoader:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.funcs: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()

    def load(self, computes: list[Compute], freed: set[str]) -> tuple[dict[str, Any], list[str]]:
        """The specs of the tasks that need one (key -> ``(function, args blob, mode)`` or
        the error running it must raise) and the small inputs now stored here.

        A key freed and computed again in one batch (released, then resubmitted) needs its
        spec even though its old result is still here when the batch is loaded."""
        worker = self.worker
        state = worker.state
        with worker.lock:
            wanting = state.wanting_specs(c.key for c in computes)
            needed = [c for c in computes if c.key in freed or c.key in wanting]
            small = list(
                {
                    dep
                    for c in computes
                    for dep, info in c.deps.items()
                    if info.in_redis and not state.has_data(dep)
                }
            )
        raw: dict[str, bytes | None] = {c.key: c.spec for c in needed if c.spec}
        new = [c.key for c in needed if c.key not in raw]
        stored: list[str] = []
        if new or small:
            store = worker.store
            pipe = store.raw_pipeline()
            if new:
                store.specs.get_many(new, pipe=pipe)
            if small:
                store.results.get_many(small, pipe=pipe)
            replies = pipe.execute()
            if new:
                raw.update(zip(new, replies[0]))
            if small:
                stored = self._store_inputs(small, replies[-1])
        return (self._unpack(raw) if raw else {}), stored

    def _store_inputs(self, keys: list[str], blobs: list[bytes | None]) -> list[str]:
        stored = []
        for key, blob in zip(keys, blobs):
            if blob is None:  # missing ones are fetched from peers (or fail) later
                continue
            try:
                value = serialize.from_blob(blob)
            except serialize.SerializationError as exc:
                log.error("worker %s: cannot unpickle input %r: %s", self.worker.address, key, exc)
                continue
            self.worker.data.set(key, value, len(blob))
            stored.append(key)
        return stored

    def _unpack(self, raws: dict[str, bytes | None]) -> dict[str, Any]:
        specs: dict[str, Any] = {}
        unpacked = []
        for key, raw in raws.items():
            if raw is None:
                specs[key] = SpecLost(f"task {key!r} has no spec in Redis")
                continue
            try:
                unpacked.append((key, spec.unpack_spec_tagged(raw)))
            except Exception as exc:
                specs[key] = RuntimeError(f"task {key!r} has a corrupt spec: {exc}")
        unknown = list({h for _, (h, _, _, _) in unpacked if h and h not in self.funcs})
        if unknown:
            for func_hash, raw in zip(unknown, self.worker.store.specs.get_functions(unknown)):
                self._remember(func_hash, raw)
        for key, (func_hash, args_blob, mode, span) in unpacked:
            func = self.funcs.get(func_hash) if func_hash else None
            if func_hash and func is None:
                specs[key] = RuntimeError(f"the function of task {key!r} cannot be loaded")
            else:
                specs[key] = (func, args_blob, mode, span)
        return specs

    def _remember(self, func_hash: bytes, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            self.funcs[func_hash] = serialize.loads([raw])
        except serialize.SerializationError as exc:
            log.error("worker %s: cannot unpickle a task function: %s", self.worker.address, exc)
            return
        if len(self.funcs) > FUNCTION_CACHE:
            self.funcs.popitem(last=False)
