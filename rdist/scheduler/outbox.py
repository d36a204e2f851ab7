"""Instructions of one batch -> the fewest Redis writes, through the store's façades.

The state machine may say many things to one worker or client in a batch; they go out as
one ``batch`` message per worker and one ``notify`` message per client, after the task
records and specs they may need, all queued on the caller's pipeline (one round trip for
the whole batch). Every message is a wire record, so what lands on a stream is exactly
what its reader decodes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.store import RedisStore


class Outbox:
    """Instructions of one batch, grouped by destination."""

    def __init__(self) -> None:
        self.worker_actions: dict[str, list[wire.Action]] = defaultdict(list)
        self.client_items: dict[str, list[wire.Item]] = defaultdict(list)
        #: messages of their own for a client, after its notifications (story replies)
        self.client_messages: list[tuple[str, wire.Message]] = []
        self.records: dict[str, bytes] = {}  #: encoded task records, by key
        self.specs: dict[str, bytes] = {}
        self.restarts: list[ev.RestartWorkers] = []
        self.forget: list[str] = []
        self.drop_results: list[str] = []
        #: function hash -> its pickle to store, or None to drop it (the last word counts)
        self.funcs: dict[bytes, bytes | None] = {}
        self.drop_specs: list[str] = []
        self.gone_clients: list[str] = []
        self.log: list[wire.ClusterEvent] = []
        #: clients' scheduler plugins, for the server to accept or refuse
        self.plugin_offers: list[wire.RegisterSchedulerPlugin] = []
        #: ``client.shutdown()``: the server stops once this batch is written
        self.shutdown = False

    def add(self, instructions: list[ev.Instruction]) -> None:
        dispatch = self._dispatch
        for ins in instructions:
            if type(ins) is ev.Compute:  # (the most frequent, collected without a call)
                spec = ins.spec or self.specs.get(ins.key)
                action = wire.Compute(
                    ins.key, ins.priority, ins.deps, ins.resources, spec, ins.clients
                )
                self.worker_actions[ins.worker].append(action)
            else:
                dispatch[type(ins)](self, ins)

    # -- one method per kind of instruction (see _dispatch below) ---------------------------
    def _persist(self, ins: ev.PersistTasks) -> None:
        records, pack = self.records, wire.pack
        for key, record in ins.records.items():
            records[key] = pack(record.to_wire())

    def _compute(self, ins: ev.Compute) -> None:
        # a spec submitted in this very batch travels with the task: the worker then
        # needs no round trip to load it
        spec = ins.spec or self.specs.get(ins.key)
        action = wire.Compute(ins.key, ins.priority, ins.deps, ins.resources, spec, ins.clients)
        self.worker_actions[ins.worker].append(action)

    def _notify(self, ins: ev.Notify) -> None:
        self.client_items[ins.client].append(ins.item)

    def _free(self, ins: ev.FreeKeys) -> None:
        self.worker_actions[ins.worker].append(wire.Free(ins.keys))

    def _steal(self, ins: ev.StealRequest) -> None:
        self.worker_actions[ins.worker].append(wire.Steal(ins.key))

    def _store_spec(self, ins: ev.StoreSpec) -> None:
        self.specs[ins.key] = ins.spec

    def _forget(self, ins: ev.ForgetTask) -> None:
        self.records.pop(ins.key, None)
        self.specs.pop(ins.key, None)
        self.forget.append(ins.key)

    def _drop_result(self, ins: ev.DropResult) -> None:
        self.drop_results.append(ins.key)

    # ``funcs`` holds the batch's net change of the hash: a function dropped and named
    # again in one batch (a loop submitting one function: each round trip's release and
    # submission travel together) stays in Redis untouched, and one stored and dropped
    # again never reaches it
    def _store_function(self, ins: ev.StoreFunction) -> None:
        funcs = self.funcs
        if ins.hash in funcs and funcs[ins.hash] is None:
            del funcs[ins.hash]  # dropped earlier in the batch: Redis still has it
        else:
            funcs[ins.hash] = ins.func

    def _drop_function(self, ins: ev.DropFunction) -> None:
        funcs = self.funcs
        if funcs.get(ins.hash) is not None:
            del funcs[ins.hash]  # stored earlier in the batch: Redis never had it
        else:
            funcs[ins.hash] = None

    def _forget_client(self, ins: ev.ForgetClient) -> None:
        self.gone_clients.append(ins.client)

    def _drop_specs(self, ins: ev.DropSpecs) -> None:
        self.drop_specs += ins.keys

    def _log(self, ins: ev.LogEvent) -> None:
        self.log.append(wire.ClusterEvent(ins.kind, ins.info))

    def _restart(self, ins: ev.RestartWorkers) -> None:
        # what those workers were told before in this batch is moot: they drop everything
        # (and the release of every task on the way here told them to free it all)
        for worker in ins.workers:
            self.worker_actions.pop(worker, None)
        self.restarts.append(ins)

    def _offer(self, ins: ev.OfferPlugin) -> None:
        self.plugin_offers.append(ins.msg)

    def _stop_serving(self, ins: ev.StopServing) -> None:
        self.shutdown = True

    def _story(self, ins: ev.SendStory) -> None:
        reply = wire.StoryReply(ins.id, "scheduler", ins.records)
        self.client_messages.append((ins.client, reply))

    #: instruction type -> the method collecting it (a type missing here is a KeyError: a
    #: new instruction must say how it is sent)
    _dispatch: ClassVar[dict[type[ev.Instruction], Callable[[Outbox, Any], None]]] = {}

    def write(self, pipe: Any, store: RedisStore) -> None:
        """Queue every write on ``pipe``: records and specs before the messages needing them."""
        # (each write is looked at first: most batches have only a few kinds of them)
        drops = self.drop_results
        if self.forget:
            store.tasks.delete(self.forget, pipe)
            store.specs.delete(self.forget, pipe)
            store.results.delete(self.forget, pipe)
            if drops:  # (a forgotten key's result went with it)
                forgotten = set(self.forget)
                drops = [key for key in drops if key not in forgotten]
        if drops:
            store.results.delete(drops, pipe)
        if self.funcs or self.drop_specs:
            self._write_functions(pipe, store)
        if self.specs:
            store.specs.put_many(self.specs, pipe)
        if self.records:
            store.tasks.put_many(self.records, pipe)
        streams = store.streams
        for worker, actions in self.worker_actions.items():
            streams.to_worker(worker, wire.Batch(actions), pipe)
        for client, items in self.client_items.items():
            streams.to_client(client, wire.Notify(items), pipe)
        if self.client_messages or self.restarts or self.log:
            self._write_rare(pipe, store)
        if self.gone_clients:  # last: what the batch sent them goes too
            store.streams.drop_client_streams(self.gone_clients, pipe)
            store.clients.remove(self.gone_clients, pipe)

    def _write_functions(self, pipe: Any, store: RedisStore) -> None:
        funcs = self.funcs
        store.specs.delete(self.drop_specs, pipe)
        store.specs.delete_functions([h for h, pickled in funcs.items() if pickled is None], pipe)
        store.specs.put_functions({h: p for h, p in funcs.items() if p is not None}, pipe)

    def _write_rare(self, pipe: Any, store: RedisStore) -> None:
        streams = store.streams
        for client, message in self.client_messages:
            streams.to_client(client, message, pipe)
        for restart in self.restarts:  # after the cancellations above reached the clients
            for worker in restart.workers:
                streams.to_worker(worker, wire.RestartWorker(), pipe)
            streams.to_client(restart.client, wire.Restarted(), pipe)
        for event in self.log:
            streams.log_event(event, pipe)


Outbox._dispatch = {
    ev.PersistTasks: Outbox._persist,
    ev.Compute: Outbox._compute,
    ev.Notify: Outbox._notify,
    ev.FreeKeys: Outbox._free,
    ev.StealRequest: Outbox._steal,
    ev.StoreSpec: Outbox._store_spec,
    ev.ForgetTask: Outbox._forget,
    ev.DropResult: Outbox._drop_result,
    ev.StoreFunction: Outbox._store_function,
    ev.DropFunction: Outbox._drop_function,
    ev.DropSpecs: Outbox._drop_specs,
    ev.ForgetClient: Outbox._forget_client,
    ev.LogEvent: Outbox._log,
    ev.RestartWorkers: Outbox._restart,
    ev.SendStory: Outbox._story,
    ev.OfferPlugin: Outbox._offer,
    ev.StopServing: Outbox._stop_serving,
}
