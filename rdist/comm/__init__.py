"""The data plane: authenticated transports (``tcp://``, ``inproc://``), the transfer
protocol on top of them, and the Redis relay for peers that cannot reach each other."""

from rdist.comm.core import AuthenticationError, Comm, Listener, connect, listen
from rdist.comm.pool import ConnectionPool

__all__ = ["AuthenticationError", "Comm", "ConnectionPool", "Listener", "connect", "listen"]
