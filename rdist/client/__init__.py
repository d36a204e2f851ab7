"""The client side: Client, Future and the functions that wait on futures (loaded on first
use, as the package above them: see ``rdist/__init__.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rdist.lazy import exports

if TYPE_CHECKING:
    from rdist.client.client import Client
    from rdist.client.future import Future, as_completed, fire_and_forget, wait

__all__ = ["Client", "Future", "as_completed", "fire_and_forget", "wait"]

_HOMES = {
    "Client": "rdist.client.client",
    "Future": "rdist.client.future",
    "as_completed": "rdist.client.future",
    "fire_and_forget": "rdist.client.future",
    "wait": "rdist.client.future",
}


__getattr__ = exports(__name__, _HOMES)
