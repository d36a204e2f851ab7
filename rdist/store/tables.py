"""One façade per Redis hash: the named operations every role uses on cluster state.

Each class wraps one record kind (``tasks``, ``workers``, ``clients``, ``results``,
``specs`` with ``funcs``, ``meta``). Writes take an optional ``pipe`` (rq's
``save(pipeline=None)`` habit): given one, the command is queued on it and sent with the
rest of the caller's batch; without, it runs at once. Reads decode through the wire
records; a stored record that does not decode is *skipped* by bulk reads (and logged),
never handed on half-checked. No command grows with a graph: many fields go as several
commands of ``FIELDS_PER_COMMAND`` (in one round trip), so that Redis serves the other
clients -- the scheduler's lease renewal first -- in between.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdist.protocol.wire import (
    ClientRecord,
    MalformedMessage,
    TaskRecord,
    WorkerRecord,
    summarize_task,
)

if TYPE_CHECKING:
    from rdist.store.connection import RedisStore

log = logging.getLogger("rdist.store")

_LUA = Path(__file__).parent / "lua"
#: HSCAN slice: big enough to be cheap per record, small enough not to hold Redis long.
SCAN_COUNT = 10_000
#: Fields per HSET / HDEL command. Redis runs one command start to end: an HDEL of a
#: million fields holds it ~2 s, and every other client -- the scheduler's lease renewal
#: first -- waits behind it (the lease lapsed at the end of 1M-task runs). Commands of
#: this size take Redis a few milliseconds each, and it serves the others in between;
#: they still go out in the caller's one pipeline (one round trip).
FIELDS_PER_COMMAND = 10_000
#: Corrupt fields a table remembers having logged (then it forgets them all and starts
#: again: the memory stays bounded however much garbage a hash holds).
REPORTED_MAX = 100_000


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def hset_bounded(target: Any, name: str, mapping: Mapping[Any, Any]) -> None:
    """HSET ``mapping`` into ``name`` on ``target`` (a pipeline or a client), in commands
    of at most :data:`FIELDS_PER_COMMAND` fields."""
    if len(mapping) <= FIELDS_PER_COMMAND:
        if mapping:
            target.hset(name, mapping=mapping)
        return
    items = list(mapping.items())
    for start in range(0, len(items), FIELDS_PER_COMMAND):
        target.hset(name, mapping=dict(items[start : start + FIELDS_PER_COMMAND]))


def hdel_bounded(target: Any, name: str, fields: Iterable[Any]) -> None:
    """HDEL ``fields`` of ``name`` on ``target``, in commands of at most
    :data:`FIELDS_PER_COMMAND` fields."""
    fields = fields if isinstance(fields, list) else list(fields)
    for start in range(0, len(fields), FIELDS_PER_COMMAND):
        target.hdel(name, *fields[start : start + FIELDS_PER_COMMAND])


class _Table:
    """A hash of one cluster, reached through ``store``."""

    __slots__ = ("_reported", "_store", "name")

    def __init__(self, store: RedisStore, name: str) -> None:
        self._store = store
        self.name = name
        #: corrupt fields already logged: readers that run every second (the dashboard,
        #: the scheduler's liveness checks) log each one once, not once a second
        self._reported: set[str] = set()

    def _skipped(self, what: str, field: str, exc: Any = None) -> None:
        """Log a stored record that does not decode (once per field of this table)."""
        if field in self._reported:
            return
        if len(self._reported) >= REPORTED_MAX:
            self._reported.clear()
        self._reported.add(field)
        if exc is None:
            log.warning("skipping the corrupt record of %s %r", what, field)
        else:
            log.warning("skipping the corrupt record of %s %r: %s", what, field, exc)

    def _target(self, pipe: Any) -> Any:
        return pipe if pipe is not None else self._store.redis

    def _hmget(self, name: str, fields: list[Any]) -> list[Any]:
        """HMGET of ``fields`` in order; very many go as HMGETs of at most
        :data:`FIELDS_PER_COMMAND` fields, in one round trip (as writes, see there)."""
        if len(fields) <= FIELDS_PER_COMMAND:
            return list(self._store.redis.hmget(name, fields))
        pipe = self._store.pipeline()
        for start in range(0, len(fields), FIELDS_PER_COMMAND):
            pipe.hmget(name, fields[start : start + FIELDS_PER_COMMAND])
        return [blob for reply in pipe.execute() for blob in reply]

    def count(self) -> int:
        return int(self._store.redis.hlen(self.name))


class Tasks(_Table):
    """``tasks``: key -> :class:`TaskRecord`, written by the scheduler only."""

    __slots__ = ()

    def put_many(self, records: Mapping[str, bytes], pipe: Any = None) -> None:
        """Encoded records (the scheduler encodes each changed task once per batch)."""
        hset_bounded(self._target(pipe), self.name, records)

    def delete(self, keys: Iterable[str], pipe: Any = None) -> None:
        hdel_bounded(self._target(pipe), self.name, keys)

    def get(self, key: str) -> TaskRecord | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: list[str]) -> dict[str, TaskRecord]:
        """The records of ``keys`` that exist (and decode)."""
        if not keys:
            return {}
        return dict(self._decoded(zip(keys, self._hmget(self.name, keys))))

    def scan(
        self, cursor: int = 0, count: int = 1_000, match: str | None = None
    ) -> tuple[int, dict[str, TaskRecord]]:
        """One HSCAN step: the next cursor (0 when done) and the records of this slice."""
        kwargs: dict[str, Any] = {"count": count}
        if match is not None:
            kwargs["match"] = match
        cursor, chunk = self._store.redis.hscan(self.name, cursor, **kwargs)
        return int(cursor), dict(self._decoded((_text(k), v) for k, v in chunk.items()))

    def scan_summaries(self, cursor: int = 0, count: int = 1_000) -> tuple[int, list[Any]]:
        """One HSCAN step of :func:`wire.summarize_task` rows ``(key, summary)``: the
        dashboard's census, which counts states and needs no full decode. A record whose
        counted fields are wrong is skipped (and logged)."""
        cursor, chunk = self._store.redis.hscan(self.name, cursor, count=count)
        rows = []
        for raw_key, blob in chunk.items():
            summary = summarize_task(blob)
            if summary is None:
                self._skipped("task", _text(raw_key))
                continue
            rows.append((_text(raw_key), summary))
        return int(cursor), rows

    def all(self) -> Iterator[tuple[str, TaskRecord | MalformedMessage]]:
        """Every record, slice by slice; one that does not decode comes as its error, so a
        scheduler restoring the graph can say which key it skips."""
        for raw_key, blob in self._store.redis.hscan_iter(self.name, count=SCAN_COUNT):
            key = _text(raw_key)
            try:
                yield key, TaskRecord.decode(blob, self.name)
            except MalformedMessage as exc:
                yield key, exc

    def _decoded(self, pairs: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, TaskRecord]]:
        for key, blob in pairs:
            if blob is None:
                continue
            try:
                yield key, TaskRecord.decode(blob, self.name)
            except MalformedMessage as exc:
                self._skipped("task", key, exc)


class Workers(_Table):
    """``workers``: address -> :class:`WorkerRecord` (identity and latest metrics)."""

    __slots__ = ()

    def put(self, record: WorkerRecord, pipe: Any = None) -> None:
        self._target(pipe).hset(self.name, record.address, record.encode())

    def remove(self, addresses: Iterable[str], pipe: Any = None) -> None:
        hdel_bounded(self._target(pipe), self.name, addresses)

    def exists(self, address: str) -> bool:
        return bool(self._store.redis.hexists(self.name, address))

    def all(self) -> dict[str, WorkerRecord]:
        """Every worker whose record decodes, by address."""
        out = {}
        for raw, blob in self._store.redis.hgetall(self.name).items():
            address = _text(raw)
            try:
                out[address] = WorkerRecord.decode(blob, self.name)
            except MalformedMessage as exc:
                self._skipped("worker", address, exc)
        return out

    def get_many(self, addresses: list[str]) -> dict[str, WorkerRecord]:
        if not addresses:
            return {}
        out = {}
        for address, blob in zip(addresses, self._hmget(self.name, addresses)):
            if blob is None:
                continue
            try:
                out[address] = WorkerRecord.decode(blob, self.name)
            except MalformedMessage as exc:
                self._skipped("worker", address, exc)
        return out


class Clients(_Table):
    """``clients``: client id -> :class:`ClientRecord` (its heartbeat)."""

    __slots__ = ()

    def beat(self, client: str, record: ClientRecord, pipe: Any = None) -> None:
        self._target(pipe).hset(self.name, client, record.encode())

    def remove(self, clients: Iterable[str], pipe: Any = None) -> None:
        hdel_bounded(self._target(pipe), self.name, clients)

    def all(self) -> dict[str, ClientRecord]:
        out = {}
        for raw, blob in self._store.redis.hgetall(self.name).items():
            client = _text(raw)
            try:
                out[client] = ClientRecord.decode(blob, self.name)
            except MalformedMessage as exc:
                self._skipped("client", client, exc)
        return out

    def get_many(self, clients: list[str]) -> dict[str, ClientRecord]:
        """The records of ``clients`` that exist and decode (one HMGET: a reader that
        needs a few clients' heartbeats pays nothing for the rest of the hash)."""
        if not clients:
            return {}
        out = {}
        for client, blob in zip(clients, self._hmget(self.name, clients)):
            if blob is None:
                continue
            try:
                out[client] = ClientRecord.decode(blob, self.name)
            except MalformedMessage as exc:
                self._skipped("client", client, exc)
        return out


class Results(_Table):
    """``results``: key -> serialized small result, or serialized (exception, traceback)."""

    __slots__ = ()

    def put_many(self, blobs: Mapping[str, bytes], pipe: Any = None) -> None:
        hset_bounded(self._target(pipe), self.name, blobs)

    def get_many(self, keys: list[str], pipe: Any = None) -> list[bytes | None]:
        """The blobs of ``keys`` in order (None where absent). With ``pipe`` the read is
        queued there and its reply comes with the pipeline's."""
        if pipe is not None:
            pipe.hmget(self.name, keys)
            return []
        return self._hmget(self.name, keys) if keys else []

    def delete(self, keys: Iterable[str], pipe: Any = None) -> None:
        hdel_bounded(self._target(pipe), self.name, keys)


class Specs(_Table):
    """``specs`` (key -> task spec) and ``funcs`` (hash -> pickled function, once each)."""

    __slots__ = ("funcs", "_heads")

    def __init__(self, store: RedisStore, name: str, funcs: str) -> None:
        super().__init__(store, name)
        self.funcs = funcs
        self._heads: Any = None  #: the spec_heads script, registered on first use

    def put_many(self, specs: Mapping[str, bytes], pipe: Any = None) -> None:
        hset_bounded(self._target(pipe), self.name, specs)

    def get_many(self, keys: list[str], pipe: Any = None) -> list[bytes | None]:
        """Specs in order, None where absent; queued on ``pipe`` when given (see Results)."""
        if pipe is not None:
            pipe.hmget(self.name, keys)
            return []
        return self._hmget(self.name, keys) if keys else []

    def delete(self, keys: Iterable[str], pipe: Any = None) -> None:
        hdel_bounded(self._target(pipe), self.name, keys)

    def put_functions(self, funcs: Mapping[bytes, bytes], pipe: Any = None) -> None:
        hset_bounded(self._target(pipe), self.funcs, funcs)

    def get_functions(self, hashes: list[bytes]) -> list[bytes | None]:
        return self._hmget(self.funcs, hashes) if hashes else []

    def delete_functions(self, hashes: list[bytes], pipe: Any = None) -> None:
        hdel_bounded(self._target(pipe), self.funcs, hashes)

    def function_hashes(self) -> list[bytes]:
        """Every function stored (hashes only: one per distinct function)."""
        return [bytes(h) for h in self._store.redis.hkeys(self.funcs)]

    def functions_named(self) -> Iterator[tuple[str, bytes | None]]:
        """``(key, function hash)`` of every stored spec (None: it names no function),
        slice by slice; only the spec's first bytes leave Redis (a Lua script)."""
        if self._heads is None:
            self._heads = self._store.redis.register_script((_LUA / "spec_heads.lua").read_text())
        cursor: Any = 0
        while True:
            reply = self._heads(keys=[self.name], args=[cursor, SCAN_COUNT])
            cursor, flat = reply[0], reply[1:]
            for i in range(0, len(flat) - 1, 2):
                yield _text(flat[i]), _spec_function(flat[i + 1])
            if int(cursor) == 0:
                return


def _spec_function(head: bytes) -> bytes | None:
    """The function hash in a spec's first 19 bytes (msgpack ``[bin16 hash, ...]``, of three
    items, or four with a span)."""
    if head[:3] in (b"\x93\xc4\x10", b"\x94\xc4\x10") and len(head) >= 19:
        return bytes(head[3:19])
    return None


class Meta(_Table):
    """``meta``: the cluster secret (peer authentication), version, scheduler token."""

    __slots__ = ("_secret",)

    def __init__(self, store: RedisStore, name: str) -> None:
        super().__init__(store, name)
        self._secret: bytes | None = None

    def cluster_secret(self) -> bytes:
        """The per-cluster secret peers authenticate with, made by whoever asks first.

        The only place that reads it: every data connection's HMAC key comes from here."""
        if self._secret is None:
            redis = self._store.redis
            redis.hsetnx(self.name, "secret", secrets.token_hex(32))
            raw = redis.hget(self.name, "secret")
            try:
                self._secret = bytes.fromhex(_text(raw))
            except (TypeError, ValueError):
                raise MalformedMessage(
                    "the cluster secret is not hex", "secret", self.name
                ) from None
        return self._secret

    def make_secret(self, pipe: Any = None) -> None:
        """Make the cluster secret unless one exists (the scheduler does at the start of
        every leadership: Redis may have come back empty)."""
        self._target(pipe).hsetnx(self.name, "secret", secrets.token_hex(32))

    def restore_secret(self, secret: bytes) -> None:
        """Put back the secret this process authenticates with (after Redis lost it, a
        scheduler may have made a new one that no running peer knows)."""
        self._store.redis.hset(self.name, "secret", secret.hex())
        self._secret = secret

    def existing_secret(self) -> bytes | None:
        """The secret if one was made (a client must not invent one before a scheduler)."""
        raw = self._store.redis.hget(self.name, "secret")
        if raw is None:
            return None
        try:
            return bytes.fromhex(_text(raw))
        except ValueError:
            raise MalformedMessage("the cluster secret is not hex", "secret", self.name) from None

    def announce_scheduler(self, token: str, version: str, pipe: Any = None) -> None:
        self._target(pipe).hset(self.name, mapping={"version": version, "scheduler": token})

    def announced_scheduler(self) -> str | None:
        """The token of the scheduler that announced itself last (None: none ever did)."""
        raw = self._store.redis.hget(self.name, "scheduler")
        return raw.decode() if isinstance(raw, bytes) else raw

    def announce_versions(self, versions: dict[str, Any], pipe: Any = None) -> None:
        """The leading scheduler's Python and package versions (``client.get_versions``)."""
        self._target(pipe).hset(self.name, "versions", json.dumps(versions))

    def scheduler_versions(self) -> dict[str, Any] | None:
        raw = self._store.redis.hget(self.name, "versions")
        if raw is None:
            return None
        try:
            value = json.loads(_text(raw))
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class Metadata(_Table):
    """``metadata``: top-level key -> msgpack value (``client.set_metadata``), each top
    key changed in a WATCH transaction so that two writers of one tree lose nothing."""

    __slots__ = ()

    def get(self, top: str) -> bytes | None:
        raw = self._store.redis.hget(self.name, top)
        return bytes(raw) if raw is not None else None

    def update(self, top: str, change: Callable[[bytes | None], bytes]) -> None:
        """Replace ``top``'s value by ``change(current)``, retried if it moved meanwhile."""

        def apply(pipe: Any) -> None:
            current = pipe.hget(self.name, top)
            pipe.multi()
            pipe.hset(self.name, top, change(current))

        self._store.redis.transaction(apply, self.name)


class Transfers:
    """``transfer:<request>:<key>`` hashes: values moving through Redis in chunks, each with
    a time to live (the Redis path of the data plane, :mod:`rdist.comm.relay`)."""

    __slots__ = ("_store",)

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def pipeline(self) -> Any:
        return self._store.pipeline()

    def put_chunk(self, request_id: str, key: str, field: str, chunk: Any, pipe: Any) -> None:
        pipe.hset(self._store.keys.transfer(request_id, key), field, chunk)

    def seal(self, request_id: str, key: str, meta: bytes, ttl: int, pipe: Any) -> None:
        """The value's header, written after its chunks; the whole hash expires in ``ttl``."""
        name = self._store.keys.transfer(request_id, key)
        pipe.hset(name, "m", meta)
        pipe.expire(name, ttl)

    def keep_alive(self, request_id: str, key: str, ttl: int, pipe: Any) -> None:
        pipe.expire(self._store.keys.transfer(request_id, key), ttl)

    def take(self, request_id: str, keys: list[str]) -> list[dict[bytes, bytes]]:
        """Every field of each key's hash, in order; the hashes are deleted as they are read."""
        names = [self._store.keys.transfer(request_id, k) for k in keys]
        if not names:
            return []
        pipe = self._store.pipeline()
        for name in names:
            pipe.hgetall(name)
        pipe.delete(*names)
        return list(pipe.execute()[: len(names)])
