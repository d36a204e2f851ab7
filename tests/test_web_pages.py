"""The dashboard's newer views on fakeredis: history, agreeing totals, the task graph,
clients' graphs, dead letters and their requeue, call stacks on request, and the events
a fail-over, a worker older than the scheduler and a plugin leave."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from rdist import WorkerPlugin
from rdist.protocol import wire
from rdist.scheduler.server import SchedulerServer
from rdist.store import RedisStore, connect
from rdist.store.streams import DEADLETTER_RAW_BYTES
from rdist.web import explore, queries
from rdist.web.history import History
from rdist.worker import heartbeats
from tests.client_helpers import wait_until
from tests.conftest import fake_cluster
from tests.test_web import app_for, fake_store, put_tasks

RELEASE = threading.Event()
STARTED = threading.Event()


def held(x: int) -> int:
    STARTED.set()
    RELEASE.wait(10)
    return x


def worker_row(address: str, **metrics: Any) -> dict[str, Any]:
    return {"address": address, "name": address[-2:], "host": "h", **metrics}


# -- history ---------------------------------------------------------------------------------
def test_history_keeps_the_minutes_before_and_turns_counters_into_rates() -> None:
    history = History(interval=1.0, retention=600)
    for second in range(700):  # more than the retention: the oldest points go
        workers = [
            worker_row("tcp://w:1", memory=100, stored_bytes=40, cpu=50, net_sent=1000 * second),
            worker_row("tcp://w:2", memory=300, stored_bytes=10, cpu=20, net_sent=1000 * second),
        ]
        history.sample(1_000.0 + second, workers, rate=2.0)
    answer = history.to_json()
    cluster = answer["cluster"]
    assert len(cluster["time"]) == history.points == 601
    assert cluster["time"][-1] - cluster["time"][0] == 600
    assert cluster["memory"][-1] == 400 and cluster["managed"][-1] == 50
    assert cluster["rate"][-1] == 2.0 and cluster["cpu"][-1] == 70
    # both workers share a host: its network counter counts once in the cluster's line
    assert cluster["net_sent"][-1] == 1000.0
    worker = answer["workers"]["tcp://w:1"]
    assert worker["net_sent"][-1] == 1000.0 and worker["name"] == ":1"
    # only what came after ``since``: what the live feed sends each tick
    assert history.to_json(since=1_698.5)["cluster"]["time"] == [1_699.0]


def test_a_worker_restarting_its_counters_never_shows_a_negative_rate() -> None:
    history = History(interval=1.0)
    history.sample(1.0, [worker_row("tcp://w:1", disk_write=5_000)], 0)
    history.sample(2.0, [worker_row("tcp://w:1", disk_write=10)], 0)
    assert history.to_json()["workers"]["tcp://w:1"]["disk_write"] == [0.0, 0.0]


def test_a_departed_worker_leaves_the_history_once_its_points_scroll_out() -> None:
    history = History(interval=1.0, retention=10)
    history.sample(0.0, [worker_row("tcp://w:1")], 0)
    for second in range(1, 20):
        history.sample(float(second), [worker_row("tcp://w:2")], 0)
    assert list(history.to_json()["workers"]) == ["tcp://w:2"]


def test_the_dashboard_serves_history_sampled_before_the_page_opened() -> None:
    with fake_store() as store:
        store.workers.put(wire.WorkerRecord("tcp://w:1", "w1", 2, memory=123, last_seen=1.0))
        app = app_for(store)
        feed = app.extensions["rdist"].feed
        for _ in range(3):
            feed._tick()  # what the feed's thread does once per interval, watched or not
        web = app.test_client()
        answer = web.get("/api/history").get_json()
        assert len(answer["cluster"]["time"]) == 3 and answer["cluster"]["memory"] == [123] * 3
        assert answer["workers"]["tcp://w:1"]["memory"] == [123] * 3
        assert "workers" not in web.get("/api/history?workers=0").get_json()
        assert web.get("/api/status").get_json()["point"]["memory"] == 123


def test_a_dashboard_started_late_rebuilds_the_minutes_before_from_the_heartbeats() -> None:
    with fake_store() as store:
        start = int(time.time()) - 120 + 0.25  # beats a quarter past each second
        store.workers.put(wire.WorkerRecord("tcp://w:1", "w1", 2, memory_limit=1000))
        for second in range(6):
            for worker, memory in (("tcp://w:1", 100), ("tcp://w:2", 300)):
                beat = wire.Heartbeat(
                    worker, memory, 10.0, executed=20 * second, last_seen=start + second
                )
                store.streams.heartbeat(beat)
        feed = app_for(store, interval=1).extensions["rdist"].feed
        feed._backfill()
        cluster = feed.history.to_json()["cluster"]
        assert cluster["time"] == [int(start) + s for s in range(6)]  # one point a second
        assert cluster["memory"] == [400] * 6 and cluster["memory_limit"] == [1000] * 6
        assert cluster["rate"] == [0, 40, 40, 40, 40, 40]  # 20 tasks/s on each worker
        assert feed.history.to_json()["workers"]["tcp://w:1"]["name"] == "w1"


def test_the_feed_counts_tasks_per_second_from_the_runs_it_reads() -> None:
    with fake_store() as store:
        feed = app_for(store).extensions["rdist"].feed
        now = time.time()
        runs = [
            wire.TaskRun(f"k-{i}", "tcp://w:1", "", now - 2, now - 1, "memory") for i in range(30)
        ]
        old = [wire.TaskRun("k-old", "tcp://w:1", "", now - 60, now - 59, "memory")]
        feed._counting_since = now - 60  # it has watched longer than the window
        feed._collect(
            store.keys.taskstream,
            "1-0",
            wire.TaskStreamBatch("tcp://w:1", runs + old).encode(),
            shown=False,
        )
        assert feed._rate(now) == 3.0  # 30 runs in the last 10 s; the old one is not counted
        assert feed._runs == []  # no page shows the runs: none made for one


def test_the_feed_makes_the_runs_of_a_page_only_while_one_shows_them() -> None:
    with fake_store() as store:
        feed = app_for(store).extensions["rdist"].feed
        now = time.time()
        batch = wire.TaskStreamBatch(
            "tcp://w:1", [wire.TaskRun("k", "tcp://w:1", "", now - 1, now, "memory")]
        ).encode()
        store.streams.task_runs(batch)
        last = {store.keys.taskstream: "0-0", store.keys.events: "0-0"}

        feed._read(store, dict(last), 0.01)
        assert feed._runs == []
        feed._subscriptions["page"] = {"runs"}
        feed._read(store, dict(last), 0.01)
        assert [run["key"] for run in feed._runs] == ["k"]


def test_heartbeat_io_counters_read_the_proc_files_once_opened() -> None:
    sent, recv, read, written = heartbeats.PROCESS.io_counters()
    assert min(sent, recv, read, written) >= 0
    beat = heartbeats.Heartbeat("tcp://w:1", net_sent=sent, disk_write=written)
    assert wire.Heartbeat.decode(beat.encode()) == beat


def test_task_summaries_agree_with_the_full_decode_and_refuse_bad_fields() -> None:
    record = wire.TaskRecord("processing", (0, 1), nbytes=5, who_wants=["c"], processing_on="w")
    summary = wire.summarize_task(record.encode())
    assert summary == ("processing", "w", 5, ["c"])
    for bad in ({"s": "sleeping"}, {"s": "memory", "nb": -1}, {"s": "memory", "ww": [1]}, []):
        assert wire.summarize_task(wire.pack(bad)) is None
    assert wire.summarize_task(b"\xc1") is None


# -- totals ----------------------------------------------------------------------------------
def test_status_and_tasks_agree_on_the_total_once_a_clients_tasks_are_forgotten() -> None:
    with fake_store() as store:
        put_tasks(store, {f"inc-{i:08x}": {"s": "queued", "ww": ["gone"]} for i in range(5000)})
        web = app_for(store, interval=60).test_client()  # no sweep would be due for a minute
        before = web.get("/api/status").get_json()
        assert before["tasks"]["total"] == before["task_count"] == 5000
        assert before["tasks"]["by_state"]["queued"] == 5000
        store.redis.delete(store.keys.tasks)  # the scheduler forgot the killed client's tasks
        status = web.get("/api/status").get_json()
        tasks = web.get("/api/tasks").get_json()
        assert status["tasks"]["total"] == status["task_count"] == tasks["total"] == 0
        assert sum(status["tasks"]["by_state"].values()) == 0  # no stale 5000 left behind
        assert status["tasks"]["stale"] is False


def test_a_big_hash_reports_its_exact_total_and_marks_the_counts_stale() -> None:
    with fake_store() as store:
        census = app_for(store).extensions["rdist"].census
        put_tasks(store, {f"x-{i:08x}": {"s": "memory"} for i in range(3000)})
        first = census.snapshot(store, max_age=0, budget=1000)
        assert first["total"] == 3000 and first["stale"] is True  # counting under way
        for _ in range(5):
            census.advance(store, budget=1000)
        done = census.snapshot(store, max_age=60, budget=1000)
        assert done["total"] == done["counted"] == 3000 and done["stale"] is False


# -- graph -----------------------------------------------------------------------------------
def test_graph_gives_nodes_and_edges_and_refuses_big_graphs() -> None:
    with fake_store() as store:
        put_tasks(
            store,
            {
                "a-1": {"s": "memory"},
                "b-1": {"s": "processing", "d": ["a-1"]},
                "c-1": {"s": "waiting", "d": ["a-1", "b-1"]},
            },
        )
        graph = app_for(store).test_client().get("/api/graph").get_json()
        assert graph["too_many"] is False and graph["total"] == 3
        keys = [n[0] for n in graph["nodes"]]
        edges = {(keys[a], keys[b]) for a, b in graph["edges"]}
        assert edges == {("a-1", "b-1"), ("a-1", "c-1"), ("b-1", "c-1")}
        assert {n[0]: n[2] for n in graph["nodes"]}["b-1"] == "processing"
        refused = explore.graph(store, limit=2)
        assert refused["too_many"] and refused["total"] == 3 and refused["nodes"] == []


# -- clients ---------------------------------------------------------------------------------
def test_clients_page_walks_each_clients_graph_from_the_keys_it_wants() -> None:
    with fake_store() as store:
        store.clients.beat("c1", wire.ClientRecord("notebook", time.time()))
        put_tasks(
            store,
            {
                "load-1": {"s": "memory"},
                "load-2": {"s": "memory"},
                "mean-1": {"s": "processing", "d": ["load-1", "load-2"], "ww": ["c1"]},
                "other-1": {"s": "waiting", "ww": ["c2"]},
            },
        )
        answer = app_for(store).test_client().get("/api/clients").get_json()
        by_id = {c["id"]: c for c in answer["clients"]}
        mine = by_id["c1"]
        assert mine["name"] == "notebook" and mine["connected"] and mine["wanted"] == 1
        groups = {g["name"]: g for g in mine["groups"]}
        assert groups["load"]["memory"] == 2 and groups["mean"]["processing"] == 1
        assert mine["tasks"] == 3 and mine["whole"]
        assert by_id["c2"]["connected"] is False and by_id["c2"]["tasks"] == 1


def test_a_client_graph_walk_stops_at_its_limit() -> None:
    with fake_store() as store:
        chain = {f"step-{i}": {"s": "memory", "d": [f"step-{i + 1}"]} for i in range(50)}
        put_tasks(store, chain)
        groups, whole = explore.client_graph(store, ["step-0"], limit=10)
        assert groups[0]["total"] == 10 and whole is False


# -- dead letters ----------------------------------------------------------------------------
def letter(store: RedisStore, payload: bytes, stream: str | None = None) -> str:
    store.streams.dead_letter(stream or store.keys.sched, b"1-1", payload, "does not decode")
    return queries.as_text(store.streams.newest(store.keys.deadletter, 1)[0][0])


def test_dead_letters_are_listed_and_one_goes_back_on_its_stream() -> None:
    with fake_store() as store:
        letter_id = letter(store, b"\x81\xa2op\xa5bogus")
        web = app_for(store).test_client()
        page = web.get("/api/deadletters").get_json()
        assert page["total"] == 1 and page["letters"][0]["reason"] == "does not decode"
        assert page["letters"][0]["stream"] == store.keys.sched
        answer = web.post("/api/deadletters/requeue", json={"id": letter_id})
        assert answer.status_code == 200, answer.get_json()
        entries = store.redis.xrange(store.keys.sched)
        assert [f[b"m"] for _, f in entries] == [b"\x81\xa2op\xa5bogus"]
        assert web.get("/api/deadletters").get_json()["total"] == 0
        again = web.post("/api/deadletters/requeue", json={"id": letter_id})
        assert again.status_code == 409  # it is gone: nothing is sent twice


def test_a_requeue_is_refused_for_cut_entries_and_foreign_streams() -> None:
    with fake_store() as store:
        web = app_for(store).test_client()
        cut = letter(store, b"x" * (DEADLETTER_RAW_BYTES + 10))
        refused = web.post("/api/deadletters/requeue", json={"id": cut})
        assert refused.status_code == 409 and "cut" in refused.get_json()["error"]
        foreign = letter(store, b"\x80", stream="somebody-elses-stream")
        assert web.post("/api/deadletters/requeue", json={"id": foreign}).status_code == 409
        gone = letter(store, b"\x80", stream=store.keys.worker_stream("tcp://gone:1"))
        assert web.post("/api/deadletters/requeue", json={"id": gone}).status_code == 409
        assert store.streams.length(store.keys.sched) == 0


def test_a_requeue_needs_json_from_this_site_and_the_token() -> None:
    with fake_store() as store:
        letter_id = letter(store, b"\x80")
        web = app_for(store).test_client()
        form = web.post("/api/deadletters/requeue", data={"id": letter_id})
        assert form.status_code == 415  # a cross-site form can send this; JSON it cannot
        cross = web.post(
            "/api/deadletters/requeue",
            json={"id": letter_id},
            headers={"Origin": "http://evil.example"},
        )
        assert cross.status_code == 403
        guarded = app_for(store, token="s3cret").test_client()
        assert guarded.post("/api/deadletters/requeue", json={"id": letter_id}).status_code == 401
        ok = guarded.post(
            "/api/deadletters/requeue",
            json={"id": letter_id},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert ok.status_code == 200


# -- worker page and call stacks -------------------------------------------------------------
def test_worker_page_shows_its_tasks_and_the_stacks_of_running_ones() -> None:
    RELEASE.clear()
    STARTED.clear()
    with fake_cluster(n_workers=1, nthreads=2) as (client, cluster):
        address = next(iter(client.scheduler_info()["workers"]))
        future = client.submit(held, 7)
        web = app_for(connect(cluster.url, cluster.cluster_name)).test_client()
        wait_until(
            lambda: any(
                t["key"] == future.key
                for t in web.get(f"/api/worker?address={address}").get_json()["processing"]
            )
        )
        # "processing" is the scheduler's word: the worker may not have started the task yet,
        # and a task not yet started has no call stack to show
        assert STARTED.wait(10)
        asked = web.post("/api/worker/stacks", json={"address": address})
        assert asked.status_code == 202
        request_id = asked.get_json()["id"]

        answers: list[Any] = []

        def answered() -> bool:
            got = web.get(f"/api/worker/stacks?id={request_id}")
            if got.status_code == 200:
                answers.append(got.get_json())
            return bool(answers)

        wait_until(answered, what="the worker's call stacks")
        stacks = answers[0]["stacks"]
        assert [s["key"] for s in stacks] == [future.key]
        assert any("in held" in line for line in stacks[0]["frames"])
        RELEASE.set()
        assert future.result(timeout=10) == 7
        wait_until(  # the scheduler records the holder a moment after the client hears
            lambda: (
                future.key
                in [d["key"] for d in web.get(f"/api/worker?address={address}").get_json()["data"]]
            )
        )
        assert web.get("/api/worker?address=tcp://nobody:1").status_code == 404
        assert web.post("/api/worker/stacks", json={"address": "tcp://nobody:1"}).status_code == 404


# -- events ----------------------------------------------------------------------------------
def test_a_take_over_and_workers_older_than_the_scheduler_are_events() -> None:
    name = uuid.uuid4().hex
    url = f"fakeredis://{name}"
    store = connect(url, "events")
    store.workers.put(wire.WorkerRecord("tcp://w:1", "early", 1, last_seen=time.time()))
    server = SchedulerServer(connect(url, "events"))
    server._predecessor = "host:1:old"  # it stood by while another led
    server.prepare()
    server._restore()
    events = queries.events_page(store)["events"]
    started = next(e for e in events if e["op"] == "scheduler-started")
    assert started["info"]["takeover"] is True and started["info"]["previous"] == "host:1:old"
    joined = next(e for e in events if e["op"] == "worker-joined")
    assert joined["info"] == {"worker": "tcp://w:1", "name": "early", "restored": True}
    # a scheduler started after that one died (no standby): it names whom it follows
    after = SchedulerServer(connect(url, "events"))
    after.prepare()
    latest = queries.events_page(store)["events"][0]
    assert latest["op"] == "scheduler-started" and "takeover" not in latest["info"]
    assert latest["info"]["previous"] == server.lease.token


class Noop(WorkerPlugin):
    name = "noop-for-events"


def test_registering_a_plugin_is_an_event() -> None:
    with fake_cluster(n_workers=1) as (client, cluster):
        client.register_plugin(Noop())
        store = connect(cluster.url, cluster.cluster_name)
        events = queries.events_page(store)["events"]
        added = next(e for e in events if e["op"] == "plugin-added")
        assert added["info"]["plugin"] == "noop-for-events" and added["info"]["targets"] == 1


@pytest.mark.parametrize(
    "path", ["/system", "/graph", "/clients", "/deadletters", "/worker", "/profile"]
)
def test_new_pages_render_with_navigation(path: str) -> None:
    with fake_store() as store:
        html = app_for(store).test_client().get(path).get_data(as_text=True)
        assert 'href="/deadletters"' in html and 'href="/system"' in html
        assert "<script>" not in html  # scripts are files: the CSP forbids inline ones


# -- what other parts of rdist record: logs, transfers, profiles ------------------------------
def test_worker_logs_come_from_the_log_buffers() -> None:
    with fake_store() as store:
        line = wire.LogLine(time.time(), "WARNING", "rdist.worker", "memory is getting full")
        store.logs.append("worker", "tcp://w:1", [line.encode()], 100)
        answer = app_for(store).test_client().get("/api/worker/logs?address=tcp://w:1").get_json()
        assert answer["available"] is True
        assert [(x["level"], x["message"]) for x in answer["lines"]] == [
            ("WARNING", "memory is getting full")
        ]


def test_transfers_of_the_task_stream_reach_the_runs_answer() -> None:
    with fake_store() as store:
        now = time.time()
        run = wire.TaskRun("b-1", "tcp://w:2", "rdist-exec-0", now - 1, now, "memory")
        fetch = wire.TransferRun("a-1", "tcp://w:2", "tcp://w:1", now - 1.5, now - 1, 1000)
        batch = wire.TaskStreamBatch("tcp://w:2", [run], [fetch])
        store.redis.xadd(store.keys.taskstream, {b"m": batch.encode()})
        answer = app_for(store).test_client().get("/api/runs").get_json()
        assert [r["key"] for r in answer["runs"]] == ["b-1"]
        assert [(t["key"], t["source"], t["nbytes"]) for t in answer["transfers"]] == [
            ("a-1", "tcp://w:1", 1000)
        ]


def test_the_profile_page_merges_the_profilers_batches() -> None:
    with fake_store() as store:
        now = time.time()
        leaf = ["sleep", "time.py", 1, 3, []]
        tree = ["", "", 0, 4, [["work", "/app/tasks.py", 10, 4, [leaf]]]]
        for worker in ("tcp://w:1", "tcp://w:2"):
            batch = wire.ProfileBatch(worker, now - 2, now - 1, 4, {"work": tree})
            store.profiles.add(batch)
        web = app_for(store).test_client()
        answer = web.get("/api/profile").get_json()
        assert answer["available"] and answer["samples"] == 8 and answer["groups"] == ["work"]
        assert answer["tree"][4][0][0] == "work" and answer["tree"][4][0][3] == 8
        one = web.get("/api/profile?worker=tcp://w:1").get_json()
        assert one["samples"] == 4 and one["workers"] == ["tcp://w:1", "tcp://w:2"]


def test_a_profile_tree_is_pruned_to_its_widest_branches() -> None:
    leaves = [[f"f{i}", "m.py", i, i + 1, []] for i in range(100)]
    tree = ["", "", 0, sum(n[3] for n in leaves), leaves]
    pruned = explore._pruned(tree, 10)
    # ten nodes in all, the root one of them: the nine widest leaves stay
    assert [n[0] for n in pruned[4]] == [f"f{i}" for i in range(91, 100)]
