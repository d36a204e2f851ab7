"""A client's part in rebuilding the truth after Redis lost data.

The client keeps a :class:`Journal` of the graphs it sent: each task's row and spec, and
the functions they name. Its listener reads the cluster epoch about once a second
(``rdist.store.epoch``); when a new one appears -- Redis came back empty, or failed over
and may miss the last writes -- :meth:`Recovery.rebuild` makes every future it holds
pending again (a result kept in Redis may be gone) and re-submits the graphs behind
them, dependencies first: the scheduler takes each result a worker re-announced instead
of running its task again (``rdist.scheduler.reconcile``), recomputes the rest, and
notifies as usual. Only keys the client submitted itself can be rebuilt so; scattered
data comes back only from the workers that still hold it.

The journal forgets what no held future depends on any more, once it has grown past
twice what the held futures need (at least :data:`JOURNAL_MIN` tasks); the functions
(one per distinct function) are all kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import lz4.frame

from rdist.protocol import wire

if TYPE_CHECKING:
    from rdist.client.ledger import Ledger
    from rdist.client.sender import Sender
    from rdist.store import RedisStore
    from rdist.store.epoch import EpochWatch

log = logging.getLogger("rdist.client")

#: The journal is pruned only past this many tasks (and twice what the held keys need).
JOURNAL_MIN = 20_000
#: How often the listener reads the epoch.
EPOCH_SECONDS = 1.0
#: Tasks per re-submitted graph update (the messages stay well under the entry bound).
RESUBMIT_ROWS = 2000
#: The newest rows are kept as they are until this many have come, then encoded in one
#: part: a loop of single submissions encodes once per this many, not once per task.
PART_ROWS = 1000

#: A part of the journal: the keys of its rows (the strings the futures hold), and the
#: rows and specs, each named by its key's position in that list, encoded and lz4'd.
Part = tuple[list[str], bytes]


class Journal:
    """The rows, specs and functions of what this client submitted; thread-safe.

    Kept encoded and compressed (``wire.UpdateGraph`` parts of rows and specs of at least
    :data:`PART_ROWS` tasks, lz4; the newest as they are until a part is full), each row
    named in its part by its position in the part's list of keys -- the very key strings
    the futures hold, not copies: about 20 bytes a task of a ``map`` instead of some 330
    as Python objects (75 with the keys encoded too), for a journal that is read only
    when Redis lost data, or when it has grown enough to be pruned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: the recorded messages in the order sent (dependencies first), encoded, lz4
        self._parts: list[Part] = []
        self._fresh: list[wire.TaskRow] = []  #: recorded since the last part, in order
        self._fresh_specs: dict[str, bytes] = {}
        self._count = 0  #: rows in ``_parts`` (a key submitted twice counts twice)
        self._funcs: dict[bytes, bytes] = {}
        self._limit = JOURNAL_MIN

    def __len__(self) -> int:
        return self._count

    def record(
        self,
        msg: wire.UpdateGraph,
        funcs: Mapping[bytes, bytes] | None,
        held: Callable[[], Iterable[str]],
    ) -> None:
        if not msg.tasks:
            return
        with self._lock:
            self._fresh.extend(msg.tasks)
            self._fresh_specs.update(msg.specs)
            if len(self._fresh) >= PART_ROWS:
                self._parts.append(_packed(self._fresh, self._fresh_specs))
                self._fresh, self._fresh_specs = [], {}
            self._count += len(msg.tasks)
            self._funcs.update(msg.funcs)
            if funcs:
                self._funcs.update(funcs)
            if self._count > self._limit:
                self._prune(held)

    def _prune(self, held: Callable[[], Iterable[str]]) -> None:
        keys = set(held())
        if 2 * len(keys) >= self._count:
            # most of it is still held: pruning would free little (and decode it all)
            self._limit = max(JOURNAL_MIN, 2 * self._count)
            return
        rows, specs = self._decoded()
        needed = _closure(rows, keys)
        kept = [row for key, row in rows.items() if key in needed]
        self._parts, self._fresh, self._fresh_specs = [], [], {}
        for start in range(0, len(kept), RESUBMIT_ROWS):
            part = kept[start : start + RESUBMIT_ROWS]
            self._parts.append(_packed(part, {r.key: specs[r.key] for r in part if r.key in specs}))
        self._count = len(kept)
        self._limit = max(JOURNAL_MIN, 2 * self._count)

    def _decoded(self) -> tuple[dict[str, wire.TaskRow], dict[str, bytes]]:
        """Every row by key (in the order first sent, as last sent) and every spec."""
        rows: dict[str, wire.TaskRow] = {}
        specs: dict[str, bytes] = {}
        for part in self._parts:
            part_rows, part_specs = _unpacked(part)
            for row in part_rows:
                rows[row.key] = row
            specs.update(part_specs)
        for row in self._fresh:
            rows[row.key] = row
        specs.update(self._fresh_specs)
        return rows, specs

    def graph_for(
        self, keys: Iterable[str]
    ) -> tuple[list[wire.TaskRow], dict[str, bytes], dict[bytes, bytes]]:
        """The rows (dependencies first), specs and functions behind ``keys``."""
        with self._lock:
            all_rows, all_specs = self._decoded()
            funcs = dict(self._funcs)  # one per distinct function: few, sent once
        needed = _closure(all_rows, keys)
        rows = [row for key, row in all_rows.items() if key in needed]
        specs = {row.key: all_specs[row.key] for row in rows if row.key in all_specs}
        return rows, specs, funcs


def _packed(rows: list[wire.TaskRow], specs: dict[str, bytes]) -> Part:
    """The part of these rows: their keys, and rows and specs named by position."""
    keys = [row.key for row in rows]
    names = _position_names(len(rows))
    make, row_type = tuple.__new__, wire.TaskRow  # (rows by the thousand: no __new__ call)
    named = [make(row_type, (name,) + row[1:]) for name, row in zip(names, rows)]
    by_position = {name: specs[key] for name, key in zip(names, keys) if key in specs}
    encoded = wire.UpdateGraph("journal", tasks=named, specs=by_position).encode()
    return keys, lz4.frame.compress(encoded)


def _unpacked(part: Part) -> tuple[list[wire.TaskRow], dict[str, bytes]]:
    """The rows and specs of a part, under their keys again."""
    keys, blob = part
    msg = wire.UpdateGraph.decode(lz4.frame.decompress(blob), "journal")
    rows = [row._replace(key=keys[int(row.key)]) for row in msg.tasks]
    return rows, {keys[int(name)]: spec for name, spec in msg.specs.items()}


_NAMES: list[str] = []
_NAMES_LOCK = threading.Lock()  #: (the journals of several clients share the names)


def _position_names(n: int) -> list[str]:
    """``["0", "1", ...]`` of ``n`` positions (made once, shared by every part)."""
    if len(_NAMES) < n:
        with _NAMES_LOCK:
            _NAMES.extend(str(i) for i in range(len(_NAMES), n))
    return _NAMES[:n]


def _closure(rows: Mapping[str, wire.TaskRow], keys: Iterable[str]) -> set[str]:
    """``keys`` (those with a row) and everything they depend on, transitively."""
    needed: set[str] = set()
    todo = [k for k in keys if k in rows]
    while todo:
        key = todo.pop()
        if key in needed:
            continue
        needed.add(key)
        todo.extend(d for d in rows[key].deps if d in rows and d not in needed)
    return needed


class Recovery:
    """Watches the epoch and re-submits what the client holds when it changes."""

    def __init__(
        self,
        store: RedisStore,
        client_id: str,
        sender: Sender,
        ledger: Ledger,
        journal: Journal,
        watch: EpochWatch,
    ) -> None:
        self._store = store
        self._client_id = client_id
        self._sender = sender
        self._ledger = ledger
        self._journal = journal
        self._watch = watch
        self._next_check = 0.0
        self.rebuilds = 0  #: how often Redis lost data under this client

    def start(self) -> None:
        """The epoch as of joining (no news)."""
        self._watch.start(self._store.epoch.current())

    def check(self) -> None:
        """Read the epoch (at most once every EPOCH_SECONDS); rebuild on a new one."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + EPOCH_SECONDS
        if self._watch.changed(self._store.epoch.current()):
            self.rebuild()

    def rebuild(self) -> None:
        # our stream went with the data: the scheduler writes to existing streams only
        self._store.streams.to_client(self._client_id, wire.Notify([]), create=True)
        held = self._ledger.keys()
        rows, specs, funcs = self._journal.graph_for(held)
        known = {row.key for row in rows}
        self._ledger.await_resubmission([k for k in held if k in known])
        for start in range(0, len(rows), RESUBMIT_ROWS):
            part = rows[start : start + RESUBMIT_ROWS]
            keys = {row.key for row in part}
            self._sender.post(
                wire.UpdateGraph(
                    self._client_id,
                    tasks=part,
                    wanted=[k for k in held if k in keys],
                    specs={k: specs[k] for k in keys if k in specs},
                    funcs=funcs,  # few, and each part's tasks find theirs
                ),
                funcs,
            )
        self._sender.flush()
        self.rebuilds += 1
        log.warning(
            "client %s: redis lost data (new cluster epoch): re-submitted %d tasks for %d "
            "held futures",
            self._client_id,
            len(rows),
            len(known),
        )
