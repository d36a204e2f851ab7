"""Which Redis to talk to: one server, a Sentinel-watched primary, or a Redis Cluster.

Every role is given one URL; this module turns it into a redis-py client, so the rest of
``rdist.store`` never asks which kind of deployment it talks to:

``redis://``, ``rediss://``, ``unix://``
    one server (redis-py's own URL parsing).
``redis+sentinel://[[user]:password@]host:port[,host:port...]/<service>[/<db>][?...]``
    the primary that the Sentinels name for ``<service>`` (redis-py's ``Sentinel``):
    each new connection asks a Sentinel where the primary is, so after a fail-over the
    roles' retries land on the promoted replica. ``rediss+sentinel://`` speaks TLS to
    the primary and the Sentinels. Query options: ``sentinel_password``,
    ``sentinel_username`` (the Sentinels' own credentials; by default they need none),
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``.
``redis+cluster://[[user]:password@]host:port[,host:port...][/0][?...]``
    a Redis Cluster (``rediss+cluster://`` with TLS). Every key of one rdist cluster
    carries the hash tag ``{<cluster>}`` (:mod:`rdist.store.keys`), so it lives in one
    slot: the store talks to the primary serving that slot over plain connections, and
    its pipelines, Lua scripts and transactions work unchanged. redis-py's
    ``RedisCluster`` finds that primary; each new connection asks it again, and a
    ``MOVED`` reply (the slot moved: a resharding or a fail-over) drops the connection
    and refreshes the slot table, so the retry lands on the new owner.

Secrets (passwords in the URL or its query) are never logged: errors go through
:func:`rdist.config.mask_url`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
#: Query options passed to every connection (primary, Sentinels, cluster nodes) as given.
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
#: How long a question to a Sentinel may take: a dead one must not stall a reconnect.
SENTINEL_TIMEOUT = 2.0


@dataclass(frozen=True)
class Target:
    """A parsed Sentinel or Cluster URL (``password`` is kept out of the repr)."""

    kind: str  #: "sentinel" or "cluster"
    hosts: tuple[tuple[str, int], ...]
    service: str = ""  #: the Sentinel service (master) name
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    options: tuple[tuple[str, str], ...] = ()  #: the query options, in order

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEMES)


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def parse(url: str) -> Target:
    """A ``redis+sentinel://`` or ``redis+cluster://`` URL's parts (pure); ValueError
    (without the URL's secrets in its message) when it is malformed."""
    scheme, _, rest = url.partition("://")
    kind = "sentinel" if scheme.endswith("+sentinel") else "cluster"
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # a lone token is a password, as redis:// URLs have it
            username, password = None, unquote(user) or None
    hosts = tuple(_host(item) for item in hostlist.split(",") if item.strip())
    if not hosts:
        raise ValueError(f"a {scheme}:// URL names at least one host:port")
    parts = [unquote(p) for p in path.split("/") if p]
    service, db = "", 0
    if kind == "sentinel":
        if not parts:
            raise ValueError(
                f"a {scheme}:// URL names the Sentinel service: {scheme}://host:port/<name>/0"
            )
        service, parts = parts[0], parts[1:]
    if len(parts) > 1 or (parts and not parts[0].isdigit()):
        raise ValueError(f"the database in a {scheme}:// URL is one number, got {'/'.join(parts)}")
    db = int(parts[0]) if parts else 0
    if kind == "cluster" and db != 0:
        raise ValueError("a Redis Cluster has database 0 only")
    options = tuple(parse_qsl(query, keep_blank_values=True))
    return Target(
        kind, hosts, service, db, username, password, scheme.startswith("rediss"), options
    )


def _host(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:26379
        host, _, port = item[1:].partition("]:")
    else:
        host, _, port = item.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"each host is host:port, got {item!r}")
    return host, int(port)


def make_client(url: str, tls: dict[str, Any], tag_key: str, **overrides: Any) -> Any:
    """A redis-py client for a Sentinel or Cluster URL; ``tls`` are the certificate
    options for ``rediss+...`` (see ``connection._tls_options``), ``tag_key`` a key of the
    rdist cluster (its slot picks the Redis Cluster node), ``overrides`` socket options
    (timeouts) for the data connections."""
    target = parse(url)
    common: dict[str, Any] = {}
    if target.tls:
        common.update(ssl=True, **tls)
        common.update({k: v for k, v in target.options if k in _TLS_OPTIONS})
    if target.kind == "sentinel":
        return _sentinel_primary(target, common, overrides)
    return _slot_client(target, common, overrides, tag_key)


def _sentinel_primary(target: Target, common: dict[str, Any], overrides: dict[str, Any]) -> Any:
    sentinel_kwargs: dict[str, Any] = {
        **common,
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
    }
    if target.option("sentinel_password") is not None:
        sentinel_kwargs["password"] = target.option("sentinel_password")
    if target.option("sentinel_username") is not None:
        sentinel_kwargs["username"] = target.option("sentinel_username")
    sentinel = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        **common,
        **overrides,
    )


# -- Redis Cluster: one slot, one primary ----------------------------------------------------


class SlotOwner:
    """Where the slot of one hash tag lives, as redis-py's RedisCluster client sees the
    cluster (asked lazily: opening a store sends nothing); refreshed after a MOVED reply."""

    def __init__(self, target: Target, common: dict[str, Any], tag_key: str) -> None:
        self._target = target
        self._common = common
        self.tag_key = tag_key
        self._lock = threading.Lock()
        self._cluster: RedisCluster | None = None
        self._stale = False

    def address(self) -> tuple[str, int]:
        """The primary serving the slot now; a cluster that cannot tell (no seed node
        answers, the slot unserved) is a connection failure, retried like one."""
        try:
            return self._address()
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except (redis.RedisError, RedisClusterException) as exc:
            self.moved()
            raise redis.ConnectionError(
                f"the Redis Cluster cannot say where the slot is: {exc}"
            ) from exc

    def _address(self) -> tuple[str, int]:
        with self._lock:
            if self._cluster is None:
                self._cluster = RedisCluster(
                    startup_nodes=[ClusterNode(h, p) for h, p in self._target.hosts],
                    username=self._target.username,
                    password=self._target.password,
                    socket_connect_timeout=SENTINEL_TIMEOUT * 5,
                    socket_timeout=SENTINEL_TIMEOUT * 5,
                    **self._common,
                )
            elif self._stale:
                self._cluster.nodes_manager.initialize()
            self._stale = False
            node = self._cluster.get_node_from_key(self.tag_key)
            return node.host, int(node.port)

    def moved(self) -> None:
        with self._lock:
            self._stale = True

    def close(self) -> None:
        with self._lock:
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None


#: Replies that say the slot is served elsewhere (or nowhere, for a moment).
_SLOT_MOVED = (
    redis.exceptions.AskError,  # MovedError is one
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


class _SlotConnectionMixin:
    """Connects to whichever primary serves the slot (asked at every connect); a MOVED
    reply drops the connection as a lost one, so the caller's retry reconnects there."""

    owner: SlotOwner
    host: str
    port: int

    def __init__(self, **kwargs: Any) -> None:
        self.owner = kwargs.pop("slot_owner")
        super().__init__(**kwargs)

    def _connect(self) -> Any:
        self.host, self.port = self.owner.address()
        return super()._connect()  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except _SLOT_MOVED as exc:
            self.owner.moved()
            self.disconnect()  # type: ignore[attr-defined]
            raise redis.ConnectionError(f"the cluster slot moved ({exc})") from exc


class SlotConnection(_SlotConnectionMixin, redis.Connection):
    pass


class SlotSSLConnection(_SlotConnectionMixin, redis.SSLConnection):
    pass


def _slot_client(
    target: Target, common: dict[str, Any], overrides: dict[str, Any], tag_key: str
) -> Any:
    """A plain client whose connections go to the primary serving ``tag_key``'s slot."""
    owner = SlotOwner(target, dict(common), tag_key)
    options = dict(common)
    tls = bool(options.pop("ssl", False))
    pool = redis.ConnectionPool(
        connection_class=SlotSSLConnection if tls else SlotConnection,
        slot_owner=owner,
        username=target.username,
        password=target.password,
        **options,
        **overrides,
    )
    client = redis.Redis(connection_pool=pool)
    client.slot_owner = owner  # type: ignore[attr-defined]
    return client


def close(client: Any) -> None:
    """Close the RedisCluster client behind a slot client (no-op for other clients)."""
    owner = getattr(client, "slot_owner", None)
    if isinstance(owner, SlotOwner):
        owner.close()
