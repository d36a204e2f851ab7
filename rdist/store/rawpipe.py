"""A lean pipeline for the hot paths: commands packed and sent on one held connection.

redis-py's Pipeline spends ~60 µs of CPU per execute on bookkeeping (argument checks,
connection-pool round trips, metrics hooks, response callbacks); the scheduler, every worker
and every client run one or two per batch on the submit -> result path.  This one queues
the same few commands as raw argument tuples, sends them in one write and reads the raw
replies (~20 µs).  Only the replies callers use are converted: ``hgetall`` to a dict;
stream reads stay raw and :func:`rdist.store.connection.entries` reads them.

A connection is held per store and used by one thread at a time (a lock makes sure); a
store whose thread blocks on a stream read must not be shared with a thread that writes.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import redis

try:  # hiredis packs a command in C; redis-py's own packing costs more than the rest
    import hiredis
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency
    hiredis = None
    _pack_command = None


_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class RawConnection:
    """One connection taken from a client's pool and kept.

    Besides request/response (:meth:`execute`) it can :meth:`send` a batch of writes and
    read their replies later, with the next call: a loop that then blocks on a read of its
    own (another connection) sleeps once per batch, not once for the writes' replies and
    again for what it waits on -- on a VM each sleep and wake costs tens of microseconds.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._conn: Any = None
        self.lock = threading.Lock()
        self._deferred: list[tuple[Any, ...]] = []  #: sent, replies not read yet
        self._resend = False  #: the connection carrying them broke: send them again
        self._replies: _Replies | None = None  #: our own reader of the held socket

    def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` and return their replies; raises the first error reply (also
        of writes sent earlier with :meth:`send`)."""
        with self.lock:
            earlier, replies = self._attempt(
                lambda: (self._confirm(), self._send_and_read(commands))
            )
        _raise_first_error(earlier + replies)
        return replies

    def send(self, commands: list[tuple[Any, ...]]) -> None:
        """Send ``commands`` now; their replies are read by the next call."""
        with self.lock:
            earlier = self._attempt(lambda: self._confirm_and_send(commands))
        _raise_first_error(earlier)

    def confirm(self) -> None:
        """Read the replies of what :meth:`send` sent (sending it again first should its
        connection have broken); raises the first error reply."""
        with self.lock:
            if not self._deferred:
                return
            earlier = self._attempt(self._confirm)
        _raise_first_error(earlier)

    def _attempt(self, fn: Any) -> Any:
        try:
            self._hold()
            return fn()
        except _CONNECTION_ERRORS:
            # once more on a fresh connection: the held one may predate a Redis restart
            # or a fail-over (redis-py's own pipelines retry the same way; writes are
            # at-least-once)
            self._drop()
            try:
                self._hold()
                return fn()
            except _CONNECTION_ERRORS as exc:
                self._drop()  # a fresh one is taken on the next call
                if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                    raise
                raise redis.ConnectionError(f"redis connection failed: {exc}") from exc

    def _hold(self) -> None:
        """Take a connection from the pool (connected there: a Sentinel pool asks where
        the primary is now, a Redis Cluster one which node serves the slot)."""
        if self._conn is None:
            self._conn = self._client.connection_pool.get_connection()

    def _drop(self) -> None:
        """Give a broken connection back, disconnected; what it had sent is sent again."""
        conn, self._conn = self._conn, None
        self._replies = None
        self._resend = bool(self._deferred)
        if conn is not None:
            conn.disconnect()
            self._client.connection_pool.release(conn)

    def _confirm(self) -> list[Any]:
        """The replies of what :meth:`send` sent (sent again if that connection broke)."""
        deferred = self._deferred
        if not deferred:
            return []
        if self._resend:
            self._send(deferred)
            self._resend = False
        replies = self._read(len(deferred))
        self._deferred = []
        return replies

    def _confirm_and_send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        earlier = self._confirm()
        if commands:
            self._send(commands)
            self._deferred = commands
        return earlier

    def _send(self, commands: list[tuple[Any, ...]]) -> None:
        conn = self._conn
        if _pack_command is not None and isinstance(conn._sock, socket.socket):
            # straight to the socket (redis-py's send_packed_command re-checks the
            # connection's health and wraps errors: ~3 µs a batch; a socket error reaches
            # _attempt, which drops the connection as redis-py would)
            conn._sock.sendall(b"".join([_pack_command(command) for command in commands]))
        else:
            conn.send_packed_command(_pack(conn, commands), check_health=False)

    def _send_and_read(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        self._send(commands)
        return self._read(len(commands))

    def _read(self, n: int) -> list[Any]:
        conn = self._conn
        replies = self._replies
        if replies is None or replies.sock is not conn._sock:  # (a new socket)
            replies = self._replies = _Replies.of(conn)
        if replies is not None:
            return replies.read(n)
        out: list[Any] = []
        for _ in range(n):  # read every reply, even after an error one
            try:
                out.append(conn.read_response())
            except redis.ResponseError as exc:
                out.append(exc)
        return out

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                if self._deferred or (self._replies is not None and self._replies.buffered()):
                    # their replies would confuse the pool's next user
                    self._conn.disconnect()
                self._client.connection_pool.release(self._conn)
                self._conn = None
                self._replies = None
                self._deferred = []


#: what our reader returns while a reply is incomplete (never a reply itself)
_MORE = object()
#: hiredis's type for RESP3 push messages (hiredis >= 3.2)
_PUSH = getattr(hiredis, "PushNotification", None)


class _Replies:
    """Replies read straight from a held connection's socket by a hiredis reader of our own.

    redis-py's ``read_response`` spends ~5 µs of bookkeeping per reply (its timeout and
    error wrapping, push-notification and maintenance checks) around one ``Reader.gets``;
    every hot-path batch reads up to a dozen replies. Our reader has its own buffer, so it
    is used only while this connection is held: it reads exactly the replies of what was
    sent, and a connection given back with bytes still in it is disconnected (``close``).
    Error replies come back as their exceptions, as on the slow path; a socket error
    reaches :meth:`RawConnection._attempt`, which drops the connection."""

    __slots__ = ("sock", "reader", "buffer")

    def __init__(self, conn: Any) -> None:
        encoder = conn.encoder
        kwargs: dict[str, Any] = {
            "protocolError": redis.exceptions.InvalidResponse,
            "replyError": conn._parser.parse_error,
            "errors": encoder.encoding_errors,
            "notEnoughData": _MORE,
        }
        if encoder.decode_responses:
            kwargs["encoding"] = encoder.encoding
        self.sock = conn._sock
        self.reader = hiredis.Reader(**kwargs)
        self.buffer = bytearray(1 << 16)

    @classmethod
    def of(cls, conn: Any) -> _Replies | None:
        """A reader for ``conn``'s socket; None where only redis-py can read (no hiredis,
        not connected, or a parser of another kind)."""
        if hiredis is None or not isinstance(conn._sock, socket.socket):
            return None  # (fakeredis's sockets among them)
        if type(getattr(conn, "_parser", None)).__name__ != "_HiredisParser":
            return None
        return cls(conn)

    def buffered(self) -> bool:
        return bool(self.reader.has_data())

    def read(self, n: int) -> list[Any]:
        reader, sock, buffer = self.reader, self.sock, self.buffer
        gets, push = reader.gets, _PUSH
        replies: list[Any] = []
        for _ in range(n):
            reply = gets()
            while reply is _MORE or (push is not None and type(reply) is push):
                if reply is _MORE:  # (else a RESP3 push: none is subscribed here)
                    try:
                        got = sock.recv_into(buffer)
                    except TimeoutError as exc:  # (as redis-py says it, for the callers)
                        raise redis.TimeoutError(f"Timeout reading from socket: {exc}") from exc
                    if not got:
                        raise redis.ConnectionError("Connection closed by server.")
                    reader.feed(buffer, 0, got)  # type: ignore[arg-type]  # (a buffer is fine)
                reply = gets()
            if isinstance(reply, redis.ConnectionError):
                raise reply
            if type(reply) is list and reply and isinstance(reply[0], redis.ConnectionError):
                raise reply[0]
            replies.append(reply)
        return replies


def _raise_first_error(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply


def _pack(conn: Any, commands: list[tuple[Any, ...]]) -> Any:
    if _pack_command is None:
        return conn.pack_commands(commands)
    return [b"".join([_pack_command(command) for command in commands])]


class RawPipeline:
    """The subset of redis-py's pipeline API rdist uses, queued as raw commands."""

    def __init__(self, connection: RawConnection) -> None:
        self._connection = connection
        self._commands: list[tuple[Any, ...]] = []
        self._convert: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._commands)

    def _add(self, *args: Any) -> RawPipeline:
        self._commands.append(args)
        return self

    # -- writes ----------------------------------------------------------------------------
    def xadd(
        self,
        name: str,
        fields: dict[Any, Any],
        maxlen: int | None = None,
        approximate: bool = True,
        nomkstream: bool = False,
    ) -> RawPipeline:
        args: list[Any] = ["XADD", name]
        if nomkstream:
            args.append("NOMKSTREAM")
        if maxlen is not None:
            args += ["MAXLEN", "~" if approximate else "=", maxlen]
        args.append("*")
        for field, value in fields.items():
            args += [field, value]
        return self._add(*args)

    def hset(
        self, name: str, key: Any = None, value: Any = None, mapping: dict[Any, Any] | None = None
    ) -> RawPipeline:
        args: list[Any] = ["HSET", name]
        if key is not None:
            args += [key, value]
        for field, item in (mapping or {}).items():
            args += [field, item]
        return self._add(*args)

    def incrby(self, name: str, amount: int = 1) -> RawPipeline:
        return self._add("INCRBY", name, amount)

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> RawPipeline:
        return self._add("EVAL", script, numkeys, *keys_and_args)

    def hdel(self, name: str, *keys: Any) -> RawPipeline:
        return self._add("HDEL", name, *keys)

    def delete(self, *names: str) -> RawPipeline:
        return self._add("DEL", *names)

    def expire(self, name: str, seconds: int) -> RawPipeline:
        return self._add("EXPIRE", name, int(seconds))

    def hsetnx(self, name: str, key: Any, value: Any) -> RawPipeline:
        return self._add("HSETNX", name, key, value)

    def hincrby(self, name: str, key: Any, amount: int = 1) -> RawPipeline:
        return self._add("HINCRBY", name, key, int(amount))

    def hincrbyfloat(self, name: str, key: Any, amount: float = 1.0) -> RawPipeline:
        return self._add("HINCRBYFLOAT", name, key, repr(float(amount)))

    def zadd(self, name: str, mapping: dict[Any, float]) -> RawPipeline:
        args: list[Any] = ["ZADD", name]
        for member, score in mapping.items():
            args += [repr(float(score)), member]
        return self._add(*args)

    def zremrangebyrank(self, name: str, start: int, end: int) -> RawPipeline:
        return self._add("ZREMRANGEBYRANK", name, int(start), int(end))

    def xack(self, name: str, group: str, *ids: Any) -> RawPipeline:
        return self._add("XACK", name, group, *ids)

    def xdel(self, name: str, *ids: Any) -> RawPipeline:
        return self._add("XDEL", name, *ids)

    # -- reads -----------------------------------------------------------------------------
    def hmget(self, name: str, keys: list[Any]) -> RawPipeline:
        return self._add("HMGET", name, *keys)

    def hgetall(self, name: str) -> RawPipeline:
        self._convert[len(self._commands)] = _pairs_to_dict
        return self._add("HGETALL", name)

    def xpending_range(
        self, name: str, group: str, start: str, end: str, count: int, consumer: str
    ) -> RawPipeline:
        """The extended XPENDING: ``[id, consumer, idle ms, deliveries]`` per pending entry."""
        return self._add("XPENDING", name, group, start, end, count, consumer)

    def xread(
        self, streams: dict[str, Any], count: int | None = None, block: int | None = None
    ) -> RawPipeline:
        return self._add("XREAD", *_read_args(streams, count, block))

    def xreadgroup(
        self,
        group: str,
        consumer: str,
        streams: dict[str, Any],
        count: int | None = None,
        block: int | None = None,
    ) -> RawPipeline:
        return self._add("XREADGROUP", "GROUP", group, consumer, *_read_args(streams, count, block))

    def send(self) -> None:
        """Send the queued writes now, their replies read with the connection's next call
        (which raises their errors); nothing queued here may be a read."""
        commands, self._commands, self._convert = self._commands, [], {}
        self._connection.send(commands)

    def execute(self) -> list[Any]:
        if not self._commands:
            return []
        commands, convert = self._commands, self._convert
        self._commands, self._convert = [], {}
        replies = self._connection.execute(commands)
        for index, fn in convert.items():
            replies[index] = fn(replies[index])
        return replies


def _read_args(streams: dict[str, Any], count: int | None, block: int | None) -> list[Any]:
    args: list[Any] = []
    if count is not None:
        args += ["COUNT", count]
    if block is not None:
        args += ["BLOCK", block]
    return args + ["STREAMS", *streams.keys(), *streams.values()]


def _pairs_to_dict(flat: Any) -> dict[Any, Any]:
    if isinstance(flat, dict):  # RESP3
        return flat
    return dict(zip(flat[::2], flat[1::2]))
