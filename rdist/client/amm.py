"""``client.amm``: the scheduler's Active Memory Manager, switched from a client.

dask's ``AMMClientProxy``: :meth:`start` and :meth:`stop` switch the manager's runs on its
own (every ``amm.interval``), :meth:`running` says whether it runs, :meth:`run_once`
runs its policies once, now, whether it runs on its own or not. Each is one request on
the scheduler's stream, answered on this client's (``wire.AmmRequest`` / ``AmmReply``);
the answer to ``run_once`` goes out with the run's writes, so ``who_has`` shows its drops
when it returns (the copies a run asks for arrive later, as dask's do).

With ``Client(asynchronous=True)`` every method returns an awaitable, as in dask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rdist.client import asynchronous as async_client
from rdist.protocol import wire

if TYPE_CHECKING:
    from rdist.client.client import Client


class AMMClientProxy:
    """Convenience accessors for the scheduler's Active Memory Manager (dask's names)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def start(self) -> Any:
        """Start the manager's runs on its own (every ``amm.interval``); returns None."""
        return self._call("start", lambda reply: None)

    def stop(self) -> Any:
        """Stop the manager's runs on its own; returns None."""
        return self._call("stop", lambda reply: None)

    def running(self) -> Any:
        """Whether the manager runs on its own."""
        return self._call("running", lambda reply: reply.running)

    def run_once(self) -> Any:
        """Run the configured policies once, now (started or not); returns None."""
        return self._call("run_once", lambda reply: None)

    def _call(self, action: str, result: Any) -> Any:
        if self._client.asynchronous:
            return async_client.in_thread(lambda: result(request(self._client, action)))
        return result(request(self._client, action))


def request(
    client: Client, action: str, workers: list[str] | None = None, timeout: float | None = None
) -> wire.AmmReply:
    """Ask the scheduler's manager ``action``; its answer (TimeoutError when none comes)."""
    client._check_open(f"ask the active memory manager to {action}")
    request_id = client._answers.expect()
    client._sender.post(wire.AmmRequest(client.id, request_id, action, workers or []))
    answer: wire.AmmReply = client._answers.one(request_id, timeout or client.timeout)
    return answer
