"""A worker's side of the data plane: serving its data, fetching what its tasks need.

- Serving: a listener (``tcp://``, ``tls://`` with TLS settings, or ``inproc://``) answers
  ``get``/``put`` requests from the worker's :class:`~rdist.worker.memory.SpillBuffer`, at most
  :data:`~rdist.comm.transfer.MAX_OUTGOING` transfers at once ("busy" beyond).
- Fetching: the dependencies of new tasks are planned into batches per peer (at most
  :data:`~rdist.comm.transfer.BATCH_BYTES` each) and fetched by a few threads, so the first
  dependents start while later batches still travel.
- Stream messages: ``publish`` / ``load`` (the Redis path, :mod:`rdist.comm.relay`),
  ``published`` / ``loaded`` (answers to our own requests), ``gather-keys`` (copy keys
  here: ``client.replicate`` and ``client.rebalance``).
"""

from __future__ import annotations

import importlib
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from rdist.actors.host import ACTOR_OP
from rdist.comm.core import listen, split_address
from rdist.comm.pool import ConnectionPool
from rdist.comm.relay import RedisRelay, Replies
from rdist.comm.security import Security
from rdist.comm.tcp import TLS_SCHEMES, format_address, parse_address
from rdist.comm.transfer import (
    MAX_INCOMING,
    DataServer,
    Gatherer,
    frames_nbytes,
    plan_batches,
    transfer_mode,
)
from rdist.protocol import serialize
from rdist.protocol.wire import (
    DepInfo,
    Gathered,
    GatherKeys,
    Load,
    Loaded,
    Message,
    Publish,
    Published,
    TaskDone,
    TransferRun,
)
from rdist.worker.events import DataArrived
from rdist.worker.memory import CACHE_KEEP_BYTES
from rdist.worker.sizeof import sizeof

if TYPE_CHECKING:
    from rdist.worker.server import Worker

log = logging.getLogger("rdist.worker")

#: Data-server ops served by extensions: op prefix -> ``module:function`` called as
#: ``function(worker, header, frames) -> reply`` (imported on the first such request, so a
#: worker that never sees one never imports it).
EXTENSION_OPS = {"shuffle-": "rdist.shuffle.service:handle"}


def listen_address_of(
    host: str = "127.0.0.1", port: int = 0, listen_address: str | None = None
) -> str:
    if listen_address:
        return listen_address if "://" in listen_address else f"tcp://{listen_address}"
    return format_address(host, port)


def secured_address(address: str, security: Security) -> str:
    """``tcp://`` becomes ``tls://`` when TLS is configured (other schemes stay)."""
    scheme, location = split_address(address)
    return f"tls://{location}" if security.enabled and scheme == "tcp" else address


def advertised_address(bound: str, contact: str | None = None) -> str:
    """The address peers should use: ``contact`` (a host, ``host:port`` or URL; a missing or
    zero port means the bound one), else the bound address with a wildcard host replaced."""
    scheme, _ = split_address(bound)
    if scheme != "tcp" and scheme not in TLS_SCHEMES:
        return bound
    host, port = parse_address(bound)
    if contact:
        location = split_address(contact)[1]
        if location.startswith("["):  # [v6] or [v6]:port
            chost, _, rest = location[1:].partition("]")
            cport = int(rest[1:]) if rest.startswith(":") else 0
        elif location.count(":") == 1:
            chost, cport = location.split(":")[0], int(location.split(":")[1])
        else:  # a host name, an IPv4 address or a bare IPv6 address
            chost, cport = location, 0
        return format_address(chost or host, cport or port, scheme)
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return format_address(host, port, scheme)


def _extension(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class DataPlane:
    def __init__(
        self,
        worker: Worker,
        listen_address: str,
        contact_address: str | None = None,
        mode: str | None = None,
        security: Security | None = None,
    ) -> None:
        self.worker = worker
        self.mode = transfer_mode(mode)
        #: TLS settings (from the configuration unless given): peers and we speak TLS
        self.security = (security or Security.from_config()).check()
        self.server = DataServer(worker.data.frames_of, worker.data.size_of, self._put)
        self.listener = listen(
            secured_address(listen_address, self.security),
            worker.secret,
            self._handle,
            self.security,
        )
        self.address = advertised_address(self.listener.address, contact_address)
        add_local_alias = getattr(self.listener, "add_local_alias", None)
        if add_local_alias is not None:  # peers on this host skip the TCP stack
            add_local_alias(self.address)
        self.pool = ConnectionPool(worker.secret, security=self.security)
        self.replies = Replies()
        self.relay = RedisRelay(worker.store, ("w", self.address), self.replies)
        self.gatherer = Gatherer(self.pool, self.mode, self.relay, me=self.address)
        self.fetchers = ThreadPoolExecutor(MAX_INCOMING, thread_name_prefix="rdist-fetch")
        self.background = ThreadPoolExecutor(2, thread_name_prefix="rdist-relay")

    def start(self) -> None:
        self.listener.start()

    def _handle(self, header: dict[str, Any], frames: list[Any]) -> tuple[Any, ...]:
        """A request on our data server: a call of one of our actors, or data."""
        op = header.get("op")
        if op == ACTOR_OP:
            return self.worker.actors.handle_request(header, frames)
        if isinstance(op, str):
            for prefix, target in EXTENSION_OPS.items():
                if op.startswith(prefix):
                    return _extension(target)(self.worker, header, frames)
        return self.server.handle(header, frames)

    def close(self) -> None:
        self.listener.close()
        self.pool.close()
        self.fetchers.shutdown(wait=False, cancel_futures=True)
        self.background.shutdown(wait=False, cancel_futures=True)

    # -- storing what arrives ----------------------------------------------------------------
    def _store(self, key: str, frames: list[Any]) -> Any:
        value = serialize.loads(frames)
        keep = frames if serialize.frame_nbytes(frames[0]) <= CACHE_KEEP_BYTES else None
        self.worker.data.set(key, value, sizeof(value), keep)
        return value

    def _put(self, items: dict[str, list[Any]]) -> None:
        """Data pushed to us (scatter, a leaving peer's hand-off): we hold it from now on."""
        for key, frames in items.items():
            self._store(key, frames)
        self._arrived(list(items))

    def _arrived(self, keys: list[str]) -> None:
        if keys:
            worker = self.worker
            worker.dispatch(DataArrived(worker.stimulus("data-arrived"), time.time(), keys))

    # -- fetching dependencies ---------------------------------------------------------------
    def fetch(self, wanted: dict[str, DepInfo]) -> None:
        """Fetch ``wanted`` in batches, in threads; the worker hears of each batch."""
        batches = plan_batches({k: (d.holders, d.nbytes) for k, d in wanted.items()}, self.address)
        for peer, keys in batches:
            if not peer:  # nobody else holds it
                self.worker.fetched([], keys)
                continue
            holders = {k: wanted[k].holders for k in keys}
            self.fetchers.submit(self._fetch_batch, keys, holders, peer)

    def _fetch_batch(self, keys: list[str], holders: dict[str, list[str]], peer: str) -> None:
        try:
            self.worker.wait_until_running()
            start = time.time()
            found, missing = self.gatherer.fetch(keys, holders)
            self._note_transfers(found, peer, start)
        except Exception:
            log.exception("worker %s: fetching %s failed", self.worker.address, keys)
            found, missing = {}, list(keys)
        got = []
        for key, frames in found.items():
            try:
                self._store(key, frames)
            except serialize.SerializationError as exc:
                log.error(
                    "worker %s: cannot unpickle dependency %r: %s", self.worker.address, key, exc
                )
                missing.append(key)
                continue
            got.append(key)
        tried = sorted({h for k in missing for h in holders.get(k, ())})
        self.worker.fetched(got, missing, tried)  # the scheduler strikes off those holders

    def _note_transfers(self, found: dict[str, list[Any]], peer: str, start: float) -> None:
        """The task stream's transfers: one row per key of the batch (its source is the
        peer asked first; a key another holder gave is still shown as from it)."""
        stop, me = time.time(), self.address
        self.worker.transfers.extend(
            TransferRun(key, me, peer, start, stop, frames_nbytes(frames))
            for key, frames in found.items()
        )

    # -- stream messages ---------------------------------------------------------------------
    def handle_message(self, msg: Message) -> None:
        if isinstance(msg, (Published, Loaded)):
            self.replies.resolve(msg)
        elif isinstance(msg, Publish):
            self.background.submit(self._guard, self.relay.publish, msg, self.worker.data.frames_of)
        elif isinstance(msg, Load):
            self.background.submit(self._guard, self.relay.load, msg, self._put)
        elif isinstance(msg, GatherKeys):  # waits on peers: not on the threads that answer peers
            self.fetchers.submit(self._guard, self._gather_keys, msg)
        else:
            log.warning("worker %s: ignoring an unexpected %s", self.worker.address, msg.OP)

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("worker %s: data request failed", self.worker.address)

    def _gather_keys(self, msg: GatherKeys) -> None:
        """Copy keys here from their holders, tell the scheduler, then answer the client."""
        data = self.worker.data
        wanted = {k: list(h) for k, h in msg.keys.items() if k not in data}
        found, missing = self.gatherer.fetch(list(wanted), wanted) if wanted else ({}, [])
        for key, frames in found.items():
            self._store(key, frames)
        held = [k for k in msg.keys if k in found or k in data]
        self._arrived(list(found))
        store = self.worker.store
        pipe = store.pipeline()
        if held:
            store.streams.to_scheduler(TaskDone(self.address, replicated=held), pipe)
        answer = Gathered(msg.id, self.address, held, missing)
        store.streams.reply(msg.to.kind, msg.to.ident, answer, pipe)
        pipe.execute()
