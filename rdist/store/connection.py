"""Connections to Redis and the few stream primitives every role shares.

Everything outside ``rdist.store`` talks to Redis through a :class:`RedisStore`; pipelines it
hands out are plain redis-py pipelines, used to batch one round trip per batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from rdist.config import mask_url
from rdist.store import health, tables, topology
from rdist.store.diagnostics import Profiles, Spans
from rdist.store.epoch import Epoch
from rdist.store.exchanges import Exchanges
from rdist.store.keys import PAYLOAD_FIELD, Keys
from rdist.store.logs import Logs
from rdist.store.plugins import Plugins
from rdist.store.primitives import Primitives
from rdist.store.rawpipe import RawConnection, RawPipeline
from rdist.store.streams import Streams

#: FakeServers by name, so in-process tests can use ``fakeredis://<name>`` URLs.
_FAKE_SERVERS: dict[str, Any] = {}
_FAKE_LOCK = threading.Lock()

ConnectionErrors = (redis.ConnectionError, redis.TimeoutError)
ResponseError = redis.ResponseError
Entry = tuple[bytes, bytes | None]  # (stream entry id, payload or None when malformed)


def _fake_client(name: str) -> Any:
    import fakeredis  # test-only dependency

    with _FAKE_LOCK:
        server = _FAKE_SERVERS.setdefault(name, fakeredis.FakeServer())
    return fakeredis.FakeRedis(server=server)


def drop_fake_server(name: str) -> None:
    with _FAKE_LOCK:
        _FAKE_SERVERS.pop(name, None)


def connect(url: str, cluster: str = "default") -> RedisStore:
    """Open a store on ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``,
    ``redis+cluster://`` (see :mod:`rdist.store.topology`) or ``fakeredis://`` URLs.

    Nothing is sent yet (see :meth:`RedisStore.check`); a URL that cannot work -- empty,
    of an unknown scheme, malformed -- raises :class:`~rdist.store.health.RedisConfigError`
    here, naming it with its password masked."""
    health.check_url(url)
    if url.startswith("fakeredis://"):
        return RedisStore(_fake_client(url[len("fakeredis://") :]), Keys(cluster), url)
    keys = Keys(cluster)
    # No socket timeout: blocking stream reads must not trip it (they carry their own BLOCK).
    return RedisStore(_client(url, keys, socket_timeout=None, socket_connect_timeout=10), keys, url)


def _client(url: str, keys: Keys, **options: Any) -> Any:
    """The redis-py client for ``url`` (one server, Sentinel's primary, or the Redis
    Cluster node serving ``keys``' slot), with the socket ``options``; a URL that cannot
    work raises RedisConfigError (secrets masked)."""
    try:
        if topology.is_sentinel(url) or topology.is_cluster(url):
            return topology.make_client(url, _tls_options(url), keys.prefix, **options)
        return redis.Redis.from_url(url, **options, **_tls_options(url))
    except (ValueError, TypeError) as exc:  # parsing the URL and its options
        raise health.config_error(url, exc) from None


def _tls_options(url: str) -> dict[str, Any]:
    """Certificate checks for ``rediss://`` (and ``rediss+sentinel://``,
    ``rediss+cluster://``): verified unless RDIST_REDIS_SSL_CERT_REQS says "none" or
    "optional" (Heroku Redis presents a self-signed certificate)."""
    if not url.startswith("rediss"):
        return {}
    from rdist.config import redis_ssl_cert_reqs

    reqs = redis_ssl_cert_reqs()
    return {"ssl_cert_reqs": reqs, "ssl_check_hostname": reqs == "required"}


class EmptyReadGuard:
    """Keeps a read loop from spinning when a blocking read returns at once with nothing.

    Real Redis only answers an empty XREAD BLOCK after the block time, so this never waits
    there; fakeredis answers at once, and then we back off a little (up to ``cap`` seconds).
    """

    def __init__(self, stop: threading.Event, cap: float = 0.02) -> None:
        self._stop = stop
        self._cap = cap
        self._delay = 0.0005

    def after_read(self, got_entries: bool, started: float, block_ms: int) -> None:
        if got_entries:
            self._delay = 0.0005
            return
        if time.monotonic() - started >= block_ms / 2000:
            return
        self._stop.wait(self._delay)
        self._delay = min(self._delay * 2, self._cap)


class BatchedDeletes:
    """Stream entries to delete once handled, deleted many at a time.

    An acknowledged entry is never delivered again, so deleting it only frees memory:
    that waits for ``many`` entries or ``seconds``, one XDEL instead of one per batch.
    """

    def __init__(self, many: int = 200, seconds: float = 1.0) -> None:
        self._ids: list[bytes] = []
        self._many = many
        self._seconds = seconds
        self._last = time.monotonic()

    def add(self, ids: Iterable[bytes]) -> None:
        self._ids.extend(ids)

    def take_due(self) -> list[bytes]:
        """The ids to delete now (empty until enough have gathered or time has passed)."""
        now = time.monotonic()
        if not self._ids or (len(self._ids) < self._many and now < self._last + self._seconds):
            return []
        ids, self._ids, self._last = self._ids, [], now
        return ids


class RedisStore:
    """A Redis client bound to one cluster's key names, with a façade per record.

    Code outside ``rdist.store`` uses the façades (``store.tasks``, ``store.workers``,
    ``store.streams``, ...) and the pipelines handed out here; it never sends a Redis
    command of its own."""

    def __init__(self, client: Any, keys: Keys, url: str) -> None:
        self.redis = client
        self.keys = keys
        self.url = url
        self._raw: RawConnection | None = None
        self._raw_reads: RawConnection | None = None  #: blocking stream reads only
        self.tasks = tables.Tasks(self, keys.tasks)
        self.workers = tables.Workers(self, keys.workers)
        self.clients = tables.Clients(self, keys.clients)
        self.results = tables.Results(self, keys.results)
        self.specs = tables.Specs(self, keys.specs, keys.funcs)
        self.meta = tables.Meta(self, keys.meta)
        self.metadata = tables.Metadata(self, keys.metadata)
        self.transfers = tables.Transfers(self)
        self.streams = Streams(self)
        self.primitives = Primitives(self)
        self.plugins = Plugins(self)
        self.profiles = Profiles(self)
        self.spans = Spans(self)
        self.logs = Logs(self)
        self.epoch = Epoch(self)
        self.exchanges = Exchanges(self)

    def __repr__(self) -> str:
        return f"<RedisStore {mask_url(self.url)} cluster={self.keys.cluster!r}>"

    def ping(self) -> bool:
        return bool(self.redis.ping())

    def check(self, timeout: float, what: str = "rdist") -> None:
        """Make sure Redis answers (connection, AUTH, TLS) within ``timeout`` s: permanent
        failures raise RedisConfigError at once, transient ones RedisUnreachable once
        they outlast it (see :mod:`rdist.store.health`).

        Each try goes over a probe connection of its own, with a socket timeout: the
        store's connections have none (their blocking reads carry their own), and a TLS
        handshake with a server that does not speak TLS would otherwise wait for ever."""
        if self.url.startswith("fakeredis://"):
            health.wait_until_reachable(self.redis.ping, self.url, timeout, what)
            return
        deadline = time.monotonic() + timeout

        def probe() -> None:
            left = max(0.2, deadline - time.monotonic())
            client = _client(
                self.url,
                self.keys,
                socket_timeout=left,
                socket_connect_timeout=left,
                retry_on_timeout=False,
            )
            try:
                client.ping()
            finally:
                client.close()
                topology.close(client)

        health.wait_until_reachable(probe, self.url, timeout, what)

    def leader(self) -> str | None:
        """The token of the scheduler holding the cluster's leader lease, if any."""
        raw = self.redis.get(self.keys.lease)
        return raw.decode() if isinstance(raw, bytes) else raw

    def wait_for_scheduler(self, timeout: float) -> str:
        """The leader's token, waiting up to ``timeout`` s for a scheduler to take the lease
        (woken by the events stream, where a scheduler announces its start); else
        :class:`~rdist.store.health.NoScheduler`."""
        if (token := self.leader()) is not None:
            return token
        reader = self.clone()
        newest = self.streams.newest(self.keys.events)
        last: list[bytes | str] = [newest[0][0] if newest else "0-0"]

        def wait_for_news(seconds: float) -> None:
            got = reader.read(self.keys.events, last[0], 100, max(1, int(seconds * 1000)))
            if got:
                last[0] = got[-1][0]
            elif self.url.startswith("fakeredis://"):
                time.sleep(0.01)  # fakeredis answers a blocking read at once

        try:
            return health.wait_for_scheduler(
                self.leader, wait_for_news, self.url, self.keys.cluster, timeout
            )
        finally:
            reader.close()

    def memory_info(self) -> dict[str, Any]:
        """Redis's ``INFO memory`` section (the dashboard's /metrics)."""
        return dict(self.redis.info("memory"))

    def raw_pipeline(self) -> RawPipeline:
        """A lean pipeline on this store's own held connection (see :mod:`rawpipe`): for
        the loops that run one per batch.  One thread at a time."""
        if self._raw is None:
            self._raw = RawConnection(self.redis)
        return RawPipeline(self._raw)

    def confirm_sent(self) -> None:
        """Wait for Redis's replies to what :meth:`raw_pipeline` sent with ``send()`` and
        not read yet (sent again should the connection have broken); raises the first
        error reply."""
        if self._raw is not None:
            self._raw.confirm()

    def _blocking_read(self) -> RawPipeline:
        if self._raw_reads is None:
            self._raw_reads = RawConnection(self.redis)
        return RawPipeline(self._raw_reads)

    def clone(self) -> RedisStore:
        """A second connection (blocking reads need a connection of their own)."""
        return connect(self.url, self.keys.cluster)

    def pipeline(self) -> Any:
        return self.redis.pipeline(transaction=False)

    def close(self) -> None:
        try:
            for raw in (self._raw, self._raw_reads):
                if raw is not None:
                    raw.close()
            self.redis.close()
            topology.close(self.redis)
        except Exception:  # closing is best effort
            pass

    # -- streams ---------------------------------------------------------------------
    def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        try:
            self.redis.xgroup_create(stream, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        count: int,
        block_ms: int,
        before: Callable[[Any], None] | None = None,
    ) -> list[Entry]:
        """XREADGROUP one batch of new entries; ``before(pipe)`` queues writes sent just
        before it.

        The writes go out first, on this store's own connection, and their replies are read
        (their errors raised) with the next batch's writes; the blocking read has a
        connection of its own, so the loop sleeps once, until its next entries arrive.
        (Entries delivered before and never acknowledged: :meth:`read_own_pending`.)"""
        pipe = self.raw_pipeline()
        if before is not None:
            before(pipe)
        pipe.send()
        read = self._blocking_read()
        read.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
        return _entries(read.execute()[0])

    def read_own_pending(
        self,
        stream: str,
        group: str,
        consumer: str,
        after: bytes | str = "0",
        before: Callable[[Any], None] | None = None,
    ) -> tuple[list[Entry], int]:
        """The oldest entry after id ``after`` delivered to ``consumer`` and never
        acknowledged (if any), with how often it had been delivered before this read.

        One entry at a time, after the writes ``before(pipe)`` queues (the acknowledgement
        of the previous one among them), on their connection: it must see the
        acknowledgements they carry. Re-reading counts as a delivery, so reading many at
        once would count one more for each even when the handling of only one of them kills
        the process. Read singly, an entry's count says how often *its* handling was tried
        and never finished -- what a loop needs to tell an entry that kills it from the
        others (see :mod:`rdist.store.guard`)."""
        pipe = self.raw_pipeline()
        if before is not None:
            before(pipe)
        pipe.xpending_range(stream, group, _next_id(after), "+", 1, consumer)
        pipe.xreadgroup(group, consumer, {stream: after}, count=1)
        replies = pipe.execute()
        entries = _entries(replies[-1])
        return entries, _deliveries(replies[-2], entries)

    def read(
        self,
        stream: str,
        last_id: bytes | str,
        count: int,
        block_ms: int,
        before: Callable[[Any], None] | None = None,
    ) -> list[Entry]:
        """XREAD one batch after the writes ``before(pipe)`` queues (see read_group)."""
        if before is not None:
            pipe = self.raw_pipeline()
            before(pipe)
            pipe.send()
        read = self._blocking_read()
        read.xread({stream: last_id}, count=count, block=block_ms)
        return _entries(read.execute()[0])


def _entries(reply: Any) -> list[Entry]:
    """(id, payload) of each entry of a raw XREAD/XREADGROUP reply: a map of stream to
    entries (RESP3) or a list of [stream, entries] (RESP2); fields come flat."""
    if not reply:
        return []
    out: list[Entry] = []
    per_stream: Iterable[Any] = (
        reply.values() if isinstance(reply, dict) else (stream_reply[1] for stream_reply in reply)
    )
    for messages in per_stream:
        for entry_id, fields in messages:
            out.append((entry_id, _payload(fields)))
    return out


def _next_id(entry_id: bytes | str) -> str:
    """The smallest stream id after ``entry_id`` (XPENDING ranges are inclusive)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    if not seq:
        return "-" if ms in ("", "0") else f"{ms}-1"
    return f"{ms}-{int(seq) + 1}"


def _deliveries(pending: Any, entries: list[Entry]) -> int:
    """The delivery count XPENDING gave for the entry read after it (1 when unknown)."""
    if not entries or not pending:
        return 1
    entry_id, _consumer, _idle, count = pending[0]
    if entry_id != entries[0][0]:
        return 1
    try:
        return int(count)
    except (TypeError, ValueError):
        return 1


def _payload(fields: Any) -> bytes | None:
    if not fields:  # deleted entry still listed as pending
        return None
    if isinstance(fields, dict):
        return fields.get(PAYLOAD_FIELD)
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == PAYLOAD_FIELD:
            return fields[i + 1]
    return None
