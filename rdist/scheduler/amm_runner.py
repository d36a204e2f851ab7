"""The Active Memory Manager in the scheduler's shell: when it runs, and what its runs send.

The decisions are :mod:`rdist.scheduler.amm`'s (pure). This room keeps what lives between
runs -- whether the manager is started (``amm.start``, ``client.amm.start()/stop()``), when
it last ran (``amm.interval``), the copies asked of workers that have not arrived yet --
and turns a run's suggestions into what the server sends:

- drops become one :class:`~rdist.scheduler.events.DropReplicas` event for the state
  machine (:func:`rdist.scheduler.dataops.on_drop_replicas`: the records forget the copies
  at once and the workers are told to free them, never the last copy);
- copies become one ``gather-keys`` message per target worker, answered to nobody: the
  worker reports the new copies itself (``replicated``), and until it does, or
  :data:`INCOMING_SECONDS` pass, later runs count them as on their way;
- requests (``client.amm.*``, ``retire_workers``) are answered with the same writes.

A run started on its own (the interval) runs the configured policies plus a RetireWorker
for every closing worker; a ``run_once`` request runs the configured policies whether
the manager is started or not (as dask's); a ``retire`` request runs only the
RetireWorker policies of the workers it names.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rdist.protocol import wire
from rdist.scheduler import amm
from rdist.scheduler import events as ev
from rdist.scheduler.interface import Scheduling

log = logging.getLogger("rdist.scheduler")

#: How long a copy asked of a worker counts as on its way (a worker that died with the
#: request, or a holder that could not give it, must not block new copies for ever).
INCOMING_SECONDS = 30.0
#: The pseudo-client named on the manager's drops (the event log says who dropped).
AMM_CLIENT = "active-memory-manager"


@dataclass(slots=True)
class AmmRequested(ev.Event):
    """A client's :class:`~rdist.protocol.wire.AmmRequest`: the shell's business (the
    state machine never sees it)."""

    client: str
    id: str
    action: str
    workers: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RunOutcome:
    """What one run asks the server to do."""

    #: events for the state machine (the drops), to decide in this batch
    events: list[ev.Event] = field(default_factory=list)
    #: target worker -> the ``gather-keys`` message asking it to copy keys there
    copies: dict[str, wire.GatherKeys] = field(default_factory=dict)
    #: client -> answers to its requests
    replies: list[tuple[str, wire.AmmReply]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.copies or self.replies)


class AmmRunner:
    """The manager's switch, clock and memory of copies on their way (module doc)."""

    def __init__(self, start: bool, interval: float, measure: str, policies: Iterable[str]) -> None:
        self.started = bool(start)
        self.interval = max(0.01, float(interval))
        self.measure = measure if measure in amm.MEASURES else "optimistic"
        self.policy_names = list(policies)
        for name in self.policy_names:
            amm.policy_named(name)  # a typo fails the scheduler's start, loudly
        self.last_run = 0.0
        #: (key, target) -> time the copy was asked
        self.incoming: dict[tuple[str, str], float] = {}
        self.requests: list[AmmRequested] = []
        self.runs = 0

    @classmethod
    def from_config(cls, config: Any) -> AmmRunner:
        return cls(
            config.get("amm.start"),
            config.get("amm.interval"),
            config.get("amm.measure"),
            config.get("amm.policies") or [],
        )

    def due(self, now: float) -> bool:
        """Whether a run on its own is due (started, and the interval passed)."""
        return self.started and now >= self.last_run + self.interval

    def request(self, e: AmmRequested) -> None:
        """Queue a client's request: answered by :meth:`run` (later in the same batch)."""
        self.requests.append(e)

    def run(
        self,
        s: Scheduling,
        beats: Mapping[str, amm.WorkerMemory],
        now: float,
        timed: bool = False,
    ) -> RunOutcome:
        """Answer the queued requests and, when ``timed``, make the run on its own."""
        requests, self.requests = self.requests, []
        out = RunOutcome()
        self._forget_arrived(s, now)
        for e in requests:
            self._answer(s, beats, now, e, out)
        if timed:
            self.last_run = now
            policies: list[amm.Policy] = self._configured()
            closing = [a for a, ws in s.workers.items() if ws.status == amm.CLOSING]
            policies += [amm.RetireWorker(a) for a in closing]
            self._apply(self._suggest(s, beats, policies), now, out)
        return out

    def _answer(
        self,
        s: Scheduling,
        beats: Mapping[str, amm.WorkerMemory],
        now: float,
        e: AmmRequested,
        out: RunOutcome,
    ) -> None:
        done, no_recipients = True, False
        if e.action == "start":
            self.started = True
            self.last_run = now  # dask's first run comes one interval after start()
        elif e.action == "stop":
            self.started = False
        elif e.action == "run_once":
            self._apply(self._suggest(s, beats, self._configured()), now, out)
        elif e.action == "retire":
            retiring = [amm.RetireWorker(a) for a in e.workers if a in s.workers]
            view = self._view(s, beats)
            self._apply(amm.suggest(view, retiring), now, out)
            no_recipients = any(p.no_recipients for p in retiring)
            done = all(p.done(view) for p in retiring)  # (copies asked now arrive later)
        out.replies.append((e.client, wire.AmmReply(e.id, self.started, done, no_recipients)))

    def _configured(self) -> list[amm.Policy]:
        return [amm.policy_named(name) for name in self.policy_names]

    def _view(self, s: Scheduling, beats: Mapping[str, amm.WorkerMemory]) -> amm.MemoryView:
        incoming: dict[str, set[str]] = {}
        for key, target in self.incoming:
            incoming.setdefault(key, set()).add(target)
        memory = amm.measure_memory(self.measure, s.workers, s.tasks, beats)
        return amm.MemoryView(s.tasks, s.workers, memory, incoming)

    def _suggest(
        self, s: Scheduling, beats: Mapping[str, amm.WorkerMemory], policies: list[amm.Policy]
    ) -> amm.Suggestions:
        self.runs += 1
        return amm.suggest(self._view(s, beats), policies)

    def _apply(self, suggestions: amm.Suggestions, now: float, out: RunOutcome) -> None:
        if suggestions.drop:
            stimulus = f"amm-{now}"
            out.events.append(ev.DropReplicas(stimulus, now, AMM_CLIENT, suggestions.drop))
        for target, keys in suggestions.replicate.items():
            message = out.copies.get(target)
            if message is None:
                message = wire.GatherKeys(uuid.uuid4().hex, {}, wire.ReplyTo("n", ""))
                out.copies[target] = message
            message.keys.update(keys)
            for key in keys:
                self.incoming[(key, target)] = now
        if suggestions:
            log.debug(
                "active memory manager: dropping %d copies, making %d",
                sum(len(v) for v in suggestions.drop.values()),
                sum(len(v) for v in suggestions.replicate.values()),
            )

    def _forget_arrived(self, s: Scheduling, now: float) -> None:
        """Copies that arrived, whose key is gone, or that took too long: not on their way."""
        tasks = s.tasks
        for pair, asked in list(self.incoming.items()):
            key, target = pair
            ts = tasks.get(key)
            if ts is None or target in ts.who_has or now - asked > INCOMING_SECONDS:
                del self.incoming[pair]


def worker_memory(records: Mapping[str, wire.WorkerRecord]) -> dict[str, amm.WorkerMemory]:
    """The memory figures of the workers' last heartbeats (their records)."""
    return {
        a: amm.WorkerMemory(r.memory, r.stored_bytes, r.spilled_bytes) for a, r in records.items()
    }
