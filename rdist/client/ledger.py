"""The client's ledger: one :class:`FutureState` per key it holds, and who counts on it.

It counts the Futures of each key (the last one dropped tells the scheduler the key is no
longer wanted), settles states as notifications arrive, and does all the waiting on them.
It is the :class:`~rdist.client.future.FutureHost` every Future of the client talks to.

Waiting inside a task gives the task's thread up first (``secede``): a task waiting on
the tasks it submitted must not hold the thread they need, even on a one-thread worker.
The running task is found through :mod:`rdist.task_context`, so the client never
imports the worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rdist import task_context
from rdist.client import inbox, keynames
from rdist.client.future import (
    CANCELLED,
    ERROR,
    FINISHED,
    PENDING,
    FutureState,
    Outcome,
)
from rdist.exceptions import ClosedClientError
from rdist.protocol import wire

if TYPE_CHECKING:
    from rdist.client.future import Future
    from rdist.client.sender import Sender

#: Inline values up to this many bytes are kept in outcomes shared between keys (below).
SHARED_INLINE_BYTES = 64
#: Shared outcomes remembered at most (the memo starts over past it: distinct values).
SHARED_OUTCOMES = 4096

#: ``read_while_waiting(done, budget)``: read the client's stream on this thread a while
ReadWhileWaiting = Callable[[Callable[[], bool], float], None]
#: ``unknown(keys)``: which of these keys no task has, once the scheduler has handled all
#: the client sent before (a barrier, then the ``tasks`` records)
UnknownKeys = Callable[[list[str]], list[str]]


def give_thread_up_if_in_task() -> None:
    """Inside a task that has not seceded yet, secede before blocking."""
    task = task_context.current()
    if task is not None and not task.seceded:
        task.secede()


class Ledger:
    """Futures' states and reference counts of one client; thread-safe."""

    def __init__(
        self,
        client_id: str,
        sender: Sender,
        read_while_waiting: ReadWhileWaiting,
        fetch: Callable[[list[Future]], dict[str, Any]],
        running: Callable[[], bool],
        unknown: UnknownKeys = lambda keys: [],
    ) -> None:
        self._client_id = client_id
        self._sender = sender
        self._read_while_waiting = read_while_waiting
        self._fetch = fetch
        self._running = running
        self._unknown = unknown
        self.closed = False  #: set once by close(): every wait raises ClosedClientError
        self._states: dict[str, FutureState] = {}  #: each counts its futures (``refs``)
        #: futures kept alive with a key: the large arguments scattered for its task
        self._pins: dict[str, list[Future]] = {}
        self.lock = threading.RLock()  #: guards every state; callbacks run outside it
        self._cancel_waiters: list[tuple[set[str], threading.Event]] = []
        #: finished outcomes with the same small inline value, holders and type, shared
        self._shared: dict[tuple[bytes, str, int, bool, int], wire.KeyInMemory] = {}

    # -- references ------------------------------------------------------------------------
    def register(self, key: str) -> FutureState:
        with self.lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = FutureState(key)
            state.refs += 1
            return state

    def submitted(self, keys: list[str]) -> list[FutureState]:
        """``register`` for the keys of one submission, under one lock; a cancelled key
        submitted again starts over."""
        states = self._states
        out: list[FutureState] = []
        append = out.append
        with self.lock:
            for key in keys:
                state = states.get(key)
                if state is None:
                    state = states[key] = FutureState(key)
                elif state.status == CANCELLED:
                    state.reset()
                state.refs += 1
                append(state)
        return out

    def adopt(self, key: str) -> FutureState:
        """A user's ``Future(key, client)``: the state of a key we hold, or a new one that
        the scheduler is asked for (wanted: it notifies us when the key is or gets done)."""
        self.check_open(key)
        with self.lock:
            known = key in self._states
            state = self.register(key)
            if not known:
                state.unconfirmed = True
        if not known:
            self._sender.post(wire.UpdateGraph(self._client_id, wanted=[key]))
        return state

    def check_open(self, key: str) -> None:
        if self.closed:
            raise ClosedClientError(
                f"future {key!r} belongs to client {self._client_id}, which is closed: "
                "create a new Client (and submit the work again)"
            )

    def confirm(self, states: list[FutureState]) -> None:
        """Before waiting: a user-made future of a key no task has raises, naming it."""
        doubtful = [s for s in states if s.unconfirmed and not s.done()]
        if not doubtful:
            return
        missing = set(self._unknown([s.key for s in doubtful]))
        for state in doubtful:
            if state.key not in missing:
                state.unconfirmed = False
        if missing:
            shown = ", ".join(sorted(repr(keynames.user_key(k)) for k in missing))
            raise ValueError(
                f"no task has the key(s) {shown}: they were never submitted to "
                "this cluster (or were released and forgotten). Submit or scatter them "
                "first; Future(key, client) names work already on the cluster"
            )

    def release(self, key: str) -> None:
        with self.lock:
            state = self._states.get(key)
            if state is None:
                return
            state.refs -= 1
            if state.refs > 0:
                return
            del self._states[key]
            pinned = self._pins.pop(key, None) if self._pins else None
        del pinned  # released outside the lock: each is a release of its own
        if self._running():
            self._sender.release(key)

    def pin(self, key: str, futures: list[Future]) -> None:
        """Keep ``futures`` (the scattered inputs of ``key``'s task) while ``key`` is held:
        a recomputation of the task needs them again."""
        with self.lock:
            if key in self._states:
                self._pins.setdefault(key, []).extend(futures)

    def holds(self, key: str) -> FutureState | None:
        """The state of ``key`` if the client holds a future of it."""
        with self.lock:
            return self._states.get(key)

    def keys(self) -> list[str]:
        """Every key the client holds a future of."""
        with self.lock:
            return list(self._states)

    def told_who_has(self) -> dict[str, list[str]]:
        """Holders the client was told of (completions, scatter placements), by key: they
        answer for keys the scheduler has not recorded yet."""
        with self.lock:
            return {
                k: list(where.who_has)
                for k, s in self._states.items()
                if s.status == FINISHED and (where := s.where()) is not None
            }

    # -- waiting ---------------------------------------------------------------------------
    def wait(self, state: FutureState, timeout: float | None) -> bool:
        self.check_open(state.key)
        if state.unconfirmed:
            self.confirm([state])
        if state.done():
            return True
        give_thread_up_if_in_task()
        started = time.monotonic()
        budget = inbox.READ_WHILE_WAITING
        if timeout is not None:
            budget = min(timeout, budget)
        # a quick result reaches this thread without a hand-off from the listener
        self._read_while_waiting(state.done, budget)
        if state.done():  # read here: no Event made just to find it set
            self.check_open(state.key)
            return True
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - started))
        done = state.event.wait(timeout)
        self.check_open(state.key)  # closed while we waited
        return done

    def wait_all(self, states: list[FutureState], timeout: float | None) -> bool:
        """Woken once at the end, not once per future: a thread hand-off per key would
        cost more than the rest of gathering it."""
        if states:
            self.check_open(states[0].key)
        self.confirm(states)
        pending = [s for s in states if not s.done()]
        if not pending:
            return True
        give_thread_up_if_in_task()
        remaining = [len(pending)]
        lock, all_done = threading.Lock(), threading.Event()

        def one_done() -> None:
            with lock:
                remaining[0] -= 1
                if not remaining[0]:
                    all_done.set()

        for state in pending:
            self.when_done(state, one_done)
        done = all_done.wait(timeout)
        self.check_open(states[0].key)  # closed while we waited
        return done

    def when_done(self, state: FutureState, fn: Callable[[], None]) -> None:
        with self.lock:
            if not state.done():
                state.add_callback(fn)
                return
        fn()

    # -- values ----------------------------------------------------------------------------
    def values(self, futures: list[Future]) -> dict[str, Any]:
        if futures:
            self.check_open(futures[0]._name)
        return self._fetch(futures)

    def await_recovery(self, futures: list[Future], outcomes: dict[str, Outcome]) -> None:
        """Make them pending again (unless a newer notification already arrived), so
        callers wait for the scheduler to recompute what a dead holder took along."""
        with self.lock:
            for f in futures:
                state = f._state
                if state.status == FINISHED and state.outcome is outcomes.get(f._name):
                    state.reset()

    def await_resubmission(self, keys: list[str]) -> None:
        """Redis lost data: these keys' futures are pending again until the scheduler,
        given their graphs once more, notifies where (or whether) their results are."""
        with self.lock:
            for key in keys:
                state = self._states.get(key)
                if state is not None and state.status in (FINISHED, ERROR):
                    state.reset()

    def fire_and_forget(self, keys: list[str]) -> None:
        self._sender.post(wire.UpdateGraph(self._client_id, fire_and_forget=keys))

    # -- what the scheduler and workers tell ------------------------------------------------
    def settle(self, items: Iterable[wire.Item]) -> None:
        """Apply one notification's items (barriers are not the ledger's: skipped)."""
        callbacks: list[Callable[[], None]] = []
        cancelled: set[str] = set()
        with self.lock:
            for item in items:
                kind = type(item)
                if kind is wire.BarrierReached:
                    continue
                key = item.key  # type: ignore[union-attr]
                if kind is wire.KeyCancelled:
                    cancelled.add(key)
                state = self._states.get(key)
                if state is None:
                    continue
                if kind is wire.KeyInMemory:
                    if state.status != CANCELLED:
                        kept = self._kept(state.key, item)  # type: ignore[arg-type]
                        callbacks.extend(state.settle(FINISHED, kept))
                elif kind is wire.KeyErred:
                    callbacks.extend(state.settle(ERROR, item))  # type: ignore[arg-type]
                elif kind is wire.KeyCancelled:
                    callbacks.extend(state.settle(CANCELLED, None))
                elif state.status == FINISHED:  # KeyLost: pending until recomputed
                    state.reset()
            if cancelled:
                self._confirm_cancelled(cancelled)
        for fn in callbacks:
            fn()

    def _kept(self, key: str, item: wire.KeyInMemory) -> wire.KeyInMemory:
        """What a finished key keeps of its notification (the caller holds the lock).

        A small inline value is kept in an outcome shared by every key with the same
        value, holders and type, and no key of its own (a million ``None`` results keep
        one): nothing reads an outcome's key, and such a value is never fetched from a
        holder, so no recovery compares it by identity (``await_recovery``). Any other
        outcome is kept with the future's own key string: a million results keep no
        copies of the keys the notifications brought."""
        inline = item.inline
        if inline is None or len(inline) > SHARED_INLINE_BYTES:
            return wire.KeyInMemory(key, *item[1:])
        who_has = item.who_has
        ident = (inline, item.type_name, item.nbytes, item.in_redis, id(who_has))
        shared = self._shared.get(ident)
        if shared is None or shared.who_has != who_has:  # (an id reused by another list)
            if len(self._shared) >= SHARED_OUTCOMES:
                self._shared.clear()
            shared = wire.KeyInMemory("", *item[1:])
            self._shared[ident] = shared
        return shared

    def finish(self, state: FutureState, where: wire.KeyInMemory) -> None:
        """Settle a key the client placed itself (scatter)."""
        with self.lock:
            callbacks = state.settle(FINISHED, where)
        for fn in callbacks:
            fn()

    def close(self) -> None:
        """The client closed: waiters wake (their waits raise ClosedClientError) and
        pending futures end cancelled, their done-callbacks fired once."""
        callbacks: list[Callable[[], None]] = []
        with self.lock:
            self.closed = True
            for state in self._states.values():
                if state.status == PENDING:
                    callbacks.extend(state.settle(CANCELLED, None))
        for fn in callbacks:
            fn()

    # -- cancel, retry, restart --------------------------------------------------------------
    def cancel(self, futures: list[Future], keys: list[str], force: bool, timeout: float) -> None:
        """Cancel at once here, tell the scheduler, and wait until it confirms every key."""
        event = threading.Event()
        waiter = (set(keys), event)
        callbacks: list[Callable[[], None]] = []
        with self.lock:
            self._cancel_waiters.append(waiter)
            for f in futures:
                if f._state.status == PENDING:
                    callbacks.extend(f._state.settle(CANCELLED, None))
        for fn in callbacks:
            fn()
        self._sender.post(wire.Cancel(self._client_id, keys, force))
        event.wait(timeout)
        with self.lock:
            self._cancel_waiters.remove(waiter)

    def _confirm_cancelled(self, cancelled: set[str]) -> None:
        for keys, event in self._cancel_waiters:
            keys.difference_update(cancelled)
            if not keys:
                event.set()

    def cancel_everything(self) -> None:
        """The scheduler cancelled every future of every client (a restart): make sure
        none of ours is left pending or finished."""
        callbacks: list[Callable[[], None]] = []
        with self.lock:
            for state in self._states.values():
                if state.status in (PENDING, FINISHED):
                    callbacks.extend(state.settle(CANCELLED, None))
        for fn in callbacks:
            fn()

    def retry(self, futures: list[Future]) -> None:
        """Erred futures pending again, and the scheduler asked to run them once more."""
        keys = []
        with self.lock:
            for f in futures:
                if f._state.status == ERROR:
                    keys.append(f._name)
                    f._state.reset()
        if keys:
            self._sender.post(wire.Retry(self._client_id, keys))

    def restart_cancelled(self, submitted: Iterable[Future]) -> None:
        """A cancelled key submitted again starts over."""
        with self.lock:
            for f in submitted:
                if f._state.status == CANCELLED:
                    f._state.reset()
