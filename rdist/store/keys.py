"""Every Redis key rdist uses, built in one place.

All keys of one cluster share the prefix ``rdist:{<cluster>}:`` -- the braces are a Redis
Cluster hash tag, so every key of one rdist cluster lives in one slot (on Redis Cluster the
store talks to the primary serving it: see ``rdist.store.topology``), and multi-key
pipelines, scripts and transactions stay on that slot; several rdist clusters sharing a
Redis Cluster spread over its slots. No key may be built outside this module.

Streams (payload: one msgpack field ``m`` per entry, see ``rdist.protocol.wire``)
    sched               inbound to the scheduler; consumer group ``scheduler``
    worker:<address>    inbound to one worker; consumer group ``worker``
    client:<id>         inbound to one client (read with plain XREAD by its one reader)
    heartbeats          worker metrics, capped with MAXLEN ~
    events              cluster event log (worker joins/leaves, ...), capped
    taskstream          task executions, one entry per worker report batch, capped in runs
                        (about ``TASKSTREAM_RUNS``, dask's 100,000; ``lua/taskstream_trim.lua``
                        trims the oldest entries), field ``n`` the entry's number of runs:
                        msgpack ``{"w": worker, "r": [[key, worker, thread, start, stop,
                        status, error, traceback], ...]}`` -- times in epoch seconds, status
                        ``memory`` or ``erred``, error a plain-text ``TypeName: message`` so
                        the dashboard never unpickles (see ``rdist.protocol.taskstream``)
                        ``"x"``: the report's fetches from peers, ``[[key, worker, source,
                        start, stop, nbytes], ...]``; runs also carry ``nbytes, type``
    taskstream:runs     string: how many runs (``n``) the task stream holds now
    profile             the sampling profiler's batches, one entry per worker and ~second
                        while tasks run (capped MAXLEN ~, ``rdist.store.diagnostics``):
                        msgpack ``{"w": worker, "s": start, "e": stop, "n": samples,
                        "g": {group: node}}``, node = ``[name, filename, firstlineno,
                        count, [child nodes]]``, a group's root ``["", "", 0, count, ...]``
                        (``wire.ProfileBatch``; merged by ``rdist.protocol.profile``)
    deadletter          malformed entries set aside by any reader
    topic:<name>        events users log on a topic (``client.log_event``), capped:
                        msgpack ``[time, msg]`` (``wire.TopicEvent``)

Hashes
    workers   address -> msgpack worker info (name, host, nthreads, memory_limit, status, metrics)
    tasks     key -> msgpack task record (state, deps, who_has, nbytes, priority, ...)
    specs     key -> task spec: function hash + pickled arguments (opaque to the scheduler)
    funcs     function hash -> cloudpickled function (each distinct function stored once)
    results   key -> serialized small result, or serialized (exception, traceback) for errors
    clients   client id -> msgpack {last_seen, name}
    meta      secret (peer authentication), version, scheduler lease holder, the
              scheduler's package versions (json)
    topics    set of the topic names events were logged on
    span:<id> hash: the totals of one ``rdist.span`` -- name (json list of its tags, the
              enclosing spans' first), count, erred, duration (s), nbytes, start, stop
              (epoch s of its first and last report) -- added to by the workers that run
              its tasks, in their report pipelines; expires a week after the last update
    spans     sorted set: span id -> time of its last update (the newest 10,000 kept)
    metadata  top-level key -> msgpack value (``client.set_metadata``)
    transfer:<request>:<key>
              data moving through Redis (transfer mode ``redis``, or ``auto`` when a peer
              is unreachable): field ``m`` = msgpack {head, n}, fields ``<frame>.<chunk>``
              = raw chunks; expires after ``RDIST_TRANSFER_TTL`` s, deleted once read
              (``rdist.comm.relay``)

Coordination primitives (``rdist.store.primitives``; scripts in ``lua/``)
    sem:<name>:leases|tokens|limit|released
              a Semaphore (a Lock is one of one lease): sorted set lease id -> expiry ms,
              hash lease id -> fencing token, max leases, a release stream
    multilocks:holders|leases|tokens|released
              every MultiLock: hash lock name -> lease id, then as a semaphore's
    fencing   the last fencing token handed out, for every semaphore and multi-lock (it
              never expires: a token never goes back)
    queue:<name>, queue:<name>:space
              a Queue's items (list of encoded values) and its "item taken" stream
    queues    hash: queue name -> max size (0 unbounded), set by the first creator
    var:<name>, event:<name> (and :changes)
              a Variable's encoded value, an Event's flag; a stream of changes each
    datasets  hash: name -> encoded published value (futures keep their keys alive)
    Waiters block on the small streams (XREAD BLOCK) after the id a failed step returned.
    Futures held by a queue item, a variable's value or a dataset are wanted at the
    scheduler by a *holder* id ``holder:<kind>:<name>:<n>`` (``rdist.client.holders``).

Plugins (``rdist.plugins``)
    plugins:worker, plugins:nanny
              hash: plugin name -> cloudpickled plugin, registered by clients; every worker
              (nanny) sets them up when it starts, and hears of new ones on its stream
    plugins:scheduler
              hash: name -> pickled plugin a client registered with a scheduler started
              with ``--accept-client-plugins``; a standby taking over loads them too
    nannies   hash: nanny id -> msgpack {worker, host, pid, last_seen}
    nanny:<id>
              inbound to one nanny (plugins added and removed), read with plain XREAD

Log buffers (``rdist.logbuffer``; façade ``store.logs``)
    logs:<role>:<id>
              list of the last lines a process logged (msgpack ``wire.LogLine``), oldest
              first: role ``scheduler`` (id: its lease token), ``worker`` or ``nanny``
              (id: the worker's address); appended in batches, trimmed to the buffer's
              length (``logging.length``) and expiring an hour after the last write
    logs:scheduler
              string: the token of the scheduler whose log is the cluster's current one

Strings
    exchange:<id>
              the current run number of the P2P exchange (shuffle) ``<id>`` when it has been
              restarted (missing: run 0, owners as submitted); expires after a day
    exchange:<id>:<run>
              msgpack list of the owners (worker addresses) of that run's output
              partitions; made once (SET NX) by the worker that restarts the exchange
              (``rdist.store.exchanges``, ``rdist.shuffle.restart``); expires after a day
    epoch     random token of the cluster's epoch: missing or changed means Redis lost
              data, and workers and clients rebuild it (``rdist.store.epoch``)
    lease     token ``host:pid:nonce`` of the active scheduler, with a time to live
              (``rdist.store.lease``; renewed by a Lua compare-and-expire)
    stacks:<request>
              a worker's answer to the dashboard's ``call-stacks`` request: msgpack
              ``wire.CallStacks``; expires after a minute (``rdist.worker.stacks``)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

SCHEDULER_GROUP = "scheduler"
WORKER_GROUP = "worker"
PAYLOAD_FIELD = b"m"


@dataclass(frozen=True)
class Keys:
    """The key names of one cluster; ``Keys("default").sched == "rdist:{default}:sched"``."""

    cluster: str = "default"

    @cached_property
    def prefix(self) -> str:
        return f"rdist:{{{self.cluster}}}:"

    def _k(self, name: str) -> str:
        return self.prefix + name

    @cached_property
    def sched(self) -> str:
        return self._k("sched")

    def worker_stream(self, address: str) -> str:
        return _named(self, "worker:", address)

    def client_stream(self, client_id: str) -> str:
        return _named(self, "client:", client_id)

    @cached_property
    def heartbeats(self) -> str:
        return self._k("heartbeats")

    @cached_property
    def events(self) -> str:
        return self._k("events")

    @cached_property
    def taskstream(self) -> str:
        return self._k("taskstream")

    @cached_property
    def taskstream_runs(self) -> str:
        return self._k("taskstream:runs")

    @cached_property
    def profile(self) -> str:
        return self._k("profile")

    @cached_property
    def spans(self) -> str:
        return self._k("spans")

    def span(self, ident: str) -> str:
        return self._k(f"span:{ident}")

    @cached_property
    def deadletter(self) -> str:
        return self._k("deadletter")

    @cached_property
    def workers(self) -> str:
        return self._k("workers")

    @cached_property
    def tasks(self) -> str:
        return self._k("tasks")

    @cached_property
    def specs(self) -> str:
        return self._k("specs")

    @cached_property
    def funcs(self) -> str:
        return self._k("funcs")

    @cached_property
    def results(self) -> str:
        return self._k("results")

    @cached_property
    def clients(self) -> str:
        return self._k("clients")

    @cached_property
    def meta(self) -> str:
        return self._k("meta")

    @cached_property
    def lease(self) -> str:
        return self._k("lease")

    def stacks(self, request_id: str) -> str:
        return self._k(f"stacks:{request_id}")

    @cached_property
    def epoch(self) -> str:
        return self._k("epoch")

    def transfer(self, request_id: str, key: str = "") -> str:
        return self._k(f"transfer:{request_id}:{key}")

    # -- coordination primitives -------------------------------------------------------------
    def semaphore(self, name: str) -> str:
        return self._k(f"sem:{name}")

    @cached_property
    def multilocks(self) -> str:
        return self._k("multilocks")

    @property
    def metadata(self) -> str:
        return self._k("metadata")

    def topic(self, name: str) -> str:
        return self._k(f"topic:{name}")

    @property
    def topics(self) -> str:
        return self._k("topics")

    def queue(self, name: str) -> str:
        return self._k(f"queue:{name}")

    @cached_property
    def queues(self) -> str:
        return self._k("queues")

    def variable(self, name: str) -> str:
        return self._k(f"var:{name}")

    def event(self, name: str) -> str:
        return self._k(f"event:{name}")

    @cached_property
    def datasets(self) -> str:
        return self._k("datasets")

    @cached_property
    def fencing(self) -> str:
        return self._k("fencing")

    # -- log buffers -------------------------------------------------------------------------
    def worker_log(self, address: str) -> str:
        return self._k(f"logs:worker:{address}")

    def nanny_log(self, worker_address: str) -> str:
        return self._k(f"logs:nanny:{worker_address}")

    def scheduler_log(self, token: str) -> str:
        return self._k(f"logs:scheduler:{token}")

    @cached_property
    def current_scheduler_log(self) -> str:
        return self._k("logs:scheduler")

    # -- exchanges (rdist.shuffle) -----------------------------------------------------------
    def exchange(self, exchange_id: str, run: int | None = None) -> str:
        """``exchange:<id>`` (its current run), or ``exchange:<id>:<run>`` (that run's owners)."""
        name = f"exchange:{exchange_id}"
        return self._k(name if run is None else f"{name}:{run}")

    # -- plugins -------------------------------------------------------------------------------
    def plugins(self, kind: str) -> str:
        """``plugins:worker``, ``plugins:nanny`` or ``plugins:scheduler``."""
        return self._k(f"plugins:{kind}")

    @cached_property
    def nannies(self) -> str:
        return self._k("nannies")

    def nanny_stream(self, nanny_id: str) -> str:
        return _named(self, "nanny:", nanny_id)


@lru_cache(maxsize=4096)
def _named(keys: Keys, kind: str, name: str) -> str:
    """Per-worker and per-client key names, made once: every batch names them again."""
    return keys.prefix + kind + name
