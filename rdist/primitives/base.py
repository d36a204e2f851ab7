"""What every coordination primitive shares: a name, and the store of the client it uses.

A primitive made without a client uses the default one -- inside a task, the client of the
worker running it (``get_client()``), so a Lock or Queue passed into a task (it pickles by
name) reaches the same Redis structure from there.
"""

from __future__ import annotations

from typing import Any

from rdist import task_context
from rdist.client.default import default_client
from rdist.client.holders import Holdings
from rdist.store.primitives import Primitives


def resolve_client(client: Any = None) -> Any:
    """``client``, else the running task's client, else the default client."""
    if client is not None:
        return client
    task = task_context.current()
    if task is not None:
        return task.client()
    return default_client()


class Primitive:
    """A named structure in the cluster's Redis, reached through a client's store."""

    def __init__(self, name: str, client: Any = None) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"the name of a {type(self).__name__} must be a non-empty string, not {name!r}"
            )
        self.name = name
        self.client = resolve_client(client)
        self._primitives: Primitives = self.client.store.primitives
        self._holdings: Holdings = self.client.holdings
