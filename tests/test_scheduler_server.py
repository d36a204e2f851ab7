"""The scheduler's shell over fakeredis: bad entries are set aside and the loop goes on, a
restore skips what it cannot read, and a story request is answered on the client's stream.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler import state as state_module
from rdist.scheduler.server import SchedulerServer
from rdist.store import connect
from rdist.store.connection import drop_fake_server
from rdist.store.keys import PAYLOAD_FIELD
from tests.client_helpers import wait_until
from tests.conftest import fake_cluster
from tests.test_worker_server import open_client_stream


def inc(x: int) -> int:
    return x + 1


def dead_letters(store: Any) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in store.redis.xrange(store.keys.deadletter)]


def test_malformed_and_failing_entries_are_dead_lettered_and_the_loop_goes_on(monkeypatch):
    def broken_handler(state: Any, event: Any) -> None:
        raise RuntimeError("a bug in a handler")

    monkeypatch.setitem(state_module._HANDLERS, ev.Barrier, broken_handler)
    with fake_cluster(n_workers=1) as (c, cluster):
        streams = c.store.streams
        streams.to_scheduler(b"\xc1 not msgpack")
        streams.to_scheduler(wire.pack({"op": "release-keys", "client": "c", "keys": [7]}))
        streams.to_scheduler(wire.Barrier("nobody", "b-1"))

        assert c.submit(inc, 1).result(timeout=10) == 2  # the loop is alive
        wait_until(lambda: len(dead_letters(c.store)) == 3, what="three dead letters")

        reasons = [fields[b"reason"].decode() for fields in dead_letters(c.store)]
        assert "not msgpack" in reasons[0]
        assert "release-keys" in reasons[1] and "keys[0]" in reasons[1]
        assert "handler raised RuntimeError" in reasons[2] and "a bug in a handler" in reasons[2]
        assert all(f[b"stream"] == c.store.keys.sched.encode() for f in dead_letters(c.store))
        assert cluster.scheduler.is_leader.is_set()


def test_restore_errs_a_corrupt_task_record_naming_it_and_keeps_the_rest(caplog):
    url = f"fakeredis://{uuid.uuid4().hex}"
    store = connect(url, "restore")
    try:
        good = wire.TaskRecord("memory", (0, 1, 0), in_redis=True, who_wants=["c1"])
        child = wire.TaskRecord("waiting", (0, 1, 1), deps=["bad"], who_wants=["c1"])
        records = {"good": good.encode(), "child": child.encode(), "bad": b"\xc1", "lone": b"{"}
        store.tasks.put_many(records)
        store.clients.beat("c2", wire.ClientRecord("c2", 1.0))
        for client in ("c1", "c2"):
            open_client_stream(store, client)
        server = SchedulerServer(connect(url, "restore"))

        with caplog.at_level(logging.ERROR, logger="rdist.scheduler"):
            server._restore()

        state = server.state
        assert state.tasks["good"].state.value == "memory"
        # the dependent of the unreadable record errs naming it, rather than wait forever
        assert state.tasks["child"].state.value == "erred"
        assert "'bad'" in (state.tasks["child"].error_text or "")
        assert any("'bad'" in r.getMessage() for r in caplog.records)
        record = store.tasks.get("child")
        assert record is not None and record.state == "erred"
        # the corrupt records are gone: one kept (released) as the erred child's lineage,
        # the other forgotten
        assert store.tasks.get("bad") is not None and "lone" not in state.tasks
        assert store.redis.hget(store.keys.tasks, "lone") is None
        # every client heard that the keys erred, naming them (who held them is unknown)
        for client in ("c1", "c2"):
            told = [
                item
                for _, fields in store.redis.xrange(store.keys.client_stream(client))
                for item in wire.CLIENT.decode_one(fields[PAYLOAD_FIELD]).items
            ]
            erred = {i.key: i.error_text for i in told if isinstance(i, wire.KeyErred)}
            assert {"bad", "lone"} <= set(erred) and "'lone'" in (erred["lone"] or "")
        state.validate_state()
    finally:
        store.close()
        drop_fake_server(url[len("fakeredis://") :])


def test_a_story_request_is_answered_with_the_schedulers_transitions():
    with fake_cluster(n_workers=1) as (c, _):
        future = c.submit(inc, 41)
        assert future.result(timeout=10) == 42

        open_client_stream(c.store, "story-reader")  # as a client does when it joins
        c.store.streams.to_scheduler(wire.StoryRequest("story-reader", "q-1", [future.key]))

        stream = c.store.keys.client_stream("story-reader")
        wait_until(lambda: c.store.streams.length(stream) == 1, what="the story reply")
        [(_, fields)] = c.store.streams.newest(stream)
        reply = wire.CLIENT.decode_one(fields[PAYLOAD_FIELD])
        assert isinstance(reply, wire.StoryReply)
        assert (reply.id, reply.source) == ("q-1", "scheduler")
        pairs = [(r.start, r.finish) for r in reply.records]
        assert pairs[:3] == [
            ("released", "waiting"),
            ("waiting", "processing"),
            ("processing", "memory"),
        ]
        assert {r.key for r in reply.records} == {future.key}


def test_a_worker_whose_record_is_gone_is_not_called_silent_before_its_ttl(monkeypatch, caplog):
    """A leaving worker deletes its record before its leave message is handled: that is
    no "sent no heartbeat for over 15 s" (it never was silent); a record that stays away
    for the whole ttl still means the worker is lost."""
    import types

    from rdist.scheduler import server as server_module

    with fake_cluster(n_workers=1) as (c, cluster):
        (address,) = c.scheduler_info()["workers"]
        scheduler = cluster.scheduler
        scheduler.stop()
        cluster._thread.join(timeout=5)  # the loop is ours to drive now
        now = [scheduler._last_seen.get(address, 0.0) + 1.0]
        clock = types.SimpleNamespace(time=lambda: now[0], monotonic=lambda: now[0])
        monkeypatch.setattr(server_module, "time", clock)
        c.store.redis.hdel(c.store.keys.workers, address)
        caplog.set_level(logging.WARNING, "rdist.scheduler")
        scheduler._last_worker_check = 0.0
        scheduler._drop_lost_workers(None)
        assert "sent no heartbeat" not in caplog.text
        assert address in scheduler.state.workers
        now[0] += scheduler.worker_ttl + 1
        scheduler._last_worker_check = 0.0
        scheduler._drop_lost_workers(None)
        assert f"worker {address} sent no heartbeat" in caplog.text


def test_leading_again_after_losing_only_the_lease_keeps_the_epoch(monkeypatch):
    """A scheduler too slow to renew its lease leads again with Redis intact: no new epoch
    (which would have every worker re-announce and every client re-submit its graph, and
    on a loaded machine lose the lease again). Losing Redis while leading does start one."""
    import redis

    url = f"fakeredis://{uuid.uuid4().hex}"
    store = connect(url, "epoch")
    try:
        server = SchedulerServer(connect(url, "epoch"))
        server.prepare()
        first = store.epoch.current()
        assert first

        server.prepare()  # the lease lapsed, then this scheduler took it again
        assert store.epoch.current() == first

        def lose_redis() -> None:
            raise redis.ConnectionError("connection reset")

        monkeypatch.setattr(server, "_restore", lose_redis)
        server._lead()  # stands by after the error
        assert store.epoch.current() == first  # that leadership's prepare() kept it
        server.prepare()
        assert store.epoch.current() not in (None, first)
    finally:
        drop_fake_server(url[len("fakeredis://") :])


def inc_one(x: int) -> int:
    return x + 1


def test_liveness_checks_read_only_the_known_workers_and_clients_records(monkeypatch):
    # found by the full-size fuzz: 25,000 junk fields in ``workers`` made the scheduler
    # decode (and log) every one of them each second, until its lease lapsed
    import threading

    from rdist.store import tables

    with fake_cluster(n_workers=1) as (c, cluster):
        # the scheduler serves (its start-up restore, a bulk read by design, is over)
        assert c.submit(inc_one, 0, pure=False).result(timeout=10) == 1
        junk = {f"junk-{i}": b"\xc1" for i in range(2_000)}
        c.store.redis.hset(c.store.keys.workers, mapping=junk)
        c.store.redis.hset(c.store.keys.clients, mapping=junk)
        bulk_reads: list[str] = []
        for table in (tables.Workers, tables.Clients):
            real = table.all

            def counted(self: Any, real: Any = real) -> Any:
                if threading.current_thread() is cluster._thread:
                    bulk_reads.append(type(self).__name__)
                return real(self)

            monkeypatch.setattr(table, "all", counted)
        scheduler = cluster.scheduler
        # a check stamps its time before it reads: the stamp of a second check (the same
        # thread) says the first one's read is over
        for check in ("_last_worker_check", "_last_client_check"):
            for _ in range(2):
                setattr(scheduler, check, 0.0)
                wait_until(lambda check=check: getattr(scheduler, check) > 0, what=check)

        assert bulk_reads == []
        assert c.submit(inc_one, 1, pure=False).result(timeout=10) == 2
        assert set(c.scheduler_info()["workers"]) == {cluster.workers[0].address}


def test_a_corrupt_record_is_logged_once_however_often_it_is_read(caplog):
    url = f"fakeredis://{uuid.uuid4().hex}"
    store = connect(url, "reported")
    try:
        store.redis.hset(store.keys.workers, mapping={"bad-1": b"\xc1", "bad-2": b"{"})
        store.redis.hset(store.keys.clients, "bad-c", b"\xc1")
        with caplog.at_level(logging.WARNING, logger="rdist.store"):
            for _ in range(5):
                assert store.workers.all() == {}
                assert store.clients.all() == {}
                assert store.clients.get_many(["bad-c", "absent"]) == {}
        skipped = [r.getMessage() for r in caplog.records if "corrupt record" in r.getMessage()]
        assert len(skipped) == 3, skipped
        assert {"'bad-1'", "'bad-2'", "'bad-c'"} == {m.split()[6].rstrip(":") for m in skipped}
    finally:
        store.close()
        drop_fake_server(url[len("fakeredis://") :])


def test_an_entry_whose_batch_outlasted_the_lease_is_handled_again_not_set_aside(monkeypatch):
    """A batch handled while the lease lapsed (a big graph on a starved machine) is not
    written, and its entries come again: those deliveries are no sign of a bad entry, so
    even a third one is handled, never dead-lettered (its client's futures would hang)."""
    url = f"fakeredis://{uuid.uuid4().hex}"
    store = connect(url, "outlasted")
    try:
        server = SchedulerServer(connect(url, "outlasted"))
        server.prepare()
        server._restore()
        store.streams.to_scheduler(wire.Barrier("c1", "b-1"))
        process, seen = server.process, []

        def lease_lapses_while_handling(entries: Any) -> Any:
            seen.append([entry_id for entry_id, _ in entries])
            write = process(entries)
            if len(seen) < 3:
                server.is_leader.clear()  # the renewer found the lease gone meanwhile
            else:
                server.stop_event.set()
            return write

        monkeypatch.setattr(server, "process", lease_lapses_while_handling)
        for _ in range(3):
            server.is_leader.set()
            server._serve()

        assert len(seen) == 3 and seen[0] == seen[1] == seen[2]  # the same entry, again
        assert dead_letters(store) == []
    finally:
        store.close()
        drop_fake_server(url[len("fakeredis://") :])


def test_handled_entries_leave_the_scheduler_stream_once_it_is_quiet():
    """Deletes of handled entries are batched (200, or a second's worth); the last ones of
    a burst go once the stream is quiet, not only when more work arrives (the soak found
    a graph's entries, specs included, left behind)."""
    with fake_cluster(n_workers=1) as (c, _):
        assert c.gather(c.map(inc, range(50))) == list(range(1, 51))
        wait_until(
            lambda: c.store.redis.xlen(c.store.keys.sched) == 0,
            timeout=5,
            what="the handled entries deleted",
        )
