"""The only package that imports ``redis``: connections, keys and stream helpers."""

from rdist.store.connection import RedisStore, connect
from rdist.store.keys import Keys

__all__ = ["Keys", "RedisStore", "connect"]
