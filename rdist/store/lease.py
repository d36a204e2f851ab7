"""The scheduler's leader lease: one active scheduler per cluster, standbys wait.

A token ``host:pid:nonce`` is SET with a time to live; the leader renews it with a Lua
compare-and-expire. A new scheduler on the host of a dead leader takes over at once
(it can see the process is gone); elsewhere it waits for the lease to lapse.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any

from rdist.store.connection import RedisStore

_LUA = Path(__file__).parent / "lua"


def _script(store: RedisStore, name: str) -> Any:
    return store.redis.register_script((_LUA / f"{name}.lua").read_text())


class Lease:
    def __init__(self, store: RedisStore, ttl_ms: int = 2000) -> None:
        self.store = store
        self.ttl_ms = ttl_ms
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._take = _script(store, "take_lease")
        self._renew = _script(store, "renew_lease")
        self._release = _script(store, "release_lease")

    @property
    def key(self) -> str:
        return self.store.keys.lease

    def holder(self) -> str | None:
        raw = self.store.redis.get(self.key)
        return raw.decode() if raw is not None else None

    def try_acquire(self) -> bool:
        """Take the lease if it is free or its holder is a dead process on this host."""
        current = self.holder()
        dead = current if current and holder_is_dead_here(current) else ""
        return bool(self._take(keys=[self.key], args=[self.token, self.ttl_ms, dead]))

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.token])


def holder_is_dead_here(token: str) -> bool:
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
