"""``gather`` while a new cluster epoch makes futures pending again (fakeredis tier).

When Redis may have lost data the client's listener resets every future it holds and
re-submits their graphs (``rdist.client.recovery``) -- on its own thread, at any moment of
a ``gather`` on another. A future reset after ``gather`` saw it finished must be waited
for again, never left out: leaving it out of a list shifts every later value one place
(future ``i`` returned the value of future ``i + k``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rdist import wait
from rdist.client.future import FutureState
from rdist.protocol import wire
from tests.conftest import fake_cluster


def inc(x: int) -> int:
    return x + 1


def test_futures_reset_right_after_gathers_wait_are_waited_for_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fake_cluster(n_workers=2) as (client, _):
        futures = client.map(inc, range(100), pure=False)
        wait(futures)
        real_wait = client.ledger.wait_all
        rebuilt: list[bool] = []

        def wait_then_new_epoch(states: Any, timeout: float | None) -> bool:
            done = real_wait(states, timeout)
            if not rebuilt:  # the listener's rebuild, at the worst moment
                rebuilt.append(True)
                client.recovery.rebuild()
            return done

        monkeypatch.setattr(client.ledger, "wait_all", wait_then_new_epoch)

        assert client.gather(futures) == [x + 1 for x in range(100)]
        assert rebuilt


def test_futures_reset_while_gather_reads_their_values_are_waited_for_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fake_cluster(n_workers=2) as (client, _):
        futures = client.map(inc, range(100), pure=False)
        wait(futures)
        real_where = FutureState.where
        rebuilt: list[threading.Timer] = []

        def reset_on_first_look(state: FutureState) -> wire.KeyInMemory | None:
            if not rebuilt:  # the listener resets them all as gather reads the first
                rebuilt.append(threading.Timer(0.3, client.recovery.rebuild))
                client.ledger.await_resubmission([f.key for f in futures])
                rebuilt[0].start()  # and re-submits their graphs a little later
            return real_where(state)

        monkeypatch.setattr(FutureState, "where", reset_on_first_look)

        assert client.gather(futures) == [x + 1 for x in range(100)]
        rebuilt[0].join()
        assert client.gather(futures[::7]) == [x + 1 for x in range(0, 100, 7)]
