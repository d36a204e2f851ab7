"""Coordination primitives kept in Redis: they outlive any scheduler (see
:mod:`rdist.store.primitives` for their Redis side)."""

from rdist.primitives.locks import Lock, MultiLock, Semaphore
from rdist.primitives.values import Event, Queue, Variable

__all__ = ["Event", "Lock", "MultiLock", "Queue", "Semaphore", "Variable"]
